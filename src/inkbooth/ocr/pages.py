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
import functools
import io
import math
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from inkbooth.config import option

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), page pixels


PASSWORD_ENV = "INKBOOTH_PDF_PASSWORD"


class InputError(ValueError):
    """A document cannot be read; the message names the document and what is wrong with it."""


@dataclasses.dataclass
class PagesConfig:
    """How documents become pages and pages become line crops."""

    pdf_dpi: int = option(200, "resolution at which PDF pages are rendered", min=36, max=1200)
    max_pixels: int = option(60_000_000, "largest page (width x height) accepted; bigger is refused as a "
                                         "possible decompression bomb", min=1, max=2_000_000_000)
    max_pages: int = option(2000, "most pages read from one document (the rest get a warning record)",
                            min=1, max=1_000_000)
    pdf_password: str | None = option(None, "password for encrypted PDFs (a secret: better given as the "
                                            "INKBOOTH_PDF_PASSWORD environment variable)", secret=True)
    deskew: bool = option(True, "estimate and correct small page skew")
    orientation: bool = option(True, "turn a page whose text runs up or down it (a table printed sideways) "
                                     "by a quarter turn before cutting it into lines")
    max_skew_degrees: float = option(5.0, "largest skew searched for, in degrees", min=0.0, max=45.0)
    detector: str = option("xycut", "how lines are found: 'xycut' (cuts along the ink's projection profiles) "
                                    "or 'ppocr' (PP-OCRv4's text detector; the 'detect' extra)")
    min_line_height: int = option(6, "rows of ink shorter than this (pixels) are noise, not text", min=1, max=10_000)
    segment_gap: float = option(2.5, "split a line where a horizontal gap exceeds this many line heights",
                                min=0.01, max=1000.0)
    gutter: float = option(1.5, "a vertical white band this many line heights wide separates columns",
                           min=0.01, max=1000.0)
    narrow_gutter: float = option(1.0, "a narrower white band, down to this many line heights, separates two wide "
                                       "columns that are both full of lines (an index)", min=0.01, max=1000.0)
    paragraph_gap: float = option(0.8, "a blank horizontal band this many line heights tall separates blocks",
                                  min=0.01, max=1000.0)
    wide_column: float = option(10.0, "a column of text at least this many line heights wide: a narrow gutter between "
                                      "two such columns parts them even when their rows line up (a table's do not)",
                                min=0.01, max=1000.0)
    line_padding: float = option(0.15, "padding around each crop, as a fraction of the line height",
                                 min=0.0, max=10.0)

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "pages")
        if self.detector not in ("xycut", "ppocr"):
            raise ValueError(f"detector must be 'xycut' or 'ppocr', got {self.detector!r}")


@dataclasses.dataclass
class Page:
    """One page as a grayscale image."""

    index: int
    image: Image.Image
    total: int = 1  # pages in the document (some past max_pages may not be read)


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


# Formats recognised by their first bytes; an image signature at offset 0 wins over a "%PDF-" that
# appears later (a PNG may carry that text in a chunk; a PDF may start after up to 1 KB of junk).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a", b"BM",
                b"RIFF")


def _sniff(head: bytes) -> str:
    """``"pdf"`` or ``"image"`` from a document's first KB."""
    if head.startswith(_IMAGE_MAGIC):
        return "image"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    return "image"


def load_pages(source: bytes | str | os.PathLike[str], name: str, config: PagesConfig | None = None) -> Iterator[Page]:
    """The pages of a document, one at a time; ``source`` is its bytes or a local file, ``name`` is
    used in errors. Each page carries the document's page count (``total``): pages past
    ``max_pages`` are not read, and a caller can say so."""
    config = config or PagesConfig()
    if isinstance(source, bytes):
        empty, head = not source, source[:1024]
    else:
        try:
            with open(source, "rb") as f:
                head = f.read(1024)
        except OSError as e:
            raise InputError(f"{name}: cannot be read: {e.strerror or e}") from None
        empty = not head
    if empty:
        raise InputError(f"{name}: empty file (0 bytes)")
    if _sniff(head) == "pdf":
        yield from _pdf_pages(source, name, config)
    else:
        yield from _image_pages(source, name, config)


