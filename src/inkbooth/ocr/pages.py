"""Document pages to text-line crops.

TrOCR reads one line at a time, so a page is never fed to it whole. A document (PNG, JPEG, TIFF
with any number of pages, or PDF rendered with pypdfium2) becomes pages; each page is binarised
(Otsu), straightened when slightly skewed, and cut into lines by a recursive XY-cut: column gutters
and paragraph gaps first, then text lines by the horizontal projection profile, then a line into
segments where a gap is much wider than a word space (tables, tab stops). Every line keeps its box
in the coordinates of the page as loaded (pixels at the render DPI for PDFs).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from inkbooth.config import option

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), page pixels


class InputError(ValueError):
    """A document cannot be read; the message names the document and what is wrong with it."""


@dataclasses.dataclass
class PagesConfig:
    """How documents become pages and pages become line crops."""

    pdf_dpi: int = option(200, "resolution at which PDF pages are rendered")
    max_pixels: int = option(60_000_000, "largest page (width x height) accepted; bigger is refused as a "
                                         "possible decompression bomb")
    max_pages: int = option(2000, "most pages read from one document")
    pdf_password: str | None = option(None, "password for encrypted PDFs")
    deskew: bool = option(True, "estimate and correct small page skew")
    max_skew_degrees: float = option(5.0, "largest skew searched for, in degrees")
    min_line_height: int = option(6, "rows of ink shorter than this (pixels) are noise, not text")
    segment_gap: float = option(2.0, "split a line where a horizontal gap exceeds this many line heights")
    gutter: float = option(1.5, "a vertical white band this many line heights wide separates columns")
    line_padding: float = option(0.15, "padding around each crop, as a fraction of the line height")

    def validate(self) -> None:
        if not 36 <= self.pdf_dpi <= 1200:
            raise ValueError(f"pdf_dpi must be between 36 and 1200, got {self.pdf_dpi}")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be positive")


@dataclasses.dataclass
class Page:
    """One page as a grayscale image."""

    index: int
    image: Image.Image


@dataclasses.dataclass
class Line:
    """A text line (or segment of one) on a page, with its crop."""

    page: int
    box: Box
    image: Image.Image
    # Maps a box in crop pixels to page pixels (the crop may come from the straightened page).
    to_page: Callable[[Box], Box] = dataclasses.field(repr=False, default=lambda b: b)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _sniff(data: bytes) -> str:
    if data[:5] == b"%PDF-" or b"%PDF-" in data[:1024]:
        return "pdf"
    return "image"


def load_pages(data: bytes, name: str, config: PagesConfig | None = None) -> Iterator[Page]:
    """The pages of a document given as bytes; ``name`` is used in errors."""
    config = config or PagesConfig()
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    if _sniff(data) == "pdf":
        yield from _pdf_pages(data, name, config)
    else:
        yield from _image_pages(data, name, config)


def _image_pages(data: bytes, name: str, config: PagesConfig) -> Iterator[Page]:
    from PIL import Image, UnidentifiedImageError

    # Pillow's own bomb check would warn (not refuse) below 2x its limit; we check sizes ourselves.
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image or PDF that can be read (unrecognised format)") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise InputError(f"{name}: cannot be decoded (truncated or corrupt?): {e}") from None
    n_frames = getattr(img, "n_frames", 1)
    for i in range(min(n_frames, config.max_pages)):
        try:
            img.seek(i)
            w, h = img.size
            if w * h > config.max_pixels:
                raise InputError(f"{name}: page {i + 1} is {w}x{h} pixels, over the limit of "
                                 f"{config.max_pixels} (max_pixels); refused as a possible decompression bomb")
            img.load()
            yield Page(i, to_gray(img, f"{name} page {i + 1}"))
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{name}: page {i + 1} cannot be decoded (truncated or corrupt?): {e}") from None


def _pdf_pages(data: bytes, name: str, config: PagesConfig) -> Iterator[Page]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data, password=config.pdf_password)
    except pdfium.PdfiumError as e:
        msg = str(e)
        if "password" in msg.lower():
            raise InputError(f"{name}: PDF is encrypted; give its password (pdf_password)") from None
        raise InputError(f"{name}: broken PDF: {msg}") from None
    try:
        scale = config.pdf_dpi / 72.0
        for i in range(min(len(pdf), config.max_pages)):
            page = pdf[i]
            w_pt, h_pt = page.get_size()
            w, h = math.ceil(w_pt * scale), math.ceil(h_pt * scale)
            if w * h > config.max_pixels:
                raise InputError(f"{name}: page {i + 1} would render at {w}x{h} pixels, over the limit of "
                                 f"{config.max_pixels} (max_pixels); lower pdf_dpi or raise the limit")
            bitmap = page.render(scale=scale, grayscale=True)
            yield Page(i, bitmap.to_pil().convert("L"))
            page.close()
    finally:
        pdf.close()


def to_gray(img: Image.Image, name: str = "image") -> Image.Image:
    """Any Pillow mode (CMYK, 16-bit, palette, alpha, bilevel) to 8-bit grayscale on white."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.full_like(arr, 255.0)
        return Image.fromarray(scaled.astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if mode == "L":
        return img.copy()
    try:
        return img.convert("RGB").convert("L")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{name}: unsupported pixel mode {mode}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Binarisation and skew
# ---------------------------------------------------------------------------------------------


def otsu_threshold(gray: np.ndarray) -> int:
    """Otsu's threshold of an 8-bit image."""
    import numpy as np

    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
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


def binarize(gray: np.ndarray) -> np.ndarray:
    """Ink mask (True = ink) with Otsu's threshold; a dark page with light text is inverted."""
    import numpy as np

    if gray.size == 0 or int(gray.max()) - int(gray.min()) < 16:
        return np.zeros(gray.shape, dtype=bool)  # blank (or flat) page
    thr = otsu_threshold(gray)
    ink = gray <= thr
    if ink.mean() > 0.5:
        ink = ~ink
    return ink


def estimate_skew(ink: np.ndarray, max_degrees: float = 5.0, strips: int = 4) -> float:
    """Skew angle (degrees, counter-clockwise positive) that makes text rows most horizontal."""
    import numpy as np

    ys, xs = np.nonzero(ink)
    if len(xs) < 50:
        return 0.0
    if len(xs) > 200_000:  # a sample is plenty to find the angle
        pick = np.random.default_rng(0).choice(len(xs), 200_000, replace=False)
        ys, xs = ys[pick], xs[pick]
    width = ink.shape[1]
    xs = xs - width / 2.0
    # Profiles are scored per vertical strip: across columns whose rows are offset, a shear could
    # line the columns up with each other and look "sharper" than the true angle.
    strip = np.minimum((xs + width / 2.0) * strips // max(width, 1), strips - 1).astype(np.int64)

    def sharpness(deg: float) -> float:
        t = math.tan(math.radians(deg))
        rows = np.round(ys + xs * t).astype(np.int64)
        rows -= rows.min()
        profile = np.bincount(strip * (rows.max() + 1) + rows)
        return float((profile.astype(np.float64) ** 2).sum())

    coarse = np.arange(-max_degrees, max_degrees + 1e-9, 0.5)
    best = max(coarse, key=sharpness)
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.05)
    return float(max(fine, key=sharpness))


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Start/end (exclusive) of each run of True values."""
    import numpy as np

    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _bands(ink: np.ndarray, min_height: int) -> list[tuple[int, int]]:
    """Text rows of a block: runs of inked rows, with accent/dot slivers merged into their line."""
    rows = ink.any(axis=1)
    bands = _runs(rows)
    if not bands:
        return []
    heights = sorted(b - a for a, b in bands)
    typical = max(heights[len(heights) // 2], min_height)
    merged: list[list[int]] = []
    for a, b in bands:
        if merged and (b - a < 0.45 * typical or merged[-1][1] - merged[-1][0] < 0.45 * typical) \
                and a - merged[-1][1] <= max(2, 0.3 * typical):
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged if b - a >= min_height]


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For every pixel, the length of the run of True it belongs to along axis 1 (0 off runs)."""
    import numpy as np

    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = edges[::2], edges[1::2]
    # int32: a run is at most one row or column long; half the memory of int64 on big pages.
    lengths = np.zeros(flat.shape[0] + 1, dtype=np.int32)
    np.add.at(lengths, starts, ends - starts)
    np.add.at(lengths, ends, -(ends - starts))
    return np.cumsum(lengths)[:-1].reshape(h, w + 2)[:, 1:-1]


def remove_rules(ink: np.ndarray) -> np.ndarray:
    """The ink mask without table rules and long underlines, which would join lines together.

    Glyph strokes are short: a run of ink much longer than the typical stroke, along a row or a
    column, is a rule. Only the mask used for cutting is changed; crops come from the page itself.
    """
    import numpy as np

    if not ink.any():
        return ink
    vertical = _run_lengths(ink.T).T
    # Each vertical run counted once (at its top pixel): long rules are few runs but many pixels.
    starts = ink.copy()
    starts[1:] &= ~ink[:-1]
    stroke = float(np.percentile(vertical[starts], 95))
    horizontal = _run_lengths(ink)
    rules = (horizontal >= max(40.0, 4.0 * stroke)) | (vertical >= max(40.0, 3.0 * stroke))
    return ink & ~rules


def segment_lines(ink: np.ndarray, config: PagesConfig | None = None) -> list[Box]:
    """Line boxes of an ink mask, in reading order (columns left to right, then top to bottom)."""
    import numpy as np

    config = config or PagesConfig()
    ink = remove_rules(ink)
    all_bands = _bands(ink, config.min_line_height)
    if not all_bands:
        return []
    line_h = float(np.median([b - a for a, b in all_bands]))
    boxes: list[Box] = []

    def cut(y0: int, y1: int, x0: int, x1: int, depth: int) -> None:
        block = ink[y0:y1, x0:x1]
        rows, cols = block.any(axis=1), block.any(axis=0)
        if not rows.any():
            return
        r = np.flatnonzero(rows)
        c = np.flatnonzero(cols)
        y0, y1, x0, x1 = y0 + int(r[0]), y0 + int(r[-1]) + 1, x0 + int(c[0]), x0 + int(c[-1]) + 1
        block = ink[y0:y1, x0:x1]
        if depth < 12:
            # Columns: a white vertical band across the whole block, wider than a word space.
            gaps = [(a, b) for a, b in _runs(~block.any(axis=0)) if b - a >= config.gutter * line_h]
            if gaps and len(_bands(block, config.min_line_height)) >= 2:
                edges = [0] + [e for a, b in gaps for e in (a, b)] + [block.shape[1]]
                for a, b in zip(edges[::2], edges[1::2]):
                    cut(y0, y1, x0 + a, x0 + b, depth + 1)
                return
            # Paragraphs: a white horizontal band at least a line high; inside, columns may start.
            hgaps = [(a, b) for a, b in _runs(~block.any(axis=1)) if b - a >= line_h]
            if hgaps:
                edges = [0] + [e for a, b in hgaps for e in (a, b)] + [block.shape[0]]
                for a, b in zip(edges[::2], edges[1::2]):
                    cut(y0 + a, y0 + b, x0, x1, depth + 1)
                return
        for a, b in _bands(block, config.min_line_height):
            line = block[a:b]
            h = b - a
            pieces = _runs(line.any(axis=0))
            groups: list[list[int]] = []
            for s, e in pieces:
                if groups and s - groups[-1][1] < config.segment_gap * h:
                    groups[-1][1] = e
                else:
                    groups.append([s, e])
            for s, e in groups:
                seg = line[:, s:e]
                rr = np.flatnonzero(seg.any(axis=1))
                boxes.append((x0 + s, y0 + a + int(rr[0]), x0 + e, y0 + a + int(rr[-1]) + 1))

    cut(0, ink.shape[0], 0, ink.shape[1], 0)
    return boxes


def _rotate_box_back(box: Box, angle: float, rotated_size: tuple[int, int], size: tuple[int, int]) -> Box:
    """Map a box found on the straightened page back onto the page as loaded."""
    (rw, rh), (w, h) = rotated_size, size
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    xs, ys = [], []
    for x, y in ((box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])):
        dx, dy = x - rw / 2.0, y - rh / 2.0
        # PIL rotates counter-clockwise by `angle` in image coordinates (y down): invert that.
        xs.append(w / 2.0 + dx * cos - dy * sin)
        ys.append(h / 2.0 + dx * sin + dy * cos)
    return (max(0, math.floor(min(xs))), max(0, math.floor(min(ys))), min(w, math.ceil(max(xs))),
            min(h, math.ceil(max(ys))))


