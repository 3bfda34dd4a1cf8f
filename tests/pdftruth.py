"""Line boxes of a PDF page from its own text layer (pdfium), as ground truth for segmentation.

pdfium's text rectangles are runs of one font (sometimes spanning several lines of a paragraph), so
their glyphs are first put in rows, then runs that share a row are sorted left to right and joined
where the gap between them is under the segmenter's segment gap (in line heights) and they follow
each other in the text layer (the same row of the next column never does). Boxes are the tight
union of the glyph boxes, in render pixels, with the page's rotation applied.
"""

from __future__ import annotations

import dataclasses
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


def pdf_line_boxes(page, dpi: int, segment_gap: float = 2.0) -> list[tuple[float, float, float, float]]:
    """Line boxes (render pixels at ``dpi``) of a pypdfium2 page, from its text layer."""
    convert = _to_display(page, dpi)
    tp = page.get_textpage()
    glyphs = []  # (centre x, centre y, x0, y0, x1, y1) in render pixels, y down
    for i in range(tp.count_chars()):
        ch = tp.get_text_range(i, 1)
        if not ch or ch.isspace():
            continue
        left, bottom, right, top = tp.get_charbox(i)
        if right > left and top > bottom:
            x0, y0, x1, y1 = convert((left, bottom, right, top))
            glyphs.append(((x0 + x1) / 2, (y0 + y1) / 2, x0, y0, x1, y1, (left + right) / 2, (bottom + top) / 2))
    runs = []
    for j in range(tp.count_rects()):
        left, bottom, right, top = tp.get_rect(j)
        inside = [g for g in glyphs if left - 0.5 <= g[6] <= right + 0.5 and bottom - 0.5 <= g[7] <= top + 0.5]
        for row in _glyph_rows(inside):
            runs.extend(_pieces(row, segment_gap, j))

    # rows: runs whose vertical extents overlap by more than half the smaller height
    rows: list[list[list[float]]] = []
    for run in sorted(runs, key=lambda r: r[3] - r[1], reverse=True):
        for row in rows:
            top, bottom = min(r[1] for r in row), max(r[3] for r in row)
            overlap = min(bottom, run[3]) - max(top, run[1])
            small, large = sorted((bottom - top, run[3] - run[1]))
            # a superscript (a smaller run) belongs to its line with less overlap than a full-size run
            if overlap > (0.3 if small < 0.75 * large else 0.5) * small:
                row.append(run)
                break
        else:
            rows.append([run])
    lines = []
    for row in rows:
        row.sort(key=lambda r: r[0])
        current = list(row[0])
        for run in row[1:]:
            h = max(current[3] - current[1], run[3] - run[1])
            # Runs of one line follow each other in the text layer; the same row of the next column
            # comes a whole column later, so it is never joined across a narrow gutter.
            if run[0] - current[2] < segment_gap * h and abs(run[4] - current[4]) <= 3:
                current = [min(current[0], run[0]), min(current[1], run[1]), max(current[2], run[2]),
                           max(current[3], run[3]), run[4]]
            else:
                lines.append(tuple(current[:4]))
                current = list(run)
        lines.append(tuple(current[:4]))
    return lines


def _glyph_rows(glyphs: list) -> list[list]:
    """Glyphs of one text-layer rectangle in rows: a rectangle may hold several lines of a paragraph."""
    rows: list[list] = []
    for g in sorted(glyphs, key=lambda g: g[1]):
        h = g[5] - g[3]
        if rows and abs(rows[-1][-1][1] - g[1]) < 0.5 * max(h, rows[-1][-1][5] - rows[-1][-1][3]):
            rows[-1].append(g)
        else:
            rows.append([g])
    return rows


def _pieces(row: list, segment_gap: float, index: int) -> list[list]:
    """A row of glyphs split where the ink has a gap over ``segment_gap`` heights."""
    out = []
    piece: list = []
    for g in sorted(row, key=lambda g: g[2]) + [None]:
        if piece and g is not None:
            h = max(p[5] for p in piece) - min(p[3] for p in piece)
            if g[2] - max(p[4] for p in piece) < segment_gap * h:
                piece.append(g)
                continue
        if piece:
            out.append([min(p[2] for p in piece), min(p[3] for p in piece), max(p[4] for p in piece),
                        max(p[5] for p in piece), index])
        piece = [g] if g is not None else []
    return out


def drawing_regions(page, dpi: int) -> list[tuple[float, float, float, float]]:
    """Boxes (render pixels) of vector drawings: form objects holding paths but no image.

    Plots often draw their labels as outlines, which the text layer lacks; a box found there is
    neither a true nor a false line, so scoring leaves it out. Photos (images) are not excluded.
    """
    import pypdfium2.raw as raw

    convert = _to_display(page, dpi)
    out = []
    for obj in page.get_objects(max_depth=0):
        if obj.type != raw.FPDF_PAGEOBJ_FORM:
            continue
        kinds = {raw.FPDFPageObj_GetType(raw.FPDFFormObj_GetObject(obj.raw, i))
                 for i in range(raw.FPDFFormObj_CountObjects(obj.raw))}
        if raw.FPDF_PAGEOBJ_PATH in kinds and raw.FPDF_PAGEOBJ_IMAGE not in kinds:
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

    truth: int = 0
    predicted: int = 0
    matched: int = 0
    merged: int = 0  # predicted boxes holding most of two or more true lines
    split: int = 0  # true lines cut into two or more predicted boxes

    def __iadd__(self, other: Score) -> Score:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.predicted if self.predicted else 1.0


def score(truth, predicted, threshold: float = 0.5, ignore=()) -> Score:
    """One-to-one matching of predicted to true boxes at IoU >= threshold (best pairs first).

    A predicted box that matches nothing and lies mostly inside an ``ignore`` region is not counted.
    """
    pairs = sorted(((iou(t, p), i, j) for i, t in enumerate(truth) for j, p in enumerate(predicted)
                    if t[0] < p[2] and p[0] < t[2] and t[1] < p[3] and p[1] < t[3]), reverse=True)
    used_t: set[int] = set()
    used_p: set[int] = set()
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    dropped = {j for j, p in enumerate(predicted) if j not in used_p and any(_inside(p, r) >= 0.5 for r in ignore)}
    predicted = [p for j, p in enumerate(predicted) if j not in dropped]
    merged = sum(1 for p in predicted if sum(_inside(t, p) >= 0.6 for t in truth) >= 2)
    split = sum(1 for i, t in enumerate(truth)
                if i not in used_t and sum(_inside(p, t) >= 0.6 for p in predicted) >= 2)
    return Score(len(truth), len(predicted), len(used_t), merged, split)
