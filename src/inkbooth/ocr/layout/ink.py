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


def _row_tone(masked: np.ndarray) -> np.ndarray:
    """A panel's tone row by row (a column vector): the median of each row's panel pixels (``masked``:
    the others NaN), a row with none taking the median of the rows' tones (0 if no row has any)."""
    import numpy as np

    with np.errstate(all="ignore"):
        tone = np.nanmedian(masked, axis=1)
    finite = np.isfinite(tone)
    return np.where(finite, tone, np.nanmedian(tone) if finite.any() else 0.0)[:, None]


def dark_panels(gray: np.ndarray, ink: np.ndarray, block: int = 8, min_height: int = 16) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of dark panels with light text on them (slide titles, header bands,
    table heads): regions that binarise as solid ink although they hold something lighter.

    A panel is a connected run of ``block``-pixel cells that are mostly ink, filling most of its
    bounding box, at least ``min_height`` tall, whose pixels are two tones (the panel's and a light
    one, as text on a band is), the panel's flat along each row (it may be shaded top to bottom), not
    the texture and spread of grey levels a photo has, and which holds some light pixels (text). Each box is trimmed to the rows and columns that are mostly dark."""
    import numpy as np
    from scipy import ndimage

    h, w = ink.shape
    if h < 2 * block or w < 2 * block:
        return []
    hb, wb = h // block, w // block
    density = ink[:hb * block, :wb * block].reshape(hb, block, wb, block).mean(axis=(1, 3))
    labels, count = ndimage.label(density > 0.6)
    panels = []
    for k, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if rows.stop - rows.start < max(2, min_height // block) or cols.stop - cols.start < 4:
            continue
        if (labels[rows, cols] == k).mean() < 0.6:
            continue  # a thick frame, a plot's filled shapes, a large glyph: not a panel
        y0, y1, x0, x1 = rows.start * block, rows.stop * block, cols.start * block, cols.stop * block
        dark = ink[y0:y1, x0:x1]
        keep_rows = np.flatnonzero(dark.mean(axis=1) > 0.5)
        keep_cols = np.flatnonzero(dark.mean(axis=0) > 0.5)
        if len(keep_rows) < min_height or len(keep_cols) < 2 * block:
            continue
        y0, y1 = y0 + int(keep_rows[0]), y0 + int(keep_rows[-1]) + 1
        x0, x1 = x0 + int(keep_cols[0]), x0 + int(keep_cols[-1]) + 1
        region = gray[y0:y1, x0:x1]
        panel_inked = ink[y0:y1, x0:x1]
        light = ~panel_inked
        if not 0.003 <= light.mean() <= 0.45:
            continue  # nothing written on it, or not a panel
        # The panel's tone row by row (a band may be shaded top to bottom), and its text's.
        masked = np.where(panel_inked, region, np.nan).astype(np.float64)
        tone = _row_tone(masked)
        lit = float(np.median(region[light]))
        if lit - float(np.median(tone)) < 60:
            continue
        with np.errstate(all="ignore"):
            spread = float(np.nanmedian(np.abs(masked - tone)))
        if spread > 6 or float(np.median(np.abs(region[light] - lit))) > 20:
            continue  # a textured surface or light shapes in many greys (a photo), not a panel with text
        values = region.astype(np.float64)
        near = (np.abs(values - tone) < 40) | (np.abs(values - lit) < 40)
        if near.mean() < 0.85:
            continue  # the grey levels of a photo, not two tones
        panels.append((x0, y0, x1, y1))
    return panels


def panel_as_paper(region: np.ndarray, dark: np.ndarray, min_line_height: int = 6) -> np.ndarray:
    """A dark panel's light text as dark text on white paper, each stroke against its own
    surroundings: the panel's tone row by row (``dark``: its pixels that binarise as ink; a band
    may be shaded top to bottom, or two bands of other tones may touch) becomes white, and the
    lightest level near each pixel (a window a few text lines tall) black. So dimmed text (a
    slide's inactive navigation items, grey on black) comes out as dark as the bright text beside
    it, which one stretch for the whole panel left too faint to binarise as ink."""
    import numpy as np
    from scipy import ndimage

    values = region.astype(np.float32)
    tone = _row_tone(np.where(dark, values, np.nan))
    window = (5 * min_line_height, 15 * min_line_height)
    lit = ndimage.maximum_filter(values, size=window, mode="nearest")
    span = lit - tone
    level = np.clip((values - tone) / np.maximum(span, 1.0), 0.0, 1.0)
    level[span < 40] = 0.0  # no text near: the panel's own grain, paper
    return (255.0 * (1.0 - level)).astype(np.uint8)
