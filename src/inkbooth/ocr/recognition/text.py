"""How read text is compared with the truth: character and word error rates.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations


def cer(hyp: str, ref: str) -> float:
    """Character error rate: Levenshtein distance over the reference length."""
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, hc in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc))
        prev = cur
    return prev[-1] / len(ref)


def normalise(text: str) -> str:
    """Whitespace runs as one space, none at the ends (how texts are compared for CER)."""
    return " ".join(text.split())


def corpus_cer(hyps: list[str], refs: list[str]) -> float:
    """Total edits over total reference characters (whitespace runs counted as one space)."""
    hyps, refs = [normalise(h) for h in hyps], [normalise(r) for r in refs]
    return sum(cer(h, r) * len(r) for h, r in zip(hyps, refs)) / (sum(len(r) for r in refs) or 1)


def wer(hyp: str, ref: str) -> float:
    """Word error rate: edit distance over words, over the reference's word count."""
    return cer(hyp.split(), ref.split())  # cer's Levenshtein works on any sequence


def error_rates(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Corpus CER and WER of (hypothesis, reference) pairs: total edits over total reference length."""
    words = sum(len(r.split()) for _, r in pairs) or 1
    c = corpus_cer([h for h, _ in pairs], [r for _, r in pairs])
    w = sum(wer(h, r) * len(r.split()) for h, r in pairs) / words
    return {"cer": round(c, 5), "wer": round(w, 5), "lines": len(pairs)}
