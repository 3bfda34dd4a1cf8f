"""Long lines read in overlapping chunks and stitched back into one line.

A TrOCR-style model scales every crop to one input: the committed readers keep the line's aspect
ratio and pad to 512 x 24 (a line wider than 21.3:1 is shrunk below the glyph size they were trained
on), trocr-base stretches it to 384 x 384. Near the model's aspect (``model_aspect``) reading falls
apart (the Latin reader, Aileron at 24 px: 1.2% CER at 30 characters, 2% at aspect 20-21, 87% at
120 characters). Such a line is cut (``plan``) into as few chunks as fit, no wider than that, which
overlap by about ``overlap`` line heights, each cut moved onto a white gap between words where one
lies near it (else cut where planned). The chunks are read in one batch; ``stitch`` aligns each pair of neighbours' tokens in their overlap (edit alignment where a
match needs the same token near the same place of the crop, so a word repeated at the seam is not
mistaken for its neighbour), keeps the left chunk's tokens up to a matched token near the middle of
the overlap and the right chunk's after it: nothing read twice, nothing lost. Token boxes come from
each chunk's cross-attention, offset by the chunk's x origin, so they are in the whole crop's pixels.

Above the decoding: both backends go through it. May import the other recognition modules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from inkbooth.ocr.recognition import localize

Box = localize.Box
Span = tuple[int, int]

# A processor that stretches every crop to its input (ViT's; trocr-base: 384 x 384) says nothing
# about the lines its model was trained on; they were line crops of roughly this aspect (IAM lines are
# about 15:1). A judgment, not a measurement: set RecognizeConfig.chunk_aspect for such a model.
STRETCHED_ASPECT = 16.0
MIN_GAP = 0.25  # white run that counts as a word gap, in ink heights (Aileron: words ~0.3, letters <= 0.2)
# Two readings of one token, by two chunks, are placed apart by 0.2 line heights on average and 0.76
# at most (the Latin reader's long lines): the reach a match may have, and how far beyond the overlap
# (with cuts on word gaps, glyphs lie at least about this far inside it) its tokens are looked for.
MATCH_REACH = 1.0
MARGIN = 0.25


def model_aspect(image_processor: Any, grid: tuple[int, int]) -> float:
    """The widest line (width / height) the model reads at its own scale.

    A processor that keeps the aspect ratio (DETR's ``max_width`` x ``max_height``, padded): that box's
    aspect; one that stretches to ``size``: ``STRETCHED_ASPECT`` times the input's aspect. ``grid`` (the
    encoder's patch rows and columns) stands in where the processor names no size.
    """
    size = getattr(image_processor, "size", None) or {}
    if "max_width" in size and "max_height" in size:
        return float(size["max_width"]) / float(size["max_height"])
    if "width" in size and "height" in size:
        return STRETCHED_ASPECT * float(size["width"]) / float(size["height"])
    rows, cols = grid
    return STRETCHED_ASPECT * cols / max(1, rows)


def ink_mask(image: Any) -> Any:
    """Which pixels of a line image are ink (dark on light, or light on dark); None where it is blank or
    too faint to tell ink from paper."""
    import numpy as np

    gray = np.asarray(image.convert("L"), dtype=np.float32)
    lo, hi = np.percentile(gray, 2), np.percentile(gray, 98)
    if hi - lo < 32:
        return None
    ink = gray < (lo + hi) / 2
    return ~ink if ink.mean() > 0.5 else ink  # light text on a dark ground


def ink_height(ink: Any) -> int:
    """The height in pixels of the rows that hold ink: descenders count, specks not."""
    import numpy as np

    per_row = ink.sum(axis=1)
    rows = np.flatnonzero(per_row >= max(2.0, 0.005 * float(per_row.max())))
    return int(rows[-1] - rows[0] + 1) if len(rows) else ink.shape[0]


def ink_profile(image: Any) -> tuple[Any, int]:
    """Per column whether it holds ink, and the ink's height in pixels (``ink_mask``)."""
    import numpy as np

    ink = ink_mask(image)
    if ink is None:
        return np.zeros(image.width, dtype=bool), image.height
    return ink.sum(axis=0) >= max(1, round(0.02 * ink.shape[0])), ink_height(ink)


def word_gaps(image: Any) -> list[Span]:
    """The white runs of a line image wide enough to be word spaces (``MIN_GAP`` ink heights)."""
    cols, ink_height = ink_profile(image)
    return gaps(cols, max(2, round(MIN_GAP * ink_height)))


def gaps(ink_cols: Any, min_width: int) -> list[Span]:
    """White runs of at least ``min_width`` columns, as (start, end)."""
    import numpy as np

    white = np.concatenate([[False], ~np.asarray(ink_cols, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(white.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_width]


def plan(width: int, height: int, aspect: float, *, overlap: float, tolerance: float = 1.0,
         white: Sequence[Span] = ()) -> list[Span]:
    """Chunks (x0, x1) covering a crop of ``width`` x ``height``: one when its aspect is at most
    ``tolerance * aspect``; else overlapping ones no wider than that or ``aspect``, whichever is less
    (each at least ``overlap`` line heights into its neighbour when it can be), as few as fit, their
    cuts on the middle of a ``white`` gap near the planned place where there is one."""
    limit = max(1, int(min(tolerance, 1.0) * aspect * height))
    if width <= tolerance * aspect * height or width <= limit:
        return [(0, width)]
    lap = min(overlap * height, limit / 4)
    reach = lap / 2  # how far a cut may move to meet a gap (a chunk's end further right, up to the limit)
    stride = max(1.0, limit - lap - 2 * reach)
    k = math.ceil((width - lap) / stride)
    stride = (width - lap) / k
    mids = [(a + b) // 2 for a, b in white]
    spans = [[0, width]]
    for i in range(1, k):
        s_plan, e_plan = i * stride, i * stride + lap
        start = spans[-1][0]
        e_cut, s_cut = min(round(e_plan), start + limit), round(s_plan)
        ends = [(m, 0) for m in mids if e_plan - reach <= m <= start + limit]
        starts = [(m, 0) for m in mids if max(s_plan - reach, start + 1) <= m <= s_plan + reach]
        best = (math.inf, s_cut, e_cut)  # no gap on either side: cut where planned
        off = 3 * height  # a cut through a word costs as much as moving three line heights
        for e, e_off in [*ends, (e_cut, off)]:
            for s, s_off in [*starts, (s_cut, off)]:
                cost = abs(e - e_plan) + abs(s - s_plan) + e_off + s_off
                if e - s >= lap / 2 and s > start and cost < best[0]:
                    best = (cost, s, e)
        _, s, e = best
        spans[-1][1] = int(e)
        spans.append([int(s), width])
    if spans[-1][1] - spans[-1][0] > limit:  # rounding: never wider than the model reads
        spans[-1][0] = width - limit
    return [(a, b) for a, b in spans]


@dataclasses.dataclass
class Piece:
    """One chunk's reading: visible tokens with their log-probabilities and boxes in the whole crop's
    pixels; ``lead`` and ``tail`` are the log-probabilities of the tokens not shown (a start-of-text
    token the model emits, the end of sequence)."""

    span: Span
    ids: list[int]
    tokens: list[str]
    logprobs: list[float]
    boxes: list[Box]
    lead: list[float] = dataclasses.field(default_factory=list)
    tail: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Stitched:
    ids: list[int]
    tokens: list[str]
    logprobs: list[float]
    boxes: list[Box]
    confidence: float


def _key(token: str) -> str:
    """A token compared across chunks: without its word-start mark (a chunk's first word has none)."""
    return token.lstrip("Ġ▁") or token


def _centre(box: Box) -> float:
    return (box[0] + box[2]) / 2


def seam(a: Piece, b: Piece, height: float) -> tuple[int, int]:
    """Where two neighbouring chunks' readings join: keep ``a``'s tokens before the first index and
    ``b``'s from the second on.

    The overlap's tokens (by their boxes' middles, ``MARGIN`` line heights beyond it too) are aligned
    with edits: a match is the same token placed less than ``MATCH_REACH`` line heights apart, scored
    higher the closer (so where a run of one repeated character gives several alignments the boxes
    choose); ``a``'s tokens before the overlap and ``b``'s after it are free. The join is the matched
    pair nearest the middle of the overlap; with no match, the middle itself.
    """
    o0, o1 = b.span[0], a.span[1]
    mid = (o0 + o1) / 2
    ax = [_centre(x) for x in a.boxes]
    bx = [_centre(x) for x in b.boxes]
    margin = MARGIN * height
    ia = next((i for i, x in enumerate(ax) if x >= o0 - margin), len(ax))
    jb = next((j for j in range(len(bx) - 1, -1, -1) if bx[j] <= o1 + margin), -1) + 1
    ta, tb = [_key(t) for t in a.tokens[ia:]], [_key(t) for t in b.tokens[:jb]]
    n, m = len(ta), len(tb)
    reach = MATCH_REACH * height
    score = [[0.0] * (m + 1) for _ in range(n + 1)]  # a's tokens before the overlap cost nothing
    move = [[0] * (m + 1) for _ in range(n + 1)]  # 1 diagonal, 2 skip a's, 3 skip b's
    for j in range(1, m + 1):
        score[0][j], move[0][j] = -float(j), 3
    for i in range(1, n + 1):
        move[i][0] = 2
        for j in range(1, m + 1):
            dx = abs(ax[ia + i - 1] - bx[j - 1])
            same = ta[i - 1] == tb[j - 1] and dx < reach
            diag = score[i - 1][j - 1] + (1.0 - dx / reach if same else -1.0)
            up, left = score[i - 1][j] - 1.0, score[i][j - 1] - 1.0
            best = max(diag, up, left)
            score[i][j], move[i][j] = best, (1 if best == diag else 2 if best == up else 3)
    j = max(range(m + 1), key=lambda c: score[n][c]) if n else 0  # b's tokens after the overlap are free
    i, pairs = n, []
    while i > 0 and j > 0:
        step = move[i][j]
        if step == 1:
            if ta[i - 1] == tb[j - 1] and abs(ax[ia + i - 1] - bx[j - 1]) < reach:
                pairs.append((ia + i - 1, j - 1))
            i, j = i - 1, j - 1
        elif step == 2:
            i -= 1
        else:
            j -= 1
    if pairs:
        pa, pb = min(pairs, key=lambda p: abs((ax[p[0]] + bx[p[1]]) / 2 - mid))
        return pa + 1, pb + 1
    return sum(1 for x in ax if x < mid), sum(1 for x in bx if x < mid)


def stitch(pieces: Sequence[Piece], height: float) -> Stitched:
    """One line from its chunks' readings, left to right (see ``seam``); its confidence is the mean
    log-probability of the kept tokens with the first chunk's lead and the last chunk's tail."""
    ids: list[int] = []
    tokens: list[str] = []
    logprobs: list[float] = []
    boxes: list[Box] = []
    start = 0
    for k, piece in enumerate(pieces):
        stop = len(piece.tokens)
        nxt = start
        if k + 1 < len(pieces):
            stop, nxt = seam(piece, pieces[k + 1], height)
            stop = max(stop, start)
        ids += piece.ids[start:stop]
        tokens += piece.tokens[start:stop]
        logprobs += piece.logprobs[start:stop]
        boxes += piece.boxes[start:stop]
        start = nxt
    every = [*(pieces[0].lead if pieces else []), *logprobs, *(pieces[-1].tail if pieces else [])]
    confidence = sum(every) / len(every) if every else float("-inf")
    return Stitched(ids, tokens, logprobs, monotone(boxes), confidence)


def monotone(boxes: Sequence[Box]) -> list[Box]:
    """Boxes whose left edges never go back left: a token whose attention strays behind the one before
    it (about 1 in 130 on the Latin reader's long lines) starts where that one starts."""
    out: list[Box] = []
    for x0, y0, x1, y1 in boxes:
        if out:
            x0 = max(x0, out[-1][0])
            x1 = max(x1, x0 + 1)
        out.append((x0, y0, x1, y1))
    return out


def paint(boxes: Sequence[Box], grid: tuple[int, int], crop_size: tuple[int, int],
          content: tuple[Box, tuple[int, int]] | None = None) -> Any:
    """An attention-shaped matrix (tokens x ``1 + rows * cols``) over the whole crop's encoder grid on
    which each token's box is drawn as uniform weight, so that ``localize.attention_box`` gives the
    box back at the grid's resolution (it contains the box). For a stitched line, whose tokens were
    attended over several chunks' grids, not one."""
    import numpy as np

    rows, cols = grid
    width, height = crop_size
    (cx0, cy0, cx1, cy1), (in_w, in_h) = content or ((0, 0, cols, rows), (cols, rows))
    out = np.zeros((len(boxes), 1 + rows * cols), dtype=np.float32)

    def cell(v: float, lo: int, hi: int, extent: int, n: int, size: int) -> float:
        return (lo + v * (hi - lo) / max(1, extent)) * n / max(1, size)

    for t, (x0, y0, x1, y1) in enumerate(boxes):
        c0 = min(cols - 1, max(0, math.floor(cell(x0, cx0, cx1, width, cols, in_w))))
        c1 = min(cols, max(c0 + 1, math.ceil(cell(x1, cx0, cx1, width, cols, in_w))))
        r0 = min(rows - 1, max(0, math.floor(cell(y0, cy0, cy1, height, rows, in_h))))
        r1 = min(rows, max(r0 + 1, math.ceil(cell(y1, cy0, cy1, height, rows, in_h))))
        patches = out[t, 1:].reshape(rows, cols)
        patches[r0:r1, c0:c1] = 1.0
    return out
