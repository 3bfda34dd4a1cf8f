"""Ground truth for segmentation: the lines of a PDF page, from its own text layer (pdfium).

**What a line is.** TrOCR reads one line of text per crop, so a true line is a crop TrOCR can read
as one line: glyphs that follow one another along one baseline, left to right. From the text layer:

1. Glyphs (pdfium's tight glyph boxes; spaces skipped) of one text-layer rectangle (a run of one
   font, sometimes several lines of a paragraph long) are put in rows, a new row starting where the
   text goes back left to a glyph outside the row's height; a row is cut into runs at gaps wider
   than the gap below.
2. Two runs are on one line when (a) they are near in the text layer (at most 3 rectangles apart:
   the same row of the next column comes a whole column later, so lines never join across a
   gutter, however narrow); (b) the gap between them is under ``gap`` times the larger font size
   (em, from the PDF, so it does not depend on which letters a word has); and (c) they sit on one
   line: their baselines (pdfium's glyph origins) are less than half an em apart (the same
   baseline, or a sub- or superscript on it), or they share their height (more than half the
   smaller run's height, 0.3 of it when that run is much smaller: a limit, text inside a tall
   delimiter), or one is stacked on the other less than 0.4 em above or below it, its centre
   within the other's width: one small glyph on a glyph or two (a symbol drawn as '<' over '~',
   a degree sign over a dot), or a few glyphs of a script's size on a short run (the limits of
   a sum).
3. A line is a connected group of runs so linked. So the stacked parts of a built-up formula
   (fraction parts, limits, scripts, all inside its delimiters) are one line with the formula: cut
   into its stacked rows, it leaves crops that no one reads as text.
4. Words a little apart (table columns, tab stops, badly stretched lines) can be read as one line
   or as pieces, and both are right for TrOCR: gaps of ``low`` em or more (1.5) part *pieces*,
   the true units that are counted, and gaps under ``high`` em (2.5) still join pieces into one
   *row*. A predicted box may match one piece or several neighbouring pieces of one row together
   (:func:`score`); pieces of different rows are never one line.

5. Only text along the page's main direction (that of most of its glyphs) is a line: across the
   page as displayed for most pages; up or down the page for a table or landscape page printed
   sideways, which is read turned by a quarter (as ``pages.text_turn`` turns it), its lines tall
   thin boxes on the page as displayed. Text at another angle (a running head set vertically
   beside upright text) would need turning of its own before TrOCR reads it; a predicted box
   inside it is neither true nor false.

Boxes are the tight union of the glyph boxes, in render pixels, the page's /Rotate applied.
Figures that may hold text the text layer lacks (:func:`drawing_regions`: vector drawings, whose
labels are often outlines, and raster line art) are left out the same way; photos are not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

EVALSET = Path(__file__).resolve().parent / "evalset.tsv"


def _to_display(page, dpi: int):
    """A function mapping a PDF-space box (left, bottom, right, top) to render pixels (x0, y0, x1, y1),
    the page's /Rotate applied as pdfium renders it."""
    scale = dpi / 72.0
    rotation = page.get_rotation()
    w, h = page.get_size()
    if rotation in (90, 270):
        w, h = h, w  # get_size is the displayed size; glyph boxes are in the unrotated page

    def convert(box):
        left, bottom, right, top = box
        if rotation == 90:
            x0, y0, x1, y1 = bottom, left, top, right
        elif rotation == 180:
            x0, y0, x1, y1 = w - right, bottom, w - left, top
        elif rotation == 270:
            x0, y0, x1, y1 = h - top, w - right, h - bottom, w - left
        else:
            x0, y0, x1, y1 = left, h - top, right, h - bottom
        return x0 * scale, y0 * scale, x1 * scale, y1 * scale

    return convert


LOW, HIGH = 1.5, 2.5  # ems: gaps that part pieces, and gaps that still join pieces into a row

Box = tuple[float, float, float, float]


