"""What fine-tuning minimises: the seq2seq loss computed here, the auxiliary CTC loss, and the labels.

transformers 4.57's ``VisionEncoderDecoderModel(labels=...)`` shifts the labels a second time inside
its loss, which trains the model to predict the token after next; ``seq2seq_loss`` shifts them
once, behind the model's decoder start token. Each piece is tested on its own.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


def decoder_inputs(labels: Any, start_id: int, pad_id: int) -> Any:
    """The labels shifted right once behind ``start_id``; ignored positions become padding."""
    inputs = labels.new_full(labels.shape, pad_id)
    inputs[:, 0] = start_id
    inputs[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, pad_id)
    return inputs


def seq2seq_loss(model: Any, pixel_values: Any, labels: Any, *, label_smoothing: float = 0.0,
                 encoder_outputs: Any = None) -> Any:
    """Token cross-entropy of ``model`` on ``labels`` (IGNORE where padded), teacher-forced once.

    ``VisionEncoderDecoderModel(labels=...)`` is not used: in transformers 4.57 it shifts the labels
    into decoder inputs and its loss then shifts them again. ``encoder_outputs`` (of these pixels)
    saves a second encoder pass when the caller needs them too.
    """
    import torch

    cfg = model.config
    inputs = decoder_inputs(labels, cfg.decoder_start_token_id, cfg.pad_token_id)
    source = {"encoder_outputs": encoder_outputs} if encoder_outputs is not None else {"pixel_values": pixel_values}
    logits = model(**source, decoder_input_ids=inputs, decoder_attention_mask=(labels != IGNORE).long()).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=IGNORE, label_smoothing=label_smoothing)


def encoder_columns(states: Any, grid: tuple[int, int]) -> Any:
    """Encoder states (batch, 1 + rows * cols, hidden) as one vector per patch column (batch, cols, hidden)."""
    rows, cols = grid
    return states[:, -rows * cols:].reshape(states.shape[0], rows, cols, states.shape[-1]).mean(dim=1)


def ctc_loss(head: Any, states: Any, labels: Any, grid: tuple[int, int], special_ids: set[int]) -> Any:
    """CTC of the text tokens in ``labels`` over the patch columns; the blank is the head's last class."""
    import torch

    log_probs = torch.log_softmax(head(encoder_columns(states, grid)).float(), -1).transpose(0, 1)
    keep = labels != IGNORE
    for sid in special_ids:
        keep &= labels != sid
    targets = [row[k] for row, k in zip(labels, keep)]
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    steps = torch.full((labels.shape[0],), log_probs.shape[0], dtype=torch.long)
    return torch.nn.functional.ctc_loss(log_probs, torch.cat(targets), steps, lengths, blank=log_probs.shape[-1] - 1,
                                        zero_infinity=True)


def encode_labels(tokenizer: Any, texts: list[str], max_tokens: int) -> tuple[Any, list[int]]:
    """Label ids (the tokenizer's own special tokens included), IGNORE-padded; and the rows that fit."""
    import torch

    ids = tokenizer(texts, add_special_tokens=True).input_ids
    fits = [i for i, seq in enumerate(ids) if len(seq) <= max_tokens]
    width = max((len(ids[i]) for i in fits), default=1)
    labels = torch.full((len(fits), width), IGNORE, dtype=torch.long)
    for row, i in enumerate(fits):
        labels[row, :len(ids[i])] = torch.tensor(ids[i])
    return labels, fits
