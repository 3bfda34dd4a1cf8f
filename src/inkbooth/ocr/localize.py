"""Token and word boxes from decoder cross-attention.

For each generated token the decoder's cross-attention (averaged over layers and heads) is a
distribution over the encoder's positions: a class token, then the ViT patch grid. The grid covers
the line image as resized for the encoder, so a patch maps back to a rectangle of the crop and from
there to page coordinates. A token's box is the span of grid columns (and rows) whose attention is
at least ``threshold`` times the peak, taken around the peak.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

Box = tuple[int, int, int, int]


def _span(weights: np.ndarray, threshold: float) -> tuple[int, int]:
    """The contiguous run around the peak where weights >= threshold * peak (end exclusive)."""
    peak = int(weights.argmax())
    cut = threshold * float(weights[peak])
    lo = peak
    while lo > 0 and weights[lo - 1] >= cut:
        lo -= 1
    hi = peak + 1
    while hi < len(weights) and weights[hi] >= cut:
        hi += 1
    return lo, hi


def attention_box(attn: np.ndarray, grid: tuple[int, int], crop_size: tuple[int, int],
                  threshold: float = 0.5) -> Box:
    """Box (in crop pixels) of one token's attention over ``1 + rows*cols`` encoder positions."""
    import numpy as np

    rows, cols = grid
    patches = np.asarray(attn[-rows * cols:], dtype=np.float64).reshape(rows, cols)
    width, height = crop_size
    if not np.isfinite(patches).all() or patches.sum() <= 0:
        return (0, 0, width, height)
    c0, c1 = _span(patches.sum(axis=0), threshold)
    r0, r1 = _span(patches.sum(axis=1), threshold)
    return (
        int(np.floor(c0 * width / cols)), int(np.floor(r0 * height / rows)),
        int(np.ceil(c1 * width / cols)), int(np.ceil(r1 * height / rows)),
    )


def union(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def group_words(tokens: Sequence[str]) -> list[list[int]]:
    """Indices of tokens grouped into words (byte-level BPE marks a leading space with 'Ġ')."""
    words: list[list[int]] = []
    for i, tok in enumerate(tokens):
        starts_word = tok.startswith("Ġ") or tok.startswith("▁") or not words
        if tok in ("Ġ", "▁"):
            words.append([])
            continue
        if starts_word or not words:
            words.append([i])
        else:
            words[-1].append(i)
    return [w for w in words if w]


def token_boxes(attn: np.ndarray, grid: tuple[int, int], crop_size: tuple[int, int],
                to_page: Callable[[Box], Box], threshold: float = 0.5) -> list[Box]:
    """Page boxes for every token row of ``attn`` (tokens x encoder positions)."""
    return [to_page(attention_box(a, grid, crop_size, threshold)) for a in attn]
