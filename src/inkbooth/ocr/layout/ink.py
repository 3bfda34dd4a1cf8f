"""Ink and paper: binarisation (Otsu), the paper's level, skew, and telling pictures from text.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def otsu_threshold(gray: np.ndarray | None = None, hist: np.ndarray | None = None) -> int:
    """Otsu's threshold of an 8-bit image, or of its 256-bin histogram."""
    import numpy as np

    if hist is None:
        hist = np.bincount(gray.ravel(), minlength=256)
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    if total == 0:
        return 128
    levels = np.arange(256)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * levels)
    mean = m0[-1] / total
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0
    return int(np.argmax(between))


def _split_levels(hist: np.ndarray) -> tuple[int, bool] | None:
    """Otsu's threshold of a histogram and whether ink is the light side (a dark page); None for a
    blank or flat page."""
    import numpy as np

    used = np.flatnonzero(hist)
    if len(used) == 0 or int(used[-1]) - int(used[0]) < 16:
        return None
    thr = otsu_threshold(hist=hist)
    return thr, bool(hist[:thr + 1].sum() > 0.5 * hist.sum())


def binarize(gray: np.ndarray, hist: np.ndarray | None = None) -> np.ndarray:
    """Ink mask (True = ink) with Otsu's threshold; a dark page with light text is inverted.
    ``hist``: the image's 256-bin histogram, if known (Pillow's ``histogram()`` is fast)."""
    import numpy as np

    if gray.size == 0:
        return np.zeros(gray.shape, dtype=bool)
    if hist is None:  # a quarter of the pixels gives the same histogram shape at a quarter of the cost
        sample = gray[::2, ::2] if gray.size > 1_000_000 else gray
        hist = np.bincount(sample.ravel(), minlength=256)
    split = _split_levels(np.asarray(hist))
    if split is None:
        return np.zeros(gray.shape, dtype=bool)  # blank (or flat) page
    thr, light_ink = split
    return gray > thr if light_ink else gray <= thr


def _paper_level(hist: np.ndarray) -> float:
    """The median grey level of the paper (the pixels that are not ink)."""
    import numpy as np

    hist = np.asarray(hist)
    split = _split_levels(hist)
    if split is None:
        return float(np.searchsorted(np.cumsum(hist), hist.sum() / 2)) if hist.sum() else 255.0
    thr, light_ink = split
    paper = np.zeros_like(hist)
    if light_ink:
        paper[:thr + 1] = hist[:thr + 1]
    else:
        paper[thr + 1:] = hist[thr + 1:]
    return float(np.searchsorted(np.cumsum(paper), paper.sum() / 2))


def estimate_skew(ink: np.ndarray, max_degrees: float = 5.0, strips: int = 4) -> float:
    """Skew angle (degrees, counter-clockwise positive) that makes text rows most horizontal."""
    import numpy as np

    # Every 4th column is plenty to find the angle; rows keep full resolution, which the angle needs.
    sample = ink[:, ::4]
    ys, xs = np.divmod(np.flatnonzero(sample), sample.shape[1])  # flatnonzero: 5x faster than nonzero
    xs = xs * 4
    if len(xs) < 50:
        return 0.0
    if len(xs) > 60_000:  # a random sample: a regular one aliases with the dot grid of a photo
        pick = np.random.default_rng(0).integers(0, len(xs), 60_000)
        ys, xs = ys[pick], xs[pick]
    height, width = ink.shape
    xs = xs - width / 2.0
    # Profiles are scored per vertical strip: across columns whose rows are offset, a shear could
    # line the columns up with each other and look "sharper" than the true angle. Each strip's
    # rows get their own range of bins (rows shift by at most half the width either way).
    span = height + width + 2
    base = np.minimum((xs + width / 2.0) * strips // max(width, 1), strips - 1).astype(np.int64) * span \
        + width // 2 + 1 + ys

    def sharpness(deg: float, every: int = 1) -> int:
        shift = np.rint(xs[::every] * math.tan(math.radians(deg))).astype(np.int64)
        profile = np.bincount(base[::every] + shift)
        return int(np.dot(profile, profile))

    # Coarse steps tell angles apart on a quarter of the points; the fine search needs them all.
    coarse = np.arange(-max_degrees, max_degrees + 1e-9, 0.5)
    best = max(coarse, key=lambda d: sharpness(d, 4))
    fine = np.arange(best - 0.3, best + 0.3 + 1e-9, 0.05)
    return float(max(fine, key=sharpness))


def is_picture(region: np.ndarray, background: float) -> bool:
    """Whether a box of the page is a photo rather than text: a text line is mostly paper between
    its strokes (half its pixels or more on the real pages measured), a photo hardly any."""
    import numpy as np

    if region.size == 0:
        return False
    if region.size > 4096:
        region = region[::2, ::2]  # a quarter of the pixels tells paper from photo as well
    return float(np.count_nonzero(_near_paper(round(background))[region])) < 0.25 * region.size


@functools.lru_cache(maxsize=8)
def _near_paper(background: int) -> np.ndarray:
    """Look-up table of the grey levels within 25 of the paper's."""
    import numpy as np

    return np.abs(np.arange(256) - background) < 25
