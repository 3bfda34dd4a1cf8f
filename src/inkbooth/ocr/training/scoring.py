"""Reading held-out lines with a PyTorch model and scoring them (CER, WER, per font and text kind).

May import ``inkbooth.ocr.recognition`` (the error rates).
"""

from __future__ import annotations

from typing import Any

from inkbooth.ocr.recognition.text import error_rates

EvalLine = tuple[Any, str, str, str]  # an evaluation line: image, true text, font name, text kind ('' if unknown)


def read_lines(model: Any, processor: Any, images: list[Any], *, num_beams: int = 1, max_new_tokens: int = 96,
               batch_size: int = 32) -> list[str]:
    """Texts read by a PyTorch VisionEncoderDecoder model (greedy or beam search)."""
    import torch

    device = next(model.parameters()).device
    texts: list[str] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            pv = processor(images=images[i:i + batch_size], return_tensors="pt").pixel_values.to(device)
            seqs = model.generate(pixel_values=pv, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                  early_stopping=num_beams > 1)
            texts.extend(t.strip() for t in processor.batch_decode(seqs, skip_special_tokens=True))
    model.train(was_training)
    return texts


def evaluate_sets(model: Any, processor: Any, sets: dict[str, list[EvalLine]], *, num_beams: int,
                  max_new_tokens: int) -> dict[str, Any]:
    """CER and WER per evaluation set (and, for synthetic lines, per font and per text kind)."""
    metrics: dict[str, Any] = {}
    for name, items in sets.items():
        hyps = read_lines(model, processor, [item[0] for item in items], num_beams=num_beams,
                          max_new_tokens=max_new_tokens)
        pairs = [(h, item[1]) for h, item in zip(hyps, items)]
        rates = error_rates(pairs)
        metrics[f"{name}_cer"], metrics[f"{name}_wer"] = rates["cer"], rates["wer"]
        for field, label in ((2, "font"), (3, "kind")):
            groups = sorted({item[field] for item in items if item[field]})
            if len(groups) > 1:
                metrics[f"{name}_cer_by_{label}"] = {
                    g: error_rates([p for p, item in zip(pairs, items) if item[field] == g])["cer"] for g in groups}
        metrics[f"{name}_examples"] = [{"text": t, "read": h} for h, t in pairs[:5]]
    return metrics


def headline_cer(metrics: dict[str, Any]) -> float | None:
    """The held-out CER that counts: labelled held-out lines when there are any, else synthetic."""
    for key in ("heldout_cer", "synthetic_cer"):
        if key in metrics:
            return metrics[key]
    return None