def _image_pages(source: bytes | str | os.PathLike[str], name: str, config: PagesConfig) -> Iterator[Page]:
    from PIL import Image, UnidentifiedImageError

    from inkbooth.imaging import upright

    # Pillow's own bomb check would warn (not refuse) below 2x its limit; we check sizes ourselves.
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image or PDF that can be read (unrecognised format)") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise InputError(f"{name}: cannot be decoded (truncated or corrupt?): {e}") from None
    with img:
        n_frames = getattr(img, "n_frames", 1)
        for i in range(min(n_frames, config.max_pages)):
            try:
                img.seek(i)
                w, h = img.size
                if w * h > config.max_pixels:
                    raise InputError(f"{name}: page {i + 1} is {w}x{h} pixels, over the limit of "
                                     f"{config.max_pixels} (max_pixels); refused as a possible decompression bomb")
                img.load()
                page = Page(i, to_gray(upright(img), f"{name} page {i + 1}"), n_frames)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001
                raise InputError(f"{name}: page {i + 1} cannot be decoded (truncated or corrupt?): {e}") from None
            yield page


def _pdf_pages(source: bytes | str | os.PathLike[str], name: str, config: PagesConfig) -> Iterator[Page]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(source if isinstance(source, bytes) else os.fspath(source),
                                 password=config.pdf_password)
    except pdfium.PdfiumError as e:
        msg = str(e)
        if "password" in msg.lower():
            raise InputError(f"{name}: PDF is encrypted; give its password (pdf_password, or the "
                             f"{PASSWORD_ENV} environment variable)") from None
        raise InputError(f"{name}: broken PDF: {msg}") from None
    try:
        scale = config.pdf_dpi / 72.0
        total = len(pdf)
        for i in range(min(total, config.max_pages)):
            page = pdf[i]
            # The size and the rendering both honour the page's /Rotate (inherited ones too).
            w_pt, h_pt = page.get_size()
            w, h = math.ceil(w_pt * scale), math.ceil(h_pt * scale)
            if w * h > config.max_pixels:
                raise InputError(f"{name}: page {i + 1} would render at {w}x{h} pixels, over the limit of "
                                 f"{config.max_pixels} (max_pixels); lower pdf_dpi or raise the limit")
            bitmap = page.render(scale=scale, grayscale=True)
            image = bitmap.to_pil().convert("L")
            bitmap.close()
            page.close()
            yield Page(i, image, total)
    finally:
        pdf.close()


def to_gray(img: Image.Image, name: str = "image") -> Image.Image:
    """Any Pillow mode (CMYK, 16-bit, float, palette, alpha, bilevel) to 8-bit grayscale on white."""
    from PIL import Image

    from inkbooth.imaging import DEEP_MODES, to_8bit

    mode = img.mode
    if mode in DEEP_MODES:
        return to_8bit(img, stretch=True)
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


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Start/end (exclusive) of each run of True values."""
    import numpy as np

    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _bands(ink: np.ndarray, min_height: int, keep_small: bool = False) -> list[tuple[int, int]]:
    """Text rows of a block: runs of inked rows, with accent/dot slivers merged into their line.

    Rows shorter than ``min_height`` that stay alone are dropped, unless ``keep_small`` (a lone
    "..." in a listing is a line; the caller judges them).
    """
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
    return [(a, b) for a, b in merged if keep_small or b - a >= min_height]


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run of True along axis 1 of a 2-D mask: its row, first column and length."""
    import numpy as np

    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    edges = np.flatnonzero(flat[1:] ^ flat[:-1])  # a run starts after edges[0], ends after edges[1]
    starts, ends = edges[::2], edges[1::2]
    rows, cols = np.divmod(starts, w + 2)  # the padded column before the run is the run's own column
    return rows, cols, ends - starts


