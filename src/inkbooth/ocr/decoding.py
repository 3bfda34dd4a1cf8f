"""The ONNX Runtime decoding engine: TrOCR beam search over two small graphs, with IO binding.

optimum's decoders under ``transformers.generate`` do the work of a TrOCR line several times over:
``generate`` expands the encoder output to every beam, so the cross-attention keys and values are
projected once per beam; an INT8 export (dynamic quantisation) re-quantises those cached keys and
values at every step, because the attention products are quantised too; and the confidences and
token boxes need one more teacher-forced decoder pass, which projects them again. This engine:

* ``decoder_init_model.onnx`` projects the cross-attention keys and values once per line (not per
  beam), straight from the encoder states;
* ``decoder_step_model.onnx`` decodes one token for every beam: it gathers its own self-attention
  cache by the beam indices it is given (the reorder happens inside the graph, so the cache stays
  in ONNX Runtime memory between steps, bound with IO binding), and the beams of one line attend
  the line's single copy of the cross-attention keys and values ("batched beams"). It returns the
  log-probabilities of the next token and the cross-attention averaged over layers and heads;
* the beam search (``beam_search``) follows transformers' own (4.57, ``_beam_search``: top 2K
  candidates, length penalty, early stopping) step for step, and carries each hypothesis's token
  log-probabilities and attention, so no extra pass is needed for confidences and boxes.

The graphs are exported from the PyTorch model's own modules (``DecoderInit``, ``DecoderStep``),
and ``inkbooth.ocr.export`` checks their tokens against PyTorch's ``generate``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

DECODER_INIT, DECODER_STEP = "decoder_init_model.onnx", "decoder_step_model.onnx"
ENGINE_FILES = (DECODER_INIT, DECODER_STEP)

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


# ---------------------------------------------------------------------------------------------
# The two graphs, as torch modules over the model's own layers (exported by inkbooth.ocr.export)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Search (numpy): transformers' greedy and beam search, carrying log-probabilities and attention
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Decoded:
    """Per line: the sequence (start token first), and per generated token its log-probability and attention."""

    sequences: np.ndarray  # [B, T] int64, padded with the fill token
    token_logprobs: np.ndarray  # [B, T - 1]
    attention: np.ndarray  # [B, T - 1, S]


# step(tokens [N], beam_idx [N]) -> (logprobs [N, V], attention [N, S]); N = B at the first call, then B x beams.
StepFn = Callable[[Any, Any], tuple[Any, Any]]


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values along the last axis, largest first (ties: lower index first)."""
    import numpy as np

    part = np.argpartition(-x, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(x, part, axis=-1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[b, idx[b, j], ...] for a [B, W, ...] and idx [B, J]."""
    import numpy as np

    return a[np.arange(a.shape[0])[:, None], idx]


def greedy_search(step: StepFn, batch: int, *, start_id: int, eos_id: int, pad_id: int, max_new_tokens: int,
                  min_new_tokens: int = 0) -> Decoded:
    """transformers' greedy decoding: argmax, finished rows padded, stop when all are done."""
    import numpy as np

    tokens = np.full(batch, start_id, dtype=np.int64)
    rows = np.arange(batch, dtype=np.int64)
    seqs, lps, atts = [tokens], [], []
    unfinished = np.ones(batch, dtype=bool)
    for new in range(max_new_tokens):
        logprobs, attention = step(tokens, rows)
        if new < min_new_tokens:
            logprobs = logprobs.copy()
            logprobs[:, eos_id] = -np.inf
        nxt = logprobs.argmax(-1)
        lps.append(logprobs[rows, nxt])
        atts.append(attention)
        nxt = np.where(unfinished, nxt, pad_id)
        seqs.append(nxt)
        unfinished &= nxt != eos_id
        tokens = nxt
        if not unfinished.any():
            break
    return Decoded(np.stack(seqs, 1), np.stack(lps, 1), np.stack(atts, 1))


def beam_search(step: StepFn, batch: int, num_beams: int, *, start_id: int, eos_id: int, pad_id: int,
                max_new_tokens: int, min_new_tokens: int = 0, length_penalty: float = 1.0,
                early_stopping: bool | str = True) -> Decoded:
    """transformers' beam search (``GenerationMixin._beam_search``, 4.57) for one EOS token, no sampling.

    The first step decodes one row per line (all beams start alike; transformers runs them all and
    masks the copies); later steps ``num_beams`` rows per line.
    """
    import numpy as np

    B, K = batch, num_beams
    max_length = 1 + max_new_tokens
    keep = 2 * K  # max(2, 1 + number of EOS tokens) * beams
    fill = pad_id if pad_id else eos_id  # transformers: `pad_token_id or eos_token_id[0]`
    top_mask = np.arange(keep) < K
    neg = np.float32(-1.0e9)
    running_seq = np.full((B, K, max_length), fill, dtype=np.int64)
    running_seq[:, :, 0] = start_id
    seqs = running_seq.copy()
    running_scores = np.zeros((B, K), dtype=np.float32)
    beam_scores = np.full((B, K), neg, dtype=np.float32)
    is_fin = np.zeros((B, K), dtype=bool)
    early_unsat = np.ones((B, 1), dtype=bool)
    running_bi = np.full((B, K, max_length - 1), -1, dtype=np.int64)
    bi = running_bi.copy()
    running_lp = np.zeros((B, K, max_length - 1), dtype=np.float32)
    seqs_lp = running_lp.copy()
    att_steps: list[np.ndarray] = []
    tokens = np.full(B, start_id, dtype=np.int64)
    rows = np.arange(B, dtype=np.int64)
    width, cur = 1, 1
    b_idx = np.arange(B)[:, None]
    while True:
        logprobs, attention = step(tokens, rows)
        att_steps.append(attention)
        vocab = logprobs.shape[-1]
        if cur - 1 < min_new_tokens:
            logprobs = logprobs.copy()
            logprobs[:, eos_id] = -np.inf
        lp3 = logprobs.reshape(B, width, vocab)
        scores = (lp3 + running_scores[:, :width, None]).reshape(B, width * vocab)
        idx = _topk(scores, keep)
        topk_scores = np.take_along_axis(scores, idx, axis=-1)
        cand_beam, cand_tok = idx // vocab, idx % vocab
        cand_lp = lp3[b_idx, cand_beam, cand_tok]
        topk_seq = _gather(running_seq[:, :width], cand_beam)
        topk_seq[:, :, cur] = cand_tok
        topk_bi = _gather(running_bi[:, :width], cand_beam)
        topk_bi[:, :, cur - 1] = cand_beam + b_idx * width
        topk_lp = _gather(running_lp[:, :width], cand_beam)
        topk_lp[:, :, cur - 1] = cand_lp
        hits = (cand_tok == eos_id) | (cur + 1 >= max_length)

        # e. the best unfinished candidates continue
        trl = (topk_scores + hits.astype(np.float32) * neg).astype(np.float32)
        nxt = _topk(trl, K)
        running_seq, running_scores = _gather(topk_seq, nxt), np.take_along_axis(trl, nxt, -1)
        running_bi, running_lp = _gather(topk_bi, nxt), _gather(topk_lp, nxt)

        # f. finished candidates among the top K join the finished hypotheses if good enough
        just = hits & top_mask[None, :]
        tl = (topk_scores / np.float32((cur + 1 - 1) ** length_penalty)).astype(np.float32)
        full = is_fin.all(-1, keepdims=True) & (early_stopping is True)
        tl = tl + full.astype(np.float32) * neg
        tl = tl + (~early_unsat).astype(np.float32) * neg
        tl = tl + (~just).astype(np.float32) * neg
        m_scores = np.concatenate([beam_scores, tl], 1)
        sel = _topk(m_scores, K)
        seqs = _gather(np.concatenate([seqs, topk_seq], 1), sel)
        beam_scores = np.take_along_axis(m_scores, sel, -1)
        bi = _gather(np.concatenate([bi, topk_bi], 1), sel)
        seqs_lp = _gather(np.concatenate([seqs_lp, topk_lp], 1), sel)
        is_fin = _gather(np.concatenate([is_fin, just], 1), sel)

        rows = running_bi[:, :, cur - 1].reshape(-1)
        tokens = running_seq[:, :, cur].reshape(-1)
        cur += 1
        width = K
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - 1
        else:
            best_len = cur - 1
        best_possible = running_scores[:, :1] / np.float32(best_len ** length_penalty)
        worst_fin = np.where(is_fin, beam_scores.min(1, keepdims=True), neg)
        early_unsat = early_unsat & (best_possible > worst_fin).any(-1, keepdims=True)
        unfinished = early_unsat.any() and not (is_fin.all() and early_stopping is True) and not hits.all()
        if not unfinished:
            break

    best_seq, best_bi, best_lp = seqs[:, 0], bi[:, 0], seqs_lp[:, 0]
    generated = int((best_bi >= 0).sum(1).max())
    sequences = best_seq[:, :1 + generated]
    attention = np.zeros((B, generated, att_steps[0].shape[-1]), dtype=np.float32)
    for j in range(generated):
        valid = best_bi[:, j] >= 0
        attention[valid, j] = att_steps[j][best_bi[valid, j]]
    return Decoded(sequences, best_lp[:, :generated], attention)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime sessions
# ---------------------------------------------------------------------------------------------


def has_engine(folder: Path) -> bool:
    """Whether an export variant folder carries this engine's graphs."""
    return all((Path(folder) / name).is_file() for name in ENGINE_FILES)


class OrtEngine:
    """Encoder, cross-attention projection and step sessions of one variant folder."""

    def __init__(self, folder: Path, providers: list[str], session_options: Any) -> None:
        import onnxruntime as ort
        from transformers import AutoConfig, GenerationConfig

        from inkbooth.ocr.export import ENCODER

        folder = Path(folder)
        gen = GenerationConfig.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        self.start_id = gen.decoder_start_token_id if gen.decoder_start_token_id is not None \
            else config.decoder_start_token_id
        self.eos_id, self.pad_id = gen.eos_token_id, gen.pad_token_id if gen.pad_token_id is not None else gen.eos_token_id
        self.length_penalty = gen.length_penalty
        self.encoder = ort.InferenceSession(str(folder / ENCODER), session_options, providers=providers)
        self.init = ort.InferenceSession(str(folder / DECODER_INIT), session_options, providers=providers)
        self.step = ort.InferenceSession(str(folder / DECODER_STEP), session_options, providers=providers)
        self.cross_names = [o.name for o in self.init.get_outputs()]
        self.past_names = [i.name for i in self.step.get_inputs() if i.name.startswith("past.")]
        self.present_names = [o.name for o in self.step.get_outputs() if o.name.startswith("present.")]
        past = self.step.get_inputs()[2]
        self.heads, self.head_dim = past.shape[1], past.shape[3]

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        import numpy as np

        return self.encoder.run(None, {"pixel_values": pixel_values.astype(np.float32, copy=False)})[0]

    def stepper(self, states: np.ndarray) -> StepFn:
        """A step function over ``states`` (one line per row) for the searches above."""
        import numpy as np
        import onnxruntime as ort

        cross = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.init.run(None, {"encoder_hidden_states": states})]
        empty = np.zeros((states.shape[0], self.heads, 0, self.head_dim), dtype=np.float32)
        past = [ort.OrtValue.ortvalue_from_numpy(empty)] * len(self.past_names)
        binding = self.step.io_binding()
        for name, value in zip(self.cross_names, cross):
            binding.bind_ortvalue_input(name, value)

        def step(tokens: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            nonlocal past
            # Bound arrays must outlive the run: held in locals until it returns.
            ids = np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1, 1)
            idx = np.ascontiguousarray(rows, dtype=np.int64)
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_cpu_input("beam_idx", idx)
            for name, value in zip(self.past_names, past):
                binding.bind_ortvalue_input(name, value)
            for name in ("logprobs", "cross_attention", *self.present_names):
                binding.bind_output(name, "cpu")
            self.step.run_with_iobinding(binding)
            outputs = binding.get_outputs()
            past = outputs[2:]  # stays in ONNX Runtime memory; the next step gathers it by beam
            binding.clear_binding_outputs()
            return outputs[0].numpy(), outputs[1].numpy()

        return step

    def decode(self, pixel_values: np.ndarray, *, num_beams: int, max_new_tokens: int,
               min_new_tokens: int = 0) -> Decoded:
        """Encode a batch of line images and decode them (greedy for one beam), as ``generate`` would."""
        step = self.stepper(self.encode(pixel_values))
        kw = {"start_id": self.start_id, "eos_id": self.eos_id, "pad_id": self.pad_id,
              "max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens}
        if num_beams > 1:
            return beam_search(step, len(pixel_values), num_beams, length_penalty=self.length_penalty,
                               early_stopping=True, **kw)
        return greedy_search(step, len(pixel_values), **kw)

    def generate(self, pixel_values: Any, num_beams: int = 1, max_new_tokens: int = 20, **_: Any) -> Any:
        """``generate``-shaped: token ids as a torch tensor (export's parity check calls it like a model)."""
        import numpy as np
        import torch

        pv = pixel_values.numpy() if hasattr(pixel_values, "numpy") else np.asarray(pixel_values)
        return torch.from_numpy(self.decode(pv, num_beams=num_beams, max_new_tokens=max_new_tokens).sequences)
