"""Token and word boxes from decoder cross-attention.

For each generated token the decoder's cross-attention (averaged over layers and heads) is a
distribution over the encoder's positions: a class token, then the ViT patch grid (any number of
rows and columns: square or line-shaped inputs, square or rectangular patches). The grid covers the
encoder's input; the crop fills all of it when the image processor stretches lines to the input size
(ViT's), or its top-left part when the processor keeps the line's aspect ratio and pads (DETR's with
a ``pad_size``, see ``content_box``). A patch thus maps back to a rectangle of the crop and from there to page
coordinates. A token's box is the span of grid columns (and rows) whose attention is at least
``threshold`` times the peak, taken around the peak.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

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


def patch_grid(encoder_config: Any) -> tuple[int, int]:
    """Rows and columns of patches a ViT-style encoder cuts its input into (sizes may be one number)."""
    size, patch = encoder_config.image_size, encoder_config.patch_size
    size = size if isinstance(size, (list, tuple)) else (size, size)
    patch = patch if isinstance(patch, (list, tuple)) else (patch, patch)
    return size[0] // patch[0], size[1] // patch[1]


def content_box(image_processor: Any, crop_size: tuple[int, int]) -> tuple[Box, tuple[int, int]]:
    """Where a crop of ``crop_size`` (width, height) lands in the encoder input, and the input's size.

    Stretching processors (ViT's) fill the input. DETR's with ``pad_size`` keeps the aspect ratio:
    scaled to fit ``max_height`` x ``max_width`` (its own size rule, called here), then padded right
    and below to ``pad_size``.
    """
    pad = getattr(image_processor, "pad_size", None)
    size = image_processor.size
    if pad and getattr(image_processor, "do_pad", False):
        from transformers.image_utils import get_image_size_for_max_height_width

        w, h = crop_size
        if getattr(image_processor, "do_resize", True):
            h, w = get_image_size_for_max_height_width((h, w), size["max_height"], size["max_width"])
        return (0, 0, w, h), (int(pad["width"]), int(pad["height"]))
    return (0, 0, int(size["width"]), int(size["height"])), (int(size["width"]), int(size["height"]))


def attention_box(attn: np.ndarray, grid: tuple[int, int], crop_size: tuple[int, int],
                  threshold: float = 0.5, content: tuple[Box, tuple[int, int]] | None = None) -> Box:
    """Box (in crop pixels) of one token's attention over ``1 + rows*cols`` encoder positions.

    ``content`` is ``content_box``'s answer for this crop; without it the crop fills the grid.
    """
    import numpy as np

    rows, cols = grid
    patches = np.asarray(attn[-rows * cols:], dtype=np.float64).reshape(rows, cols)
    width, height = crop_size
    if not np.isfinite(patches).all() or patches.sum() <= 0:
        return (0, 0, width, height)
    c0, c1 = _span(patches.sum(axis=0), threshold)
    r0, r1 = _span(patches.sum(axis=1), threshold)
    (x0, y0, x1, y1), (in_w, in_h) = content or ((0, 0, cols, rows), (cols, rows))

    def to_crop(v: float, lo: int, hi: int, extent: int) -> float:
        return min(max((v - lo) * extent / max(1, hi - lo), 0.0), float(extent))

    return (
        int(np.floor(to_crop(c0 * in_w / cols, x0, x1, width))), int(np.floor(to_crop(r0 * in_h / rows, y0, y1, height))),
        int(np.ceil(to_crop(c1 * in_w / cols, x0, x1, width))), int(np.ceil(to_crop(r1 * in_h / rows, y0, y1, height))),
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
                to_page: Callable[[Box], Box], threshold: float = 0.5,
                content: tuple[Box, tuple[int, int]] | None = None) -> list[Box]:
    """Page boxes for every token row of ``attn`` (tokens x encoder positions)."""
    return [to_page(attention_box(a, grid, crop_size, threshold, content)) for a in attn]
