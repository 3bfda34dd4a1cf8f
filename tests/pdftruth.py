"""Ground truth for segmentation: the lines of a PDF page, from its own text layer (pdfium).

**What a line is.** TrOCR reads one line of text per crop, so a true line is a crop TrOCR can read
as one line: glyphs that follow one another along one baseline, left to right. From the text layer:

1.-3. Glyphs are put in rows, rows cut into runs, and runs linked into lines by the rules in
   :mod:`inkbooth.ocr.documents.textlayer` (its docstring), which the labelled-lines stage
   (``pdf-lines``) uses too: a built-up formula's stacked parts are one line with it.
4. Words a little apart (table columns, tab stops, badly stretched lines) can be read as one line
   or as pieces, and both are right for TrOCR: gaps of ``low`` em or more (1.5) part *pieces*,
   the true units that are counted, and gaps under ``high`` em (2.5) still join pieces into one
   *row*. A predicted box may match one piece or several neighbouring pieces of one row together
   (:func:`score`); pieces of different rows are never one line.

5. Only text along the page's main direction (that of most of its glyphs) is a line: across the
   page as displayed for most pages; up or down the page for a table or landscape page printed
   sideways, which is read turned by a quarter (as ``layout.lines.text_turn`` turns it), its lines tall
   thin boxes on the page as displayed. Text at another angle (a running head set vertically
   beside upright text) would need turning of its own before TrOCR reads it; a predicted box
   inside it is neither true nor false.

Boxes are the tight union of the glyph boxes, in render pixels, the page's /Rotate applied.
Rules 1-3 and 5 live in ``inkbooth.ocr.documents.textlayer`` (``text_runs``, ``join_runs``), which
also cuts the labelled training lines of born-digital PDFs (``inkbooth pdf-lines``) the same way.
Figures that may hold text the text layer lacks (:func:`drawing_regions`: vector drawings, whose
labels are often outlines, and raster line art) are left out the same way; photos are not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from inkbooth.ocr.documents.textlayer import HIGH, LOW, Box, join_runs, text_runs, to_display

EVALSET = Path(__file__).resolve().parent / "evalset.tsv"


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
    found = text_runs(page, dpi, low)
    runs, back = found.runs, found.back
    pieces = join_runs(runs, low)
    rows = join_runs(runs, high)
    boxes = [back(box) for box, _ in pieces]
    where = {}  # run index -> row number
    for r, (_, members) in enumerate(rows):
        for i in members:
            where[i] = r
    grouped: dict[int, list[int]] = {}
    for p, (_, members) in enumerate(pieces):
        grouped.setdefault(where[members[0]], []).append(p)
    return PageTruth(boxes, [sorted(g, key=lambda p: boxes[p][0]) for g in grouped.values()],
                     [back(box) for box, _ in join_runs(found.turned, low)])


def pdf_line_boxes(page, dpi: int, segment_gap: float = 2.0) -> list[Box]:
    """Line boxes of a page with one gap (in ems) parting a row, no pieces: the simple reading."""
    found = text_runs(page, dpi, segment_gap)
    return [found.back(box) for box, _ in join_runs(found.runs, segment_gap)]


def drawing_regions(page, dpi: int) -> list[Box]:
    """Boxes (render pixels) of figures that may hold text the text layer lacks: vector drawings
    (form objects holding paths but no image), whose labels are often outlines, and raster line
    art (images that are mostly paper, such as a plot saved as a PNG), whose labels are pixels.

    A box found there is neither a true nor a false line, so scoring leaves it out. Photos (images
    that are not mostly paper) are not left out: a photo cut into "lines" is an error.
    """
    import numpy as np
    import pypdfium2.raw as raw

    convert = to_display(page, dpi)
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
