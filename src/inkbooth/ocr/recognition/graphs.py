"""The decoder graphs, as torch modules over a VisionEncoderDecoder model's own layers.

``make_decoder_init`` and ``make_decoder_step`` are the two graphs of the decoding engine
(``decoding``), exported by ``export_engine``; ``make_attention_decoder`` is the teacher-forced pass
that gives an earlier export's (and the PyTorch backend's) cross-attention. ``engine_supports`` and
``unsupported_generation`` say whether a model can be decoded by the engine at all.

Imports nothing of ``inkbooth.ocr`` but ``recognition.exported``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inkbooth.ocr.recognition.exported import DECODER_INIT, DECODER_STEP

# Generation settings this engine reproduces; a model whose generation config asks for anything
# else (repetition penalties, n-gram blocking, forced tokens, ...) is decoded by transformers instead.
_PLAIN_GENERATION = {
    "repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "diversity_penalty": (None, 0.0),
    "num_beam_groups": (None, 1), "temperature": (None, 1.0), "do_sample": (None, False),
    "renormalize_logits": (None, False), "exponential_decay_length_penalty": (None,), "sequence_bias": (None,),
}


def unsupported_generation(gen: Any) -> list[str]:
    """Settings of a GenerationConfig that this engine does not reproduce (empty: it can decode)."""
    return [k for k, ok in _PLAIN_GENERATION.items() if getattr(gen, k, None) not in ok]


def encoder_projection(model: Any) -> Any:
    """The layer a VisionEncoderDecoderModel projects encoder states with before its decoder (None:
    the hidden sizes match, or the decoder's cross-attention takes the encoder's size itself)."""
    needs = (model.encoder.config.hidden_size != model.decoder.config.hidden_size
             and model.decoder.config.cross_attention_hidden_size is None)
    return model.enc_to_dec_proj if needs else None


def _decoder_parts(model: Any) -> tuple[Any, Any, Any]:
    """(TrOCR decoder, output projection, encoder-to-decoder projection or None) of a VisionEncoderDecoderModel."""
    return model.decoder.model.decoder, model.decoder.output_projection, encoder_projection(model)


def engine_supports(model: Any) -> str | None:
    """Why this engine cannot decode ``model`` (None: it can)."""
    cfg = model.decoder.config
    if getattr(cfg, "model_type", "") != "trocr":
        return f"decoder type {getattr(cfg, 'model_type', '?')!r} (the engine is written for TrOCR's decoder)"
    if not cfg.use_learned_position_embeddings:
        return "sinusoidal position embeddings"
    return None


def make_decoder_init(model: Any) -> Any:
    """A module: encoder states [B, S, E] -> cross-attention keys and values, [B, H, S, D] per layer (k0, v0, k1, ...)."""
    import torch

    decoder, _, proj = _decoder_parts(model)

    class DecoderInit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers, self.proj = decoder.layers, proj

        def forward(self, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
            states = self.proj(encoder_hidden_states) if self.proj is not None else encoder_hidden_states
            out = []
            for layer in self.layers:
                att = layer.encoder_attn
                for lin in (att.k_proj, att.v_proj):
                    out.append(lin(states).view(states.shape[0], -1, att.num_heads, att.head_dim).transpose(1, 2))
            return tuple(out)

    return DecoderInit().eval()


def make_decoder_step(model: Any) -> Any:
    """A module: one decoding step for every beam (see the module docstring).

    Inputs: ``input_ids`` [N, 1] (the last token of each row), ``beam_idx`` [N] (which row of the
    previous step each row continues), the previous step's self-attention keys and values [N', H, t, D]
    per layer, then the cross-attention keys and values [B, H, S, D] per layer (B lines, N = B x beams).
    Outputs: log-probabilities [N, V], cross-attention [N, S] (mean over layers and heads), then
    the self-attention keys and values [N, H, t + 1, D] per layer.
    """
    import torch

    decoder, output_projection, _ = _decoder_parts(model)
    n_layers = len(decoder.layers)

    class DecoderStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder, self.output_projection = decoder, output_projection

        def forward(self, input_ids: torch.Tensor, beam_idx: torch.Tensor, *kv: torch.Tensor):
            d = self.decoder
            self_kv, cross_kv = kv[:2 * n_layers], kv[2 * n_layers:]
            past_len = self_kv[0].shape[2]
            positions = torch.zeros_like(input_ids) + past_len
            h = d.embed_tokens(input_ids) + torch.nn.functional.embedding(
                positions + d.embed_positions.offset, d.embed_positions.weight)
            if d.layernorm_embedding is not None:
                h = d.layernorm_embedding(h)
            presents, attention = [], None
            for i, layer in enumerate(d.layers):
                sa = layer.self_attn
                q = (sa.q_proj(h) * sa.scaling).view(-1, 1, sa.num_heads, sa.head_dim).transpose(1, 2)
                k = sa.k_proj(h).view(-1, 1, sa.num_heads, sa.head_dim).transpose(1, 2)
                v = sa.v_proj(h).view(-1, 1, sa.num_heads, sa.head_dim).transpose(1, 2)
                k = torch.cat([self_kv[2 * i].index_select(0, beam_idx), k], dim=2)
                v = torch.cat([self_kv[2 * i + 1].index_select(0, beam_idx), v], dim=2)
                presents += [k, v]
                w = torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-1)
                out = torch.matmul(w, v).transpose(1, 2).reshape(h.shape)
                h = layer.self_attn_layer_norm(h + sa.out_proj(out))

                ca = layer.encoder_attn
                ck, cv = cross_kv[2 * i], cross_kv[2 * i + 1]
                # The beams of one line share its keys and values: queries grouped per line.
                q = (ca.q_proj(h) * ca.scaling).view(ck.shape[0], -1, ca.num_heads, ca.head_dim).transpose(1, 2)
                w = torch.softmax(torch.matmul(q, ck.transpose(-1, -2)), dim=-1)  # [B, H, beams, S]
                mean = w.mean(dim=1)
                attention = mean if attention is None else attention + mean
                out = torch.matmul(w, cv).transpose(1, 2).reshape(h.shape)
                h = layer.encoder_attn_layer_norm(h + ca.out_proj(out))

                h = layer.final_layer_norm(h + layer.fc2(layer.activation_fn(layer.fc1(h))))
            logprobs = torch.log_softmax(self.output_projection(h)[:, 0].float(), dim=-1)
            attention = (attention / n_layers).reshape(logprobs.shape[0], -1)
            return (logprobs, attention, *presents)

    return DecoderStep().eval()


def export_engine(model: Any, out: Path, opset: int) -> None:
    """Write decoder_init_model.onnx and decoder_step_model.onnx for ``model`` into ``out``."""
    import torch

    reason = engine_supports(model)
    if reason:
        raise ValueError(f"the ONNX decoding engine cannot export this model: {reason}")
    decoder, _, _ = _decoder_parts(model)
    n_layers = len(decoder.layers)
    enc_dim = model.encoder.config.hidden_size
    init, step = make_decoder_init(model), make_decoder_step(model)
    states = torch.randn(2, 7, enc_dim)
    with torch.no_grad():
        cross = init(states)
        kv_names = [f"cross.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]
        torch.onnx.export(init, (states,), str(out / DECODER_INIT), dynamo=False, opset_version=opset,
                          input_names=["encoder_hidden_states"], output_names=kv_names,
                          dynamic_axes={"encoder_hidden_states": {0: "batch", 1: "source"},
                                        **{n: {0: "batch", 2: "source"} for n in kv_names}})
        beams = 2
        sa = decoder.layers[0].self_attn
        past = [torch.randn(2 * beams, sa.num_heads, 3, sa.head_dim) for _ in range(2 * n_layers)]
        ids = torch.tensor([[5], [6], [7], [8]], dtype=torch.long)
        beam_idx = torch.tensor([1, 0, 3, 2], dtype=torch.long)
        past_names = [f"past.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]
        present_names = [f"present.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]
        torch.onnx.export(
            step, (ids, beam_idx, *past, *cross), str(out / DECODER_STEP), dynamo=False, opset_version=opset,
            input_names=["input_ids", "beam_idx", *past_names, *kv_names],
            output_names=["logprobs", "cross_attention", *present_names],
            dynamic_axes={"input_ids": {0: "rows"}, "beam_idx": {0: "rows"},
                          **{n: {0: "previous_rows", 2: "past"} for n in past_names},
                          **{n: {0: "batch", 2: "source"} for n in kv_names},
                          "logprobs": {0: "rows"}, "cross_attention": {0: "rows", 1: "source"},
                          **{n: {0: "rows", 2: "past_plus_one"} for n in present_names}},
        )


def activation_matmuls(onnx_file: Path) -> list[str]:
    """MatMul nodes whose two inputs are both computed (attention products), not weights.

    Dynamic INT8 quantisation of these re-quantises activations (here: the cached keys and values
    of every beam) at every call and costs accuracy; only weight products gain from INT8.
    """
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def make_attention_decoder(model: Any) -> Any:
    """A module: (decoder input ids, encoder states) -> (logits, cross-attention mean over layers, heads)."""
    import torch

    class DecoderWithCrossAttention(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.decoder = m.decoder
            # VisionEncoderDecoderModel projects encoder states when the hidden sizes differ.
            self.proj = encoder_projection(m)

        def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor):
            if self.proj is not None:
                encoder_hidden_states = self.proj(encoder_hidden_states)
            out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                               output_attentions=True, use_cache=False, return_dict=True)
            cross = torch.stack(out.cross_attentions, dim=1)  # batch, layer, head, target, source
            return out.logits, cross.mean(dim=(1, 2))

    return DecoderWithCrossAttention(model).eval()