def page_lines(page: Page, config: PagesConfig | None = None) -> list[Line]:
    """The text lines of a page with their crops (taken from the straightened page)."""
    import numpy as np
    from PIL import Image

    config = config or PagesConfig()
    gray = page.image
    arr = np.asarray(gray)
    ink = binarize(arr)
    angle = estimate_skew(ink, config.max_skew_degrees) if config.deskew else 0.0
    work = gray
    if abs(angle) >= 0.1:
        work = gray.rotate(-angle, resample=Image.BILINEAR, expand=True, fillcolor=255)
        ink = binarize(np.asarray(work))
    lines = []
    for box in segment_lines(ink, config):
        h = box[3] - box[1]
        pad = max(1, round(config.line_padding * h))
        crop_box = (max(0, box[0] - pad), max(0, box[1] - pad), min(work.width, box[2] + pad),
                    min(work.height, box[3] + pad))
        crop = work.crop(crop_box).convert("RGB")
        to_page = _crop_mapper(crop_box[:2], angle, work, gray)
        in_crop = (box[0] - crop_box[0], box[1] - crop_box[1], box[2] - crop_box[0], box[3] - crop_box[1])
        lines.append(Line(page.index, to_page(in_crop), crop, to_page))
    return lines


def _crop_mapper(origin: tuple[int, int], angle: float, work: Image.Image, page: Image.Image) -> Callable[[Box], Box]:
    """A function mapping crop-pixel boxes to page-pixel boxes."""
    ox, oy = origin

    def to_page(b: Box) -> Box:
        shifted = (b[0] + ox, b[1] + oy, b[2] + ox, b[3] + oy)
        if work is page:
            return tuple(int(v) for v in shifted)
        return _rotate_box_back(shifted, -angle, work.size, page.size)

    return to_page


def document_lines(data: bytes, name: str, config: PagesConfig | None = None) -> Iterator[Line]:
    """Every line of every page of a document."""
    for page in load_pages(data, name, config):
        yield from page_lines(page, config)


def describe(lines: list[Line]) -> list[dict[str, Any]]:
    return [{"page": ln.page, "box": list(ln.box)} for ln in lines]