def remove_rules(ink: np.ndarray, min_length: float = 40.0) -> np.ndarray:
    """The ink mask without table rules and long underlines, which would join lines together.

    Glyph strokes are short: a run of ink much longer than the typical stroke (and at least
    ``min_length`` pixels), along a row or a column, is a rule. Only the mask used for cutting is
    changed; crops come from the page itself.
    """
    import numpy as np

    if not ink.any():
        return ink
    v_cols, v_rows, v_len = _row_runs(np.ascontiguousarray(ink.T))  # runs down each column
    stroke = float(np.percentile(v_len, 95))
    h_rows, h_cols, h_len = _row_runs(ink)
    h_long = h_len >= max(min_length, 4.0 * stroke)
    v_long = v_len >= max(min_length, 3.0 * stroke)
    if not h_long.any() and not v_long.any():
        return ink
    out = ink.copy()
    # Rules are few runs (a table has tens): clearing them one slice at a time beats a pass per pixel.
    for r, c, n in zip(h_rows[h_long].tolist(), h_cols[h_long].tolist(), h_len[h_long].tolist()):
        out[r, c:c + n] = False
    for c, r, n in zip(v_cols[v_long].tolist(), v_rows[v_long].tolist(), v_len[v_long].tolist()):
        out[r:r + n, c] = False
    return out