@dataclasses.dataclass
class PageTruth:
    """The true lines of a page: ``pieces`` (the units counted) and ``rows``, the indices of the
    pieces that one row of text holds, left to right (one piece for most rows)."""

    pieces: list[Box]
    rows: list[list[int]]
    ignore: list[Box] = dataclasses.field(default_factory=list)  # text off the page's main direction

    @classmethod
    def of_boxes(cls, boxes) -> PageTruth:
        """Truth where every box is a whole row (composed test pages)."""
        return cls([tuple(b) for b in boxes], [[i] for i in range(len(boxes))])


def page_truth(page, dpi: int, low: float = LOW, high: float = HIGH) -> PageTruth:
    """The true lines of a pypdfium2 page at ``dpi`` (render pixels), by the rule above."""
    runs, turned, back = _runs_of(page, dpi, low)
    pieces = _join_runs(runs, low)
    rows = _join_runs(runs, high)
    boxes = [back(box) for box, _ in pieces]
    where = {}  # run index -> row number
    for r, (_, members) in enumerate(rows):
        for i in members:
            where[i] = r
    grouped: dict[int, list[int]] = {}
    for p, (_, members) in enumerate(pieces):
        grouped.setdefault(where[members[0]], []).append(p)
    return PageTruth(boxes, [sorted(g, key=lambda p: boxes[p][0]) for g in grouped.values()],
                     [back(box) for box, _ in _join_runs(turned, low)])


def pdf_line_boxes(page, dpi: int, segment_gap: float = 2.0) -> list[Box]:
    """Line boxes of a page with one gap (in ems) parting a row, no pieces: the simple reading."""
    runs, _, back = _runs_of(page, dpi, segment_gap)
    return [back(box) for box, _ in _join_runs(runs, segment_gap)]


def _runs_of(page, dpi: int, gap: float) -> tuple[list[list], list[list], Callable]:
    """Runs ``[x0, y0, x1, y1, rectangle index, em, glyphs, baseline]`` of a page's text layer, cut at ``gap``
    ems: those of text along the page's main direction (across the page as displayed, or up or
    down a page printed sideways) and those of text at another angle, both in the frame where the
    main direction runs left to right; and the function mapping a box in that frame back to the
    page as displayed."""
    import ctypes
    import math

    import pypdfium2.raw as raw

    convert = _to_display(page, dpi)
    tp = page.get_textpage()
    px = dpi / 72.0
    turn = math.radians(page.get_rotation())
    ox, oy = ctypes.c_double(), ctypes.c_double()
    found = []  # (display box, quarter turn of the glyph or None, pdf centre, em, display origin)
    for i in range(tp.count_chars()):
        ch = tp.get_text_range(i, 1)
        if not ch or ch.isspace():
            continue
        left, bottom, right, top = tp.get_charbox(i)
        if right > left and top > bottom:
            angle = (raw.FPDFText_GetCharAngle(tp.raw, i) + turn) % (2 * math.pi)
            quarter = round(angle / (math.pi / 2))
            raw.FPDFText_GetCharOrigin(tp.raw, i, ctypes.byref(ox), ctypes.byref(oy))
            found.append((convert((left, bottom, right, top)),
                          quarter % 4 if abs(angle - quarter * math.pi / 2) < 0.05 else None,
                          ((left + right) / 2, (bottom + top) / 2), raw.FPDFText_GetFontSize(tp.raw, i) * px,
                          convert((ox.value, oy.value, ox.value, oy.value))[:2]))
    main = _main_quarter(found)
    to_frame, _ = _turner(page, dpi, main)
    # In the frame where the page's main direction runs left to right (render pixels, y down):
    # (centre x, centre y, x0, y0, x1, y1, pdf centre x, pdf centre y, em, along the main direction,
    # baseline y)
    glyphs = []
    for box, quarter, (pcx, pcy), em, origin in found:
        x0, y0, x1, y1 = to_frame(box)
        glyphs.append(((x0 + x1) / 2, (y0 + y1) / 2, x0, y0, x1, y1, pcx, pcy, em, quarter == main,
                       to_frame((*origin, *origin))[1]))
    runs: list[list] = []
    turned: list[list] = []
    for j in range(tp.count_rects()):
        left, bottom, right, top = tp.get_rect(j)
        inside = [g for g in glyphs if left - 0.5 <= g[6] <= right + 0.5 and bottom - 0.5 <= g[7] <= top + 0.5]
        for level, out in ((True, runs), (False, turned)):
            for row in _glyph_rows([g for g in inside if g[9] is level]):
                out.extend(_pieces(row, gap, j))
    return runs, turned, _turner(page, dpi, main)[1]


