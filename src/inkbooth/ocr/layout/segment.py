"""The XY-cut: a binarised page into text lines by its projection profiles.

Column gutters and paragraph gaps first, then text lines by the horizontal projection profile,
then a line into segments where a gap is much wider than a word space (tables, tab stops). Ruling
lines are removed before the cut. One idea in about 400 lines: the cut's steps share their
measures (line height, bands, runs) and read best together.

May import ``inkbooth.ocr.documents`` (for ``PagesConfig``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from inkbooth.ocr.documents.pages import PagesConfig

if TYPE_CHECKING:
    import numpy as np


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), page pixels


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