def line_height(ink: np.ndarray, min_height: int = 6) -> float:
    """Typical text line height of a page, in pixels (0 when there is no text).

    Measured in narrow vertical strips, each mostly inside one column: across a whole page the rows
    of side-by-side columns with offset baselines run together into bands several lines tall.
    """
    import numpy as np

    h, w = ink.shape
    strip = max(64, w // 12)
    heights = [b - a for x in range(0, w, strip) for a, b in _bands(ink[:, x:x + strip], min_height)]
    if not heights:
        return 0.0
    return float(max(np.median(heights), min_height))


def _split_band(block: np.ndarray, a: int, b: int, h: float) -> list[tuple[int, int]]:
    """A band of rows cut into lines at the valleys of its row profile.

    Lines set with tight leading touch (a descender meets the next line's ascender), so no blank
    row separates them; the row profile still drops to a few pixels between their x-height bodies.
    A valley is a cut when it is under half the smaller peak on either side and both sides are
    text: their densest row is inked over a good part of their width (a row of descenders is not).
    """
    import numpy as np

    if b - a < 1.6 * h:
        return [(a, b)]
    band = block[a:b]
    k = max(1, round(h / 8))
    seg = np.convolve(band.sum(axis=1).astype(np.float64), np.ones(k) / k, mode="same")
    # Lines that touch are as tall as each other, so a cut near the middle third of the band is
    # one between lines; one near its top is the ascenders of a single big line.
    lo = max(round(0.55 * h), round(0.3 * (b - a)))
    hi = (b - a) - lo
    if hi <= lo:
        return [(a, b)]
    i = lo + int(np.argmin(seg[lo:hi]))
    if seg[i] > 0.5 * min(seg[:i].max(), seg[i:].max()):
        return [(a, b)]
    for part, rows in ((band[:i], seg[:i]), (band[i:], seg[i:])):
        cols = np.flatnonzero(part.any(axis=0))
        if len(cols) == 0 or rows.max() < 0.15 * (cols[-1] - cols[0] + 1):
            return [(a, b)]
    return _split_band(block, a, a + i, h) + _split_band(block, a + i, b, h)


def _table_gap(block: np.ndarray, a: int, b: int, left: int, right: int, line_h: float,
               config: PagesConfig) -> bool:
    """Whether a narrow white band ``a:b`` of a block parts the cells of table rows (or line numbers
    from their lines), not two columns of text: narrower than a gap that would part a line anyway,
    with the rows on its two sides (the columns ``left:a`` and ``b:right``) on the same baselines,
    about as many on each side, and not two wide columns of text side by side. Such a band is left
    to the split of each line at wide gaps, which reads a table row whole where its cells are close.
    """
    if b - a >= config.segment_gap * line_h:
        return False
    if a - left >= config.wide_column * line_h and right - b >= config.wide_column * line_h:
        return False  # two columns of text, whose baselines happen to line up
    bands_l = _bands(block[:, left:a], config.min_line_height)
    bands_r = _bands(block[:, b:right], config.min_line_height)
    if not bands_l or not bands_r:
        return False
    few, many = sorted((bands_l, bands_r), key=len)
    if len(few) < 0.5 * len(many):
        return False  # notes in a margin beside a column of text
    aligned = 0
    for s, e in few:
        overlap = max((min(e, e2) - max(s, s2)) / min(e - s, e2 - s2) for s2, e2 in many)
        aligned += overlap >= 0.6
    return aligned >= 0.8 * len(few)


def _full_columns(block: np.ndarray, a: int, b: int, left: int, right: int, line_h: float,
                  config: PagesConfig) -> bool:
    """Whether a white band ``a:b`` narrower than a gutter still parts two columns of text: the
    columns beside it (``left:a`` and ``b:right``) are both wide and both full of lines, as in a
    two- or three-column index. Margin notes beside a paragraph (few rows on one side) and line
    numbers or table cells (a narrow side) are not parted by so narrow a band."""
    if a - left < config.wide_column * line_h or right - b < config.wide_column * line_h:
        return False
    bands_l = _bands(block[:, left:a], config.min_line_height)
    bands_r = _bands(block[:, b:right], config.min_line_height)
    few, many = sorted((len(bands_l), len(bands_r)))
    return few >= 4 and few >= 0.5 * many


def segment_lines(ink: np.ndarray, config: PagesConfig | None = None, rules: bool = True,
                  pictures: bool = True) -> list[Box]:
    """Line boxes of an ink mask, in reading order (columns left to right, then top to bottom).

    A recursive XY-cut: a block is cut at column gutters (white vertical bands at least ``gutter``
    line heights wide, with text on both sides), else at paragraph gaps, else at a gutter that only
    a line or two cross (a centred page number, an overfull line): those are cut off by the nearest
    blank rows, or the gutter is cut through. A block with no cut left is one column of text: its
    rows become lines, touching lines are parted at profile valleys, and a line is cut into
    segments at gaps over ``segment_gap`` line heights. Boxes taller than a few lines that no valley
    parts are pictures, not text, and are dropped (unless not ``pictures``); table rules are
    removed first (unless not ``rules``).
    """
    import numpy as np

    config = config or PagesConfig()
    if min(ink.shape) >= 400:
        # Columns and paragraphs of text more than ~16 pixels tall are found as well on a mask of
        # half the resolution, at a quarter of the cost; the lines of each block are then cut on
        # the full-resolution ink, where touching lines still show the valleys that part them.
        small = _halve(ink)
        clean = remove_rules(small, 20.0) if rules else small
        full = ink
        if clean is not small:  # the rules found at half resolution, off the full one
            gone = np.repeat(np.repeat(small & ~clean, 2, axis=0), 2, axis=1)
            full = ink & ~gone[:ink.shape[0], :ink.shape[1]]
        line_h = line_height(full, config.min_line_height)
        if line_h >= 16:
            half = dataclasses.replace(config, min_line_height=max(1, round(config.min_line_height / 2)))
            return [box for y0, y1, x0, x1 in _blocks(clean, line_h / 2, half)
                    for box in _block_lines(full[2 * y0:2 * y1, 2 * x0:2 * x1], 2 * y0, 2 * x0, line_h, config,
                                            pictures)]
    if rules:
        ink = remove_rules(ink)
    line_h = line_height(ink, config.min_line_height)
    if line_h == 0:
        return []
    return [box for y0, y1, x0, x1 in _blocks(ink, line_h, config)
            for box in _block_lines(ink[y0:y1, x0:x1], y0, x0, line_h, config, pictures)]


def _halve(mask: np.ndarray) -> np.ndarray:
    """A mask at half the resolution: a pixel is ink where any of its 2x2 block is."""
    import numpy as np

    h, w = mask.shape
    if h % 2 or w % 2:
        mask = np.pad(mask, ((0, h % 2), (0, w % 2)))
    rows = mask[0::2] | mask[1::2]
    # Two neighbouring bools read as one 16-bit word are non-zero when either is: no strided reads.
    return rows.view(np.uint16) != 0


def _blocks(ink: np.ndarray, line_h: float, config: PagesConfig) -> list[tuple[int, int, int, int]]:
    """The XY-cut of :func:`segment_lines` on a mask whose rules are gone: the blocks (y0, y1,
    x0, x1) that no cut parts any more, each one column of text, in reading order."""
    import numpy as np

    blocks: list[tuple[int, int, int, int]] = []
    min_gutter = config.gutter * line_h
    narrow = min(config.narrow_gutter, config.gutter) * line_h
    tolerance = 1.5 * line_h  # rows of ink a gutter may cross and still part two columns

    def candidates(block: np.ndarray, per_col: np.ndarray, limit: float) -> list[tuple[int, int, bool]]:
        """Bands of columns with at most ``limit`` ink pixels, wide enough for a gutter and inside
        the block, each with whether it parts table cells (:func:`_table_gap`) instead."""
        width = block.shape[1]
        found = []
        for wide in (True, False):
            least = min_gutter if wide else narrow
            bands = [(a, b) for a, b in _runs(per_col <= limit) if a > 0 and b < width and b - a >= least]
            for i, (a, b) in enumerate(bands):
                left, right = bands[i - 1][1] if i else 0, bands[i + 1][0] if i + 1 < len(bands) else width
                if wide:
                    found.append((a, b, _table_gap(block, a, b, left, right, line_h, config)))
                elif b - a < min_gutter and _full_columns(block, a, b, left, right, line_h, config):
                    found.append((a, b, False))
        return sorted(found)

    def gutters(block: np.ndarray, tolerant: bool) -> list[tuple[int, int, np.ndarray]]:
        """Vertical bands with text on both sides and no ink, or (``tolerant``) crossed by a few
        lines: at most ``tolerance`` ink pixels in any column, and a few percent of the rows."""
        per_col = np.count_nonzero(block, axis=0)
        clean = candidates(block, per_col, 0)
        tables = [(a, b) for a, b, table in clean if table]
        bands = candidates(block, per_col, tolerance) if tolerant else clean
        found = []
        for a, b, table in bands:
            # A tolerant band is wider than the clean one it holds (ragged line ends at its sides):
            # where that clean band parts table cells, so does this one.
            if table or any(a <= ta and tb <= b for ta, tb in tables):
                continue
            if tolerant:  # the emptiest stretch of it, not the ragged line ends at its sides
                width = min(math.ceil(min_gutter), b - a)
                sums = np.convolve(per_col[a:b], np.ones(width), mode="valid")
                a = a + int(np.argmin(sums))
                b = a + width
            crossed = block[:, a:b].any(axis=1)
            if crossed.sum() > (max(tolerance, 0.06 * block.shape[0]) if tolerant else 0):
                continue
            left, right = block[:, :a].any(axis=1), block[:, b:].any(axis=1)
            if (left & ~crossed).sum() >= 2 * line_h and (right & ~crossed).sum() >= 2 * line_h:
                found.append((a, b, crossed))
        return found

    def cut(y0: int, y1: int, x0: int, x1: int, depth: int) -> None:
        block = ink[y0:y1, x0:x1]
        rows, cols = block.any(axis=1), block.any(axis=0)
        if not rows.any():
            return
        r = np.flatnonzero(rows)
        c = np.flatnonzero(cols)
        y0, y1, x0, x1 = y0 + int(r[0]), y0 + int(r[-1]) + 1, x0 + int(c[0]), x0 + int(c[-1]) + 1
        block = ink[y0:y1, x0:x1]
        if depth < 40:
            clean = gutters(block, False)
            if clean:
                edges = [0] + [e for a, b, _ in clean for e in (a, b)] + [block.shape[1]]
                for a, b in zip(edges[::2], edges[1::2]):
                    cut(y0, y1, x0 + a, x0 + b, depth + 1)
                return
            blank = ~block.any(axis=1)
            hgaps = [(a, b) for a, b in _runs(blank) if b - a >= config.paragraph_gap * line_h]
            if hgaps:
                edges = [0] + [e for a, b in hgaps for e in (a, b)] + [block.shape[0]]
                for a, b in zip(edges[::2], edges[1::2]):
                    cut(y0 + a, y0 + b, x0, x1, depth + 1)
                return
            # A gutter crossed by a line or two needs columns of several lines beside it: in a
            # block of a line or two (big type), it would be the gaps between letters.
            crossed = gutters(block, True) if block.shape[0] >= 4 * line_h else []
            if crossed:
                a, b, rows_crossed = max(crossed, key=lambda g: g[1] - g[0])
                # Cut the crossing rows off at the nearest blank rows above and below, if any are near.
                cuts = set()
                for s, e in _runs(rows_crossed):
                    above = np.flatnonzero(blank[max(0, s - round(line_h)):s])
                    below = np.flatnonzero(blank[e:e + round(line_h)])
                    if len(above):
                        cuts.add(max(0, s - round(line_h)) + int(above[-1]) + 1)
                    if len(below):
                        cuts.add(e + int(below[0]))
                cuts = sorted(v for v in cuts if 0 < v < block.shape[0])
                if cuts:
                    edges = [0] + cuts + [block.shape[0]]
                    for s, e in zip(edges[:-1], edges[1:]):
                        cut(y0 + s, y0 + e, x0, x1, depth + 1)
                else:
                    cut(y0, y1, x0, x0 + a, depth + 1)
                    cut(y0, y1, x0 + b, x1, depth + 1)
                return
        blocks.append((y0, y1, x0, x1))

    cut(0, ink.shape[0], 0, ink.shape[1], 0)
    # A recursive closure is a reference cycle (cut -> its cell -> cut) holding this page's masks until
    # the cyclic GC happens to run: pages would pile up in memory. Emptying the cell breaks it.
    cut = None  # noqa: F841 - read through the closure cell, which this empties
    return blocks


def _block_lines(block: np.ndarray, y0: int, x0: int, line_h: float, config: PagesConfig,
                 pictures: bool) -> list[Box]:
    """The lines of one column of text (a block at ``y0, x0`` on the page): its rows, touching
    rows parted at profile valleys, each cut into segments at wide gaps."""
    import numpy as np

    boxes: list[Box] = []
    for band in _bands(block, config.min_line_height, keep_small=True):
        for a, b in _split_band(block, *band, line_h):
            line = block[a:b]
            h = b - a
            # Words of a bigger font stand further apart; a formula's height says nothing of that.
            reach = config.segment_gap * min(max(h, line_h), 2 * line_h)
            groups: list[list[int]] = []
            for s, e in _runs(line.any(axis=0)):
                if groups and s - groups[-1][1] < reach:
                    groups[-1][1] = e
                    groups[-1][2] += 1
                else:
                    groups.append([s, e, 1])
            for s, e, n in groups:
                rr = np.flatnonzero(line[:, s:e].any(axis=1))
                top, bottom = a + int(rr[0]), a + int(rr[-1]) + 1
                height = bottom - top
                if pictures and height > 3 * line_h and not _tall_text(line[top - a:bottom - a, s:e], line_h):
                    continue  # a picture or drawing, not a formula or a line of big type
                if height < config.min_line_height and n < 2:
                    continue  # a speck or a rule's end, not a small line such as "..."
                boxes.append((x0 + s, y0 + top, x0 + e, y0 + bottom))
    return boxes


def _tall_text(mask: np.ndarray, line_h: float) -> bool:
    """Whether ink taller than three lines is still one line of text: a row of a formula (glyphs
    of the page's size stacked: a tall bracket is narrow, a fraction bar flat) or of big type
    (letters no wider than the line is tall); a plot's curve is both wide and tall, a picture one
    piece or two. A row is at least twice as wide as it is tall, of three pieces or more."""
    height, width = mask.shape
    if width < 2 * height:
        return False
    pieces = _pieces_of(mask)
    small = 1.5 * line_h
    return len(pieces) >= 3 and all(w <= small or h <= small or w <= 1.5 * height for w, h in pieces)


def _pieces_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """Width and height of every connected piece of ink (8-connected), from its runs of ink."""
    rows, cols, lengths = (v.tolist() for v in _row_runs(mask))
    ends = [c + n for c, n in zip(cols, lengths)]
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = {}  # row -> index of its first run (runs come row by row, left to right)
    for i, r in enumerate(rows):
        first.setdefault(r, i)
    for r, i in first.items():
        j = first.get(r + 1)
        if j is None:
            continue
        i_end, j_end = j, next((k for k in range(j, len(rows)) if rows[k] != r + 1), len(rows))
        while i < i_end and j < j_end:  # runs of neighbouring rows that touch (diagonals too) are one piece
            if cols[i] <= ends[j] and cols[j] <= ends[i]:
                parent[root(i)] = root(j)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    extent: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        e = extent.setdefault(root(i), [r, r, cols[i], ends[i]])
        e[0], e[1], e[2], e[3] = min(e[0], r), max(e[1], r), min(e[2], cols[i]), max(e[3], ends[i])
    return [(x1 - x0, y1 - y0 + 1) for y0, y1, x0, x1 in extent.values()]


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


def _profile_peaks(ink: np.ndarray, strips: int = 8) -> int:
    """How sharply the ink's rows peak, in vertical strips: the sum of the squared row counts,
    which lines running across the page (ink rows, then blank rows) make large."""
    import numpy as np

    width = ink.shape[1]
    total = 0
    for i in range(strips):
        profile = np.count_nonzero(ink[:, i * width // strips:(i + 1) * width // strips], axis=1).astype(np.int64)
        total += int(np.dot(profile, profile))
    return total


def _ascent(ink: np.ndarray) -> float:
    """How much more ink stands above the lines' cores than hangs below them (ascenders and
    capitals against descenders): over 1 for upright Latin text, under 1 for text upside down."""
    import numpy as np

    ink = remove_rules(ink)
    line_h = line_height(ink)
    above = below = 1
    for a, b in _bands(ink, 6):
        if not 0.5 * line_h <= b - a <= 2 * line_h:
            continue
        profile = np.count_nonzero(ink[a:b], axis=1)
        core = np.flatnonzero(profile >= 0.5 * profile.max())
        above += int(profile[:core[0]].sum())
        below += int(profile[core[-1] + 1:].sum())
    return above / below


def text_turn(ink: np.ndarray) -> int:
    """Degrees to turn a page by (counter-clockwise, as PIL's ``rotate``) so its text runs across
    it: 0 for a page read as it is; 90 or 270 for one whose lines run up or down it (a table
    printed sideways, a landscape page in a portrait document). Lines make the ink's profile
    across them peak sharply; a page may turn when its columns peak much more than its rows
    (measured: 0.57-0.58 row/column ratio on sideways pages, 0.82 or more on the others), and
    turns by the quarter that stands its letters' ascenders up (:func:`_ascent`), if that quarter
    stands them up clearly better than the page as it is."""
    import numpy as np

    small = _halve(_halve(ink)) if min(ink.shape) >= 400 else ink
    if _profile_peaks(small) >= 0.7 * _profile_peaks(np.ascontiguousarray(small.T)):
        return 0
    # Columns also peak in a dense grid of short cells (numbers under numbers): turned text is
    # only text when its letters then stand upright, much more so than the page's as it is
    # (sideways pages: 1.9-2.4 turned, 0.0-1.0 as they are; digits have no ascenders either way).
    ascent = {turn: _ascent(np.ascontiguousarray(np.rot90(ink, turn // 90))) for turn in (90, 270)}
    best = max(ascent, key=ascent.get)
    return best if ascent[best] >= max(1.5, 1.5 * _ascent(ink)) else 0


def page_lines(page: Page, config: PagesConfig | None = None) -> list[Line]:
    """The text lines of a page with their crops (taken from the page turned upright and
    straightened); boxes are on the page as loaded."""
    import numpy as np

    config = config or PagesConfig()
    gray = page.image
    hist = gray.histogram()
    ink = binarize(np.asarray(gray), hist)
    turn = text_turn(ink) if config.orientation else 0
    if not turn:
        return _upright_lines(page.index, gray, hist, ink, config)
    upright = gray.rotate(turn, expand=True)  # a quarter turn: exact, no resampling
    lines = _upright_lines(page.index, upright, hist, np.ascontiguousarray(np.rot90(ink, turn // 90)), config)

    def back(to_upright: Callable[[Box], Box]) -> Callable[[Box], Box]:
        return lambda b: _rotate_box_back(to_upright(b), turn, upright.size, gray.size)

    return [Line(ln.page, _rotate_box_back(ln.box, turn, upright.size, gray.size), ln.image, back(ln.to_page))
            for ln in lines]


def _upright_lines(index: int, gray: Image.Image, hist: list[int], ink: np.ndarray, config: PagesConfig) -> list[Line]:
    """:func:`page_lines` of a page whose text runs across it."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(gray)
    angle = estimate_skew(ink, config.max_skew_degrees) if config.deskew else 0.0
    work = gray
    if abs(angle) >= 0.1:
        work = gray.rotate(-angle, resample=Image.BILINEAR, expand=True, fillcolor=255)
        hist = work.histogram()
        arr = np.asarray(work)
        ink = binarize(arr, hist)
    work_arr = arr
    if config.detector == "ppocr":
        from inkbooth.ocr import detect

        found = detect.detect_lines(work_arr, ink, min_line_height=config.min_line_height)
    else:
        found = segment_lines(ink, config)
    background = _paper_level(hist)
    lines = []
    for box in found:
        if is_picture(work_arr[box[1]:box[3], box[0]:box[2]], background):
            continue
        h = box[3] - box[1]
        pad = max(1, round(config.line_padding * h))
        crop_box = (max(0, box[0] - pad), max(0, box[1] - pad), min(work.width, box[2] + pad),
                    min(work.height, box[3] + pad))
        crop = work.crop(crop_box).convert("RGB")
        to_page = _crop_mapper(crop_box[:2], angle, work, gray)
        in_crop = (box[0] - crop_box[0], box[1] - crop_box[1], box[2] - crop_box[0], box[3] - crop_box[1])
        lines.append(Line(index, to_page(in_crop), crop, to_page))
    return lines


def _crop_mapper(origin: tuple[int, int], angle: float, work: Image.Image, page: Image.Image) -> Callable[[Box], Box]:
    """A function mapping crop-pixel boxes to page-pixel boxes."""
    ox, oy = origin
    # Sizes only: a line kept for recognition must not keep its whole page image alive.
    rotated, work_size, page_size = work is not page, work.size, page.size

    def to_page(b: Box) -> Box:
        shifted = (b[0] + ox, b[1] + oy, b[2] + ox, b[3] + oy)
        if not rotated:
            return tuple(int(v) for v in shifted)
        return _rotate_box_back(shifted, -angle, work_size, page_size)

    return to_page


def document_lines(source: bytes | str | os.PathLike[str], name: str,
                   config: PagesConfig | None = None) -> Iterator[Line]:
    """Every line of every page of a document, a page at a time (a page is let go once cut)."""
    for page in load_pages(source, name, config):
        lines = page_lines(page, config)
        del page
        yield from lines


def describe(lines: list[Line]) -> list[dict[str, Any]]:
    return [{"page": ln.page, "box": list(ln.box)} for ln in lines]