def _main_quarter(found: list) -> int:
    """The quarter turn (0-3, counter-clockwise) of most of a page's glyphs: 0 for a page read as
    it is, 1 or 3 for a table or a landscape page printed sideways."""
    counts = [0, 0, 0, 0]
    for _, quarter, *_ in found:
        if quarter is not None:
            counts[quarter] += 1
    return max(range(4), key=lambda q: (counts[q], q == 0))


def _turner(page, dpi: int, quarter: int):
    """Functions mapping a display box (render pixels) into the frame where text turned by
    ``quarter`` quarter turns runs left to right (the page as a reader turns it), and back."""
    scale = dpi / 72.0
    w, h = (v * scale for v in page.get_size())  # the displayed size

    def corners(f):
        def convert(box):
            (ax, ay), (bx, by) = f(box[0], box[1]), f(box[2], box[3])
            return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)
        return convert

    if quarter == 1:  # text running up the page: turn the page a quarter clockwise
        return corners(lambda x, y: (h - y, x)), corners(lambda u, v: (v, h - u))
    if quarter == 2:
        return corners(lambda x, y: (w - x, h - y)), corners(lambda u, v: (w - u, h - v))
    if quarter == 3:  # text running down the page: turn it a quarter counter-clockwise
        return corners(lambda x, y: (y, w - x)), corners(lambda u, v: (w - v, u))
    return (lambda box: tuple(box)), (lambda box: tuple(box))


def _glyph_rows(glyphs: list) -> list[list]:
    """Glyphs of one text-layer rectangle, in text order, in rows: a row ends where the text goes
    back left to a glyph outside its height (the next line); a glyph that goes on rightwards
    stays, even below the row (an underscore)."""
    rows: list[list] = []
    top = bottom = 0.0
    for g in glyphs:
        if rows and not (g[0] < rows[-1][-1][0] and not top <= g[1] <= bottom):
            rows[-1].append(g)
            top, bottom = min(top, g[3]), max(bottom, g[5])
        else:
            rows.append([g])
            top, bottom = g[3], g[5]
    return rows


