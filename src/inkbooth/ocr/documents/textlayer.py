"""A PDF page's text layer (pdfium) as lines: where each line is, and what it says.

**What a line is.** TrOCR reads one line of text per crop, so a line is a crop TrOCR can read as
one line: glyphs that follow one another along one baseline, left to right. From the text layer:

1. Glyphs (pdfium's tight glyph boxes; spaces skipped) of one text-layer rectangle (a run of one
   font, sometimes several lines of a paragraph long) are put in rows, a new row starting where the
   text goes back left to a glyph outside the row's height; a row is cut into runs at gaps wider
   than the gap asked for (in ems).
2. Two runs are on one line when (a) they are near in the text layer (at most 3 rectangles apart:
   the same row of the next column comes a whole column later, so lines never join across a
   gutter, however narrow); (b) the gap between them is under the gap asked for times the larger
   font size (em, from the PDF, so it does not depend on which letters a word has); and (c) they
   sit on one line: their baselines (pdfium's glyph origins) are less than half an em apart (the
   same baseline, or a sub- or superscript on it), or they share their height (more than half the
   smaller run's height, 0.3 of it when that run is much smaller: a limit, text inside a tall
   delimiter), or one is stacked on the other less than 0.4 em above or below it, its centre
   within the other's width: one small glyph on a glyph or two (a symbol drawn as '<' over '~',
   a degree sign over a dot), or a few glyphs of a script's size on a short run (the limits of
   a sum).
3. A line is a connected group of runs so linked. So the stacked parts of a built-up formula
   (fraction parts, limits, scripts, all inside its delimiters) are one line with the formula.
4. Only text along the page's main direction (that of most of its glyphs) makes the lines of
   :func:`text_runs`: across the page as displayed for most pages; up or down the page for a table
   or landscape page printed sideways, its runs then given in the frame where that text runs left
   to right. Text at another angle is kept apart (``turned``).

Boxes are in render pixels at the ``dpi`` asked for, the page's /Rotate applied. :func:`page_lines`
adds each line's text: its glyphs in text order, a space where the text layer has one between
them, ligatures expanded (:func:`normalise`), and says why a line's text cannot be trusted as a
label (glyphs out of reading order, other text among them, characters the font maps to no letter).
``tests/pdftruth.py`` builds the segmentation ground truth on the same runs; ``inkbooth.ocr.training
.pdflines`` cuts labelled training lines with :func:`page_lines`.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Callable

Box = tuple[float, float, float, float]

LOW, HIGH = 1.5, 2.5  # ems: gaps that part pieces of a row, and gaps that still join pieces into a row


@dataclasses.dataclass
class Runs:
    """A page's runs (see the module docstring) and what is needed to read them.

    Each run is ``[x0, y0, x1, y1, rectangle index, em, glyph count, baseline, glyphs]``, the glyphs
    as ``(char index, x0, y0, x1, y1)``, in the frame where the page's main direction runs left to
    right; ``back`` maps a box in that frame to the page as displayed; ``quarter`` is the main
    direction (0: across the page as displayed, 1 or 3: up or down it); ``chars`` holds every
    character of the text layer, spaces included (see :func:`_whole`)."""

    runs: list[list]
    turned: list[list]
    back: Callable[[Box], Box]
    quarter: int
    chars: list[str]


def to_display(page, dpi: int) -> Callable[[Box], Box]:
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


def text_runs(page, dpi: int, gap: float, textpage=None, whole_chars: bool = False) -> Runs:
    """The runs of a pypdfium2 page's text layer cut at ``gap`` ems: those of text along the page's
    main direction and those of text at another angle (``turned``), both in the frame where the
    main direction runs left to right. ``textpage``: the page's text page, where the caller has it.

    pdfium keeps a character outside Unicode's first plane (a mathematical italic letter) as two
    halves, neither of which it gives alone: ``whole_chars`` makes such a pair one glyph (its first
    half's), as a label needs; without it, as the segmentation truth was measured, both are left out.
    """
    import ctypes
    import math

    import numpy as np
    import pypdfium2.raw as raw

    convert = to_display(page, dpi)
    tp = textpage or page.get_textpage()
    px = dpi / 72.0
    turn = math.radians(page.get_rotation())
    ox, oy = ctypes.c_double(), ctypes.c_double()
    given = [tp.get_text_range(i, 1) for i in range(tp.count_chars())]
    chars = _whole(tp, given)
    found = []  # (display box, quarter turn of the glyph or None, pdf centre, em, display origin, char index)
    for i, ch in enumerate(chars if whole_chars else given):
        if not ch or ch.isspace():
            continue
        left, bottom, right, top = tp.get_charbox(i)
        if right > left and top > bottom:
            angle = (raw.FPDFText_GetCharAngle(tp.raw, i) + turn) % (2 * math.pi)
            quarter = round(angle / (math.pi / 2))
            raw.FPDFText_GetCharOrigin(tp.raw, i, ctypes.byref(ox), ctypes.byref(oy))
            found.append((convert((left, bottom, right, top)),
                          quarter % 4 if abs(angle - quarter * math.pi / 2) < 0.05 else None,
                          ((left + right) / 2, (bottom + top) / 2), font_size(tp, i) * px,
                          convert((ox.value, oy.value, ox.value, oy.value))[:2], i))
    main = _main_quarter(found)
    to_frame, back = turner(page, dpi, main)
    # In the frame where the page's main direction runs left to right (render pixels, y down):
    # (centre x, centre y, x0, y0, x1, y1, pdf centre x, pdf centre y, em, along the main direction,
    # baseline y, char index)
    glyphs = []
    for box, quarter, (pcx, pcy), em, origin, i in found:
        x0, y0, x1, y1 = to_frame(box)
        glyphs.append(((x0 + x1) / 2, (y0 + y1) / 2, x0, y0, x1, y1, pcx, pcy, em, quarter == main,
                       to_frame((*origin, *origin))[1], i))
    runs: list[list] = []
    turned: list[list] = []
    cx = np.array([g[6] for g in glyphs], dtype=np.float64)
    cy = np.array([g[7] for g in glyphs], dtype=np.float64)
    for j in range(tp.count_rects()):
        left, bottom, right, top = tp.get_rect(j)
        within = (left - 0.5 <= cx) & (cx <= right + 0.5) & (bottom - 0.5 <= cy) & (cy <= top + 0.5)
        inside = [glyphs[k] for k in np.flatnonzero(within)]
        for level, out in ((True, runs), (False, turned)):
            for row in _glyph_rows([g for g in inside if g[9] is level]):
                out.extend(_pieces(row, gap, j))
    return Runs(runs, turned, back, main, chars)


def font_size(tp, i: int) -> float:
    """The size character ``i`` is drawn at, in points: pdfium's font size (the ``Tf`` operand) scaled by
    the character's matrix. Documents that set text at size 1 and scale it by the text matrix (dvips'
    output, among others) would otherwise have an em of one point, and every word would be a line."""
    import math

    import pypdfium2.raw as raw

    size = raw.FPDFText_GetFontSize(tp.raw, i)
    m = raw.FS_MATRIX()
    if raw.FPDFText_GetMatrix(tp.raw, i, m):
        scale = math.sqrt(abs(m.a * m.d - m.b * m.c))
        if scale > 0:
            size *= scale
    return size


def _whole(tp, given: list[str]) -> list[str]:
    """The characters of a text page, each pair of halves pdfium keeps for a character outside the
    first plane made whole (on the first half; the second is left empty); any other character it
    gives nothing for is U+FFFD, which no label takes."""
    import pypdfium2.raw as raw

    chars = list(given)
    i = 0
    while i < len(chars):
        if not chars[i]:
            high = raw.FPDFText_GetUnicode(tp.raw, i)
            low = raw.FPDFText_GetUnicode(tp.raw, i + 1) if i + 1 < len(chars) and not chars[i + 1] else 0
            if 0xD800 <= high < 0xDC00 and 0xDC00 <= low < 0xE000:
                chars[i] = chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                i += 2
                continue
            chars[i] = "\ufffd"
        i += 1
    return chars


def _main_quarter(found: list) -> int:
    """The quarter turn (0-3, counter-clockwise) of most of a page's glyphs: 0 for a page read as
    it is, 1 or 3 for a table or a landscape page printed sideways."""
    counts = [0, 0, 0, 0]
    for _, quarter, *_ in found:
        if quarter is not None:
            counts[quarter] += 1
    return max(range(4), key=lambda q: (counts[q], q == 0))


def turner(page, dpi: int, quarter: int):
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
    right = 0.0  # the piece's right edge
    for g in sorted(row, key=lambda g: g[2]) + [None]:
        if piece and g is not None and g[2] - right < gap * max(g[8], piece[-1][8]):
            piece.append(g)
            right = max(right, g[4])
            continue
        if piece:
            out.append([min(p[2] for p in piece), min(p[3] for p in piece), max(p[4] for p in piece),
                        max(p[5] for p in piece), index, max(p[8] for p in piece), len(piece),
                        sorted(p[10] for p in piece)[len(piece) // 2], [(p[11], p[2], p[3], p[4], p[5]) for p in piece]])
        piece = [g] if g is not None else []
        right = g[4] if g is not None else 0.0
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


def join_runs(runs: list, gap: float) -> list[tuple[Box, list[int]]]:
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


# ---- the text of a line ---------------------------------------------------------------------------

# What pdfium gives for a hyphen that ends a line inside a word (the PDF's character code 2), and
# other characters that stand for what the page shows.
_SHOWN_AS = {"\ufffe": "-", "\x02": "-", "\u00ad": "-"}
_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"} | {chr(c) for c in range(0xFE00, 0xFE10)}


@dataclasses.dataclass
class TextLine:
    """One line of a page: its box (render pixels, the page as displayed), its glyphs' boxes and
    characters (indices into the text layer), in text order, its text, and why that text is not a
    label ('' if it is)."""

    box: Box
    glyphs: list[Box]
    chars: list[int]
    text: str
    problem: str = ""
    # The line's words: (first glyph, glyph after the last, the word's text), so that a line can be cut
    # between words into pieces whose labels are exact (joined by spaces, they are ``text``).
    words: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)


def normalise(text: str) -> str:
    """A line's text as a label: ligatures (U+FB00-FB06) and mathematical letters and digits
    (U+1D400-1D7FF) as the letters they show, a line-end hyphen as '-', invisible characters
    dropped, each whitespace run one space."""
    out = []
    for ch in text:
        ch = _SHOWN_AS.get(ch, ch)
        if ch in _INVISIBLE:
            continue
        code = ord(ch)
        if 0xFB00 <= code <= 0xFB06 or 0x1D400 <= code <= 0x1D7FF:
            ch = unicodedata.normalize("NFKC", ch)
        out.append(ch)
    return " ".join("".join(out).split())


def unmapped(text: str) -> str:
    """The first character of ``text`` that stands for no letter (private use, U+FFFD, a control
    character): the font gave the glyph no Unicode value, so the text is not what the page shows."""
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Co", "Cs", "Cn") or ch == "\ufffd" or (category == "Cc" and not ch.isspace()):
            return ch
    return ""


def line_text(glyphs: list[tuple], chars: list[str], em: float) -> tuple[str, str, list[tuple[int, int, str]]]:
    """The text of a line's glyphs ((char index, x0, y0, x1, y1) in the frame where the line runs
    left to right) and why it is no label ('' if it is).

    In text order, with a space where the text layer has a space between two glyphs, or a line
    break (pdfium's, where a script leaves the baseline) and a gap of a quarter of an em on the
    page. The glyphs must go left to right in that order (one may start up to 0.3 em left of where
    the one before starts: a ligature's second letter, an accent), and the text between two of them
    must be whitespace or nothing: other text between them (of another line, or a glyph pdfium gave
    no box) would be missing from the label or out of place in it. Also the words, as glyph spans
    (in that order) with their text."""
    order = sorted(glyphs)
    parts = [chars[order[0][0]]]
    starts = [0]  # where each word starts, in glyphs
    for k, ((a, start, _, right, _), (b, left, *_)) in enumerate(zip(order, order[1:]), 1):
        between = [c for c in chars[a + 1:b] if c]  # empty: the second half of a character made whole
        if any(not c.isspace() for c in between):
            return "", "other text between its glyphs in the text layer", []
        if left < start - 0.3 * em:
            return "", "glyphs out of reading order (stacked parts of a formula?)", []
        if " " in between or (between and left - right >= 0.25 * em):
            parts.append(" ")
            starts.append(k)
        parts.append(chars[b])
    raw = "".join(_SHOWN_AS.get(c, c) for c in parts)
    bad = unmapped(raw)
    if bad:
        return "", f"a character that maps to no letter (U+{ord(bad):04X})", []
    text = normalise(raw)
    pieces = [normalise("".join(_SHOWN_AS.get(chars[g[0]], chars[g[0]]) for g in order[a:b]))
              for a, b in zip(starts, starts[1:] + [len(order)])]
    words = [(a, b, w) for a, b, w in zip(starts, starts[1:] + [len(order)], pieces) if w]
    if " ".join(w for *_, w in words) != text:  # a word normalised away or split: no pieces for this line
        words = []
    return text, "" if text else "no text", words


def page_lines(page, dpi: int, gap: float = LOW, textpage=None) -> tuple[list[TextLine], int]:
    """The lines of a page's text layer running across the page as displayed, with their text, and
    how many lines run another way (turned, or on a page printed sideways): those are not here."""
    found = text_runs(page, dpi, gap, textpage, whole_chars=True)
    upright, others = (found.runs, [found.turned]) if found.quarter == 0 else ([], [found.runs, found.turned])
    lines = []
    for box, members in join_runs(upright, gap):
        # A glyph inside two overlapping text-layer rectangles is in a run of each: once here.
        glyphs = list({g[0]: g for m in members for g in upright[m][8]}.values())
        em = max(upright[m][5] for m in members)
        text, problem, words = line_text(glyphs, found.chars, em)
        glyphs.sort()
        lines.append(TextLine(box, [g[1:] for g in glyphs], [g[0] for g in glyphs], text, problem, words))
    return lines, sum(len(join_runs(runs, gap)) for runs in others)
