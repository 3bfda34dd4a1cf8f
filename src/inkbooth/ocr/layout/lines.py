"""A page to its text-line crops: orientation, skew, the line finder, and boxes mapped back.

A page is binarised, turned a quarter when its text runs up or down it, straightened when
slightly skewed, and cut into lines by the XY-cut (``segment``) or the learned detector
(``detect``), as ``PagesConfig.detector`` chooses. Every line keeps its box in the coordinates of
the page as loaded (pixels at the render DPI for PDFs).

May import ``inkbooth.ocr.documents`` and the other layout modules.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from inkbooth.ocr.documents.pages import Page, PagesConfig, load_pages
from inkbooth.ocr.layout import detect
from inkbooth.ocr.layout.ink import (
    _paper_level,
    binarize,
    dark_panels,
    estimate_skew,
    is_picture,
    panel_as_paper,
)
from inkbooth.ocr.layout.segment import Box, _bands, _halve, line_height, remove_rules, segment_lines

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@dataclasses.dataclass
class Line:
    """A text line (or segment of one) on a page, with its crop."""

    page: int
    box: Box
    image: Image.Image
    # Maps a box in crop pixels to page pixels (the crop may come from the straightened page).
    to_page: Callable[[Box], Box] = dataclasses.field(repr=False, default=lambda b: b)


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
    straightened, dark panels' light text turned dark on light); boxes are on the page as loaded."""
    import numpy as np
    from PIL import Image

    config = config or PagesConfig()
    gray = page.image
    hist = gray.histogram()
    ink = binarize(np.asarray(gray), hist)
    panels = dark_panels(np.asarray(gray), ink, min_height=2 * config.min_line_height) if config.light_on_dark else []
    if panels:  # light text on dark bands: the bands turned to dark text on light, as the reader reads
        arr = np.array(gray)
        for x0, y0, x1, y1 in panels:
            arr[y0:y1, x0:x1] = panel_as_paper(arr[y0:y1, x0:x1], ink[y0:y1, x0:x1], config.min_line_height)
        gray = Image.fromarray(arr)
        hist = gray.histogram()
        ink = binarize(arr, hist)
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
        found = detect.detect_lines(work_arr, ink, min_line_height=config.min_line_height)
    else:
        found = segment_lines(ink, config)
    background = _paper_level(hist)
    lines = []
    for box in found:
        if is_picture(work_arr[box[1]:box[3], box[0]:box[2]], background) or is_figure_piece(ink, box, config):
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


def is_figure_piece(ink: np.ndarray, box: Box, config: PagesConfig) -> bool:
    """Whether a box the line finder gave is a piece of a drawing rather than text: mostly solid ink
    (a bar, a filled marker, a box's rounded corner: text's strokes fill half its box or less), or a
    speck hardly taller than the shortest line and not much wider than tall (a tick, a dot), or a row
    of solid bars."""
    import numpy as np

    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = y1 - y0, x1 - x0
    if h <= 0 or w <= 0:
        return True
    if h < 1.5 * config.min_line_height and w < 2 * h:
        return True
    if h < 1.5 * config.min_line_height:
        return False  # as flat as a dash or a minus (a table's empty cell): text, however solid
    region = ink[y0:y1, x0:x1]
    if float(region.mean()) >= 0.75:
        return True
    # A row of bars (a matrix drawn as cells, a bar code, a plot's ticks): nearly every inked column
    # is ink from top to bottom. In text only stems are (I, l, 1, |), a share far below this.
    inked = region.any(axis=0)
    solid = region.mean(axis=0) >= 0.9
    if inked.sum() >= 2 * h and solid.sum() >= 0.7 * inked.sum():
        starts = np.flatnonzero(solid[1:] & ~solid[:-1]).size + int(solid[0])
        if starts >= 5:
            return True
    return _is_row_of_marks(region)


def _is_row_of_marks(region: np.ndarray) -> bool:
    """A row of three or more like marks at one pitch, each as wide as tall and as tall as the row
    (a slide's navigation circles, the current one filled; a row of check boxes): of any two, one
    lies within the other, to a pixel. Text has words, so its gaps are not all one width, and its
    letters differ (o, n and c are one size, but none lies within another but c within o)."""
    import numpy as np
    from scipy import ndimage

    labels, count = ndimage.label(region, structure=np.ones((3, 3)))
    if count < 3:
        return False
    boxes = sorted(ndimage.find_objects(labels), key=lambda sl: sl[1].start)
    heights = np.array([sl[0].stop - sl[0].start for sl in boxes])
    widths = np.array([sl[1].stop - sl[1].start for sl in boxes])
    gaps, h = np.array([b[1].start - a[1].stop for a, b in zip(boxes, boxes[1:])]), region.shape[0]
    if not ((heights >= 0.8 * h).all() and (np.abs(widths - heights) <= 0.15 * heights + 1).all()
            and np.ptp(heights) <= 0.1 * h + 1 and np.ptp(gaps) <= 0.1 * h + 1):
        return False
    size = (int(heights.max()), int(widths.max()))
    marks = []
    for sl in boxes:
        mark = np.zeros(size, dtype=bool)
        piece = region[sl]
        mark[:piece.shape[0], :piece.shape[1]] = piece
        marks.append((mark, ndimage.binary_dilation(mark, np.ones((3, 3)))))

    def within(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
        return (a[0] & ~b[1]).sum() <= 0.05 * a[0].sum()

    return all(within(a, b) or within(b, a) for i, a in enumerate(marks) for b in marks[i + 1:])


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