def _pieces(row: list, gap: float, index: int) -> list[list]:
    """A row of glyphs cut where a gap is ``gap`` font sizes or more."""
    out = []
    piece: list = []
    for g in sorted(row, key=lambda g: g[2]) + [None]:
        if piece and g is not None and g[2] - max(p[4] for p in piece) < gap * max(g[8], piece[-1][8]):
            piece.append(g)
            continue
        if piece:
            out.append([min(p[2] for p in piece), min(p[3] for p in piece), max(p[4] for p in piece),
                        max(p[5] for p in piece), index, max(p[8] for p in piece), len(piece),
                        sorted(p[10] for p in piece)[len(piece) // 2]])
        piece = [g] if g is not None else []
    return out


def _same_line(a, b, gap: float) -> bool:
    """Whether two runs are neighbours on one line (rule 2 above)."""
    if abs(a[4] - b[4]) > 3:
        return False  # not neighbours in the text: e.g. the same row of the next column
    if max(a[0], b[0]) - min(a[2], b[2]) >= gap * max(a[5], b[5]):
        return False
    if abs(a[7] - b[7]) < 0.5 * max(a[5], b[5]):
        return True  # one baseline, or a sub- or superscript on it
    small, large = sorted((a[3] - a[1], b[3] - b[1]))
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    # a script, a limit or what a tall delimiter encloses shares less of its height with its line
    if overlap > (0.3 if small < 0.75 * large else 0.5) * small:
        return True
    return _stacked(a, b) or _stacked(b, a)


def _stacked(mark, other) -> bool:
    """Whether ``mark`` sits on ``other`` as part of one symbol or formula: above or below it,
    less than 0.4 em away, its centre within ``other``'s width, and either one small glyph (at
    most half an em tall: a dot, a degree sign, a bar, a tilde) on a glyph or two (a symbol drawn
    as two glyphs, such as '<' over '~'), or a few glyphs of a script's size on a short run (the
    limits of a sum or of 'lim')."""
    em = max(mark[5], other[5])
    if not other[0] <= (mark[0] + mark[2]) / 2 <= other[2]:
        return False
    small_glyph = mark[6] == 1 and other[6] <= 2 and mark[3] - mark[1] <= 0.5 * em
    limit = mark[5] <= 0.85 * other[5] and mark[6] <= 4 and other[6] <= 3
    if not (small_glyph or limit):
        return False
    return max(mark[1] - other[3], other[1] - mark[3]) < 0.4 * em


def _join_runs(runs: list, gap: float) -> list[tuple[Box, list[int]]]:
    """The connected groups of runs that :func:`_same_line` links: (box, run indices), top to bottom."""
    parent = list(range(len(runs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_rect: dict[int, list[int]] = {}
    for i, run in enumerate(runs):
        by_rect.setdefault(run[4], []).append(i)
    for i, run in enumerate(runs):
        for j in range(run[4] - 3, run[4] + 4):
            for k in by_rect.get(j, ()):
                if k > i and _same_line(run, runs[k], gap):
                    parent[root(k)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(runs)):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        box = (min(runs[i][0] for i in members), min(runs[i][1] for i in members),
               max(runs[i][2] for i in members), max(runs[i][3] for i in members))
        out.append((box, members))
    return sorted(out, key=lambda g: (g[0][1], g[0][0]))


def drawing_regions(page, dpi: int) -> list[Box]:
    """Boxes (render pixels) of figures that may hold text the text layer lacks: vector drawings
    (form objects holding paths but no image), whose labels are often outlines, and raster line
    art (images that are mostly paper, such as a plot saved as a PNG), whose labels are pixels.

    A box found there is neither a true nor a false line, so scoring leaves it out. Photos (images
    that are not mostly paper) are not left out: a photo cut into "lines" is an error.
    """
    import numpy as np
    import pypdfium2.raw as raw

    convert = _to_display(page, dpi)
    out = []
    for obj in page.get_objects(max_depth=0):
        if obj.type == raw.FPDF_PAGEOBJ_FORM:
            kinds = {raw.FPDFPageObj_GetType(raw.FPDFFormObj_GetObject(obj.raw, i))
                     for i in range(raw.FPDFFormObj_CountObjects(obj.raw))}
            if raw.FPDF_PAGEOBJ_PATH in kinds and raw.FPDF_PAGEOBJ_IMAGE not in kinds:
                out.append(convert(obj.get_bounds()))
        elif obj.type == raw.FPDF_PAGEOBJ_IMAGE:
            pixels = np.asarray(obj.get_bitmap(render=True).to_pil().convert("L"))
            if pixels.size and (pixels >= 200).mean() >= 0.5:
                out.append(convert(obj.get_bounds()))
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def recall(truth, predicted, threshold: float = 0.7) -> tuple[float, list]:
    """Share of true boxes matched by a predicted box with IoU >= threshold, and the misses."""
    misses = [t for t in truth if max((iou(t, p) for p in predicted), default=0.0) < threshold]
    return (1 - len(misses) / len(truth)) if truth else 1.0, misses


@dataclasses.dataclass
class EvalDoc:
    """One document of the evaluation set (tests/evalset.tsv)."""

    name: str
    package: str
    path: str
    sha256: str
    pages: list[int]  # 0-based page indices
    quick: list[int]  # 0-based, the pages the default suite checks
    layouts: str

    @property
    def filename(self) -> str:
        return Path(self.path).name


def _page_list(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a) - 1, int(b or a)))
    return out


def evalset() -> list[EvalDoc]:
    """The documents of the segmentation evaluation set."""
    docs = []
    for line in EVALSET.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, package, path, sha, pages, quick, layouts = line.split("\t")
        docs.append(EvalDoc(name, package, path, sha, _page_list(pages), _page_list(quick), layouts))
    return docs


def _inside(a, b) -> float:
    """Share of box a's area that lies inside box b."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0


@dataclasses.dataclass
class Score:
    """Line detection counts against ground truth at one IoU threshold; they add up over pages."""

    truth: int = 0  # true pieces
    predicted: int = 0
    matched: int = 0  # true pieces found (alone, or with neighbours of their row in one box)
    hits: int = 0  # predicted boxes that found pieces
    merged: int = 0  # predicted boxes holding most of two or more rows
    split: int = 0  # true pieces not found and cut into two or more predicted boxes

    def __iadd__(self, other: Score) -> Score:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 1.0

    @property
    def precision(self) -> float:
        return self.hits / self.predicted if self.predicted else 1.0


def _union(boxes) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def score(truth, predicted, threshold: float = 0.5, ignore=()) -> Score:
    """One-to-one matching of predicted boxes to true lines at IoU >= threshold, best pairs first.

    ``truth`` is a :class:`PageTruth` (or a list of boxes, each a whole row). A predicted box
    matches one piece, or a run of neighbouring pieces of one row taken together, each piece used
    once. A predicted box that matches nothing and lies mostly inside an ``ignore`` region is not
    counted.
    """
    if not isinstance(truth, PageTruth):
        truth = PageTruth.of_boxes(truth)
    pieces = truth.pieces
    used_t, used_p = match(truth, predicted, threshold)
    ignore = list(ignore) + truth.ignore
    dropped = {j for j, p in enumerate(predicted) if j not in used_p and any(_inside(p, r) >= 0.5 for r in ignore)}
    kept = [p for j, p in enumerate(predicted) if j not in dropped]
    rows = [_union([pieces[p] for p in row]) for row in truth.rows]
    merged = sum(1 for p in kept if sum(_inside(r, p) >= 0.6 for r in rows) >= 2)
    split = sum(1 for i, t in enumerate(pieces) if i not in used_t and sum(_inside(p, t) >= 0.6 for p in kept) >= 2)
    return Score(len(pieces), len(kept), len(used_t), len(used_p), merged, split)


def match(truth: PageTruth, predicted, threshold: float = 0.5) -> tuple[set[int], set[int]]:
    """The true pieces and the predicted boxes that :func:`score` pairs up (greedy, best IoU first)."""
    pieces = truth.pieces
    candidates = []  # (box, piece indices): every run of neighbouring pieces of a row
    for row in truth.rows:
        for a in range(len(row)):
            for b in range(a + 1, len(row) + 1):
                members = row[a:b]
                candidates.append((_union([pieces[p] for p in members]), members))
    pairs = sorted(((iou(c, p), i, j) for i, (c, _) in enumerate(candidates) for j, p in enumerate(predicted)
                    if c[0] < p[2] and p[0] < c[2] and c[1] < p[3] and p[1] < c[3]), reverse=True)
    used_t: set[int] = set()
    used_p: set[int] = set()
    for value, i, j in pairs:
        if value < threshold:
            break
        members = candidates[i][1]
        if j not in used_p and not used_t.intersection(members):
            used_t.update(members)
            used_p.add(j)
    return used_t, used_p
