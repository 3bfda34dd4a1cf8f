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

The graphs are exported from the PyTorch model's own modules (``graphs``), and ``export`` checks
their tokens against PyTorch's ``generate``. ``load_ort_decoder`` opens whatever an export variant
holds: this engine, or optimum's model for exports made before it.

Imports nothing of ``inkbooth.ocr`` but ``recognition.exported``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inkbooth.ocr.recognition.exported import (
    DECODER_INIT,
    DECODER_STEP,
    ENCODER,
    _session_options,
    has_engine,
    load_ort_model,
)

if TYPE_CHECKING:
    import numpy as np


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


def least_likely(decoded: Decoded, eos_id: int) -> np.ndarray:
    """Per line, the log-probability of its least likely token up to its end (its first EOS, included)."""
    import numpy as np

    tokens = decoded.sequences[:, 1:]
    ended = np.cumsum(tokens == eos_id, axis=1)
    # A token belongs to the line while no EOS came before it (the EOS itself does).
    mine = (ended - (tokens == eos_id)) == 0
    return np.where(mine, decoded.token_logprobs, 0.0).min(axis=1, initial=0.0)


def replace_rows(decoded: Decoded, other: Decoded, rows: np.ndarray, fill: int) -> Decoded:
    """``decoded`` with its lines ``rows`` replaced by ``other``'s (in order), padded to the longer of the two."""
    import numpy as np

    length = max(decoded.sequences.shape[1], other.sequences.shape[1])

    def pad(d: Decoded) -> Decoded:
        extra = length - d.sequences.shape[1]
        if not extra:
            return d
        return Decoded(np.pad(d.sequences, ((0, 0), (0, extra)), constant_values=fill),
                       np.pad(d.token_logprobs, ((0, 0), (0, extra))),
                       np.pad(d.attention, ((0, 0), (0, extra), (0, 0))))

    out, other = pad(decoded), pad(other)
    out = Decoded(out.sequences.copy(), out.token_logprobs.astype(np.float32, copy=True),
                  out.attention.astype(np.float32, copy=True))
    out.sequences[rows], out.token_logprobs[rows], out.attention[rows] = (
        other.sequences, other.token_logprobs, other.attention)
    return out


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


class OrtEngine:
    """Encoder, cross-attention projection and step sessions of one variant folder."""

    def __init__(self, folder: Path, providers: list[str], session_options: Any) -> None:
        import onnxruntime as ort
        from transformers import AutoConfig, GenerationConfig

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
               min_new_tokens: int = 0, beam_below: float = 1.0) -> Decoded:
        """Encode a batch of line images and decode them (greedy for one beam), as ``generate`` would.

        ``beam_below`` < 1 (with ``num_beams`` > 1): every line is decoded greedily first, and only the
        lines whose least likely token has a probability below it are decoded again with the beam search,
        from the same encoder states (``beam_below`` 0: greedy only).
        """
        import numpy as np

        states = self.encode(pixel_values)
        kw = {"start_id": self.start_id, "eos_id": self.eos_id, "pad_id": self.pad_id,
              "max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens}
        beams = {"length_penalty": self.length_penalty, "early_stopping": True, **kw}
        if num_beams > 1 and beam_below >= 1.0:
            return beam_search(self.stepper(states), len(states), num_beams, **beams)
        first = greedy_search(self.stepper(states), len(states), **kw)
        if num_beams == 1 or beam_below <= 0.0:
            return first
        unsure = np.flatnonzero(least_likely(first, self.eos_id) < np.log(beam_below))
        if not len(unsure):
            return first
        again = beam_search(self.stepper(np.ascontiguousarray(states[unsure])), len(unsure), num_beams, **beams)
        return replace_rows(first, again, unsure, self.pad_id if self.pad_id else self.eos_id)

    def generate(self, pixel_values: Any, num_beams: int = 1, max_new_tokens: int = 20, **_: Any) -> Any:
        """``generate``-shaped: token ids as a torch tensor (export's parity check calls it like a model)."""
        import numpy as np
        import torch

        pv = pixel_values.numpy() if hasattr(pixel_values, "numpy") else np.asarray(pixel_values)
        return torch.from_numpy(self.decode(pv, num_beams=num_beams, max_new_tokens=max_new_tokens).sequences)


def load_ort_decoder(folder: Path, provider: str = "CPUExecutionProvider", threads: int = 0) -> Any:
    """What decodes an export variant folder: this engine when the folder carries its graphs, else
    optimum's model (earlier exports); both have ``generate``."""
    if has_engine(folder):
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        return OrtEngine(folder, providers, _session_options(threads))
    return load_ort_model(folder, provider=provider, threads=threads)
