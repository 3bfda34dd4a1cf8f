"""Dot leaders counted in the image, not by the decoder.

A table of contents or an index joins an entry to its page number with a row of evenly spaced dots
(". . . . . 8"), and the PDF's text layer holds exactly that many. An attention decoder reads such a
row as "many dots" and miscounts it by a few: on the held-out readset the printed reader's leader
rows carried 93 of its 1,480 edits (Tesseract's: 687), one in sixteen of all its errors. A dot is the
easiest mark on a page to count, so the count is taken from the image:

* ``dot_runs`` finds rows of at least ``MIN_DOTS`` small, filled, like marks on one baseline at one
  pitch with nothing between them (connected regions of the line's ink);
* ``recount`` gives each run of dots the decoder wrote (``MIN_TEXT_DOTS`` or more, spaced or not)
  the count of the image's run in the same place: in reading order when both find the same number
  of runs, else by where the tokens' boxes lie (a stray character read among the dots at a chunk
  seam goes with them), keeping the decoder's spacing; where neither pairs them, nothing changes.
  Each dot token's box becomes its own dot's box; the line's confidence is the decoder's.

Three dots in a row ("...", an ellipsis) are never a leader in the image, so text is left as read.
May import the other recognition modules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from inkbooth.ocr.recognition import chunks, localize

Box = localize.Box
Mark = tuple[int, int, int, int, float]  # a connected region's box and the share of it that is ink
MIN_DOTS = 4  # marks in the image that make a leader
MIN_TEXT_DOTS = 3  # dots the decoder wrote that may be one (it may write too few)
DOT_SIZE = 0.25  # a dot's width and height at most, in ink heights (a period is about 0.1)
BASELINE = 0.1  # how far (ink heights, at least 2 px) the bottoms of one run's dots may differ
PITCH = 0.3  # how far one gap between dots may differ from the run's first, as a share of it
_SPACE = re.compile(r"[\sĠ▁]")


def _marks(image: Any) -> tuple[list[Mark], int]:
    """The connected regions of a line's ink, left to right by centre: box (x0, y0, x1, y1) and the
    share of it that is ink; and the ink's height in pixels."""
    import numpy as np
    from scipy import ndimage

    ink = chunks.ink_mask(image)
    if ink is None:
        return [], image.height
    labels, _ = ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels) if s]
    areas = ndimage.sum_labels(ink, labels, index=np.arange(1, len(boxes) + 1)) if boxes else []
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][0] + boxes[i][2])
    filled = [float(areas[i]) / max(1, (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])) for i in order]
    return [(*boxes[i], f) for i, f in zip(order, filled)], chunks.ink_height(ink)


def dot_runs(image: Any, min_dots: int = MIN_DOTS) -> list[list[Box]]:
    """Rows of dots in a line image, left to right: each a list of its dots' boxes in crop pixels."""
    marks, height = _marks(image)
    size = DOT_SIZE * height

    def is_dot(m: Mark) -> bool:
        w, h = m[2] - m[0], m[3] - m[1]
        return w <= size and h <= size and max(w, h) <= 2.5 * min(w, h) and m[4] >= 0.4

    def alike(a: Mark, b: Mark) -> bool:  # one size, to a pixel or a third
        return all(abs((b[k + 2] - b[k]) - (a[k + 2] - a[k])) <= max(1.0, (a[k + 2] - a[k]) / 3) for k in (0, 1))

    runs: list[list[Box]] = []
    i = 0
    while i < len(marks):
        if not is_dot(marks[i]):
            i += 1
            continue
        run = [marks[i]]
        j = i + 1
        while j < len(marks) and is_dot(marks[j]):
            a, b = run[-1], marks[j]
            pitch = (b[0] + b[2] - a[0] - a[2]) / 2
            first = (run[1][0] + run[1][2] - run[0][0] - run[0][2]) / 2 if len(run) > 1 else pitch
            if (not alike(run[0], b) or abs(b[3] - run[0][3]) > max(2.0, BASELINE * height) or pitch < 1.5 * (a[2] - a[0])
                    or abs(pitch - first) > max(2.0, PITCH * first)):
                break
            run.append(b)
            j += 1
        if len(run) >= min_dots:
            runs.append([(m[0], m[1], m[2], m[3]) for m in run])
        i = j
    return runs


def _dots_and_spaces(token: str) -> bool:
    """Whether a token holds nothing but dots and spaces (a byte-level or SentencePiece space marker)."""
    return not _SPACE.sub("", token).strip(".")


def _count(tokens: Sequence[str]) -> int:
    return sum(t.count(".") for t in tokens)


def text_runs(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Token spans [start, end) of the decoder's dot runs: tokens of dots and spaces only, starting and
    ending with a dot, holding ``MIN_TEXT_DOTS`` dots or more."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if "." not in tokens[i] or not _dots_and_spaces(tokens[i]):
            i += 1
            continue
        j, last = i, i
        while j < len(tokens) and _dots_and_spaces(tokens[j]):
            if "." in tokens[j]:
                last = j
            j += 1
        if _count(tokens[i:last + 1]) >= MIN_TEXT_DOTS:
            out.append((i, last + 1))
        i = last + 1
    return out


def placed_runs(tokens: Sequence[str], boxes: Sequence[Box], runs: Sequence[Sequence[Box]]) -> list[tuple[int, int]] | None:
    """Token spans [start, end) read over each of the image's ``runs``: from the first to the last token
    with a dot whose box's centre lies on the run (within half a pitch of its ends), so that a stray
    character read among the dots goes with them (the image has no other mark there). None where a run
    has no such span, they overlap, or a span is not mostly dots and spaces."""
    out: list[tuple[int, int]] = []
    for dots in runs:
        half = (dots[-1][0] - dots[0][0]) / max(1, len(dots) - 1) / 2
        lo, hi = dots[0][0] - half, dots[-1][2] + half
        on = [i for i, (t, b) in enumerate(zip(tokens, boxes)) if "." in t and lo <= (b[0] + b[2]) / 2 <= hi]
        if not on:
            return None
        start, end = on[0], on[-1] + 1
        stray = sum(1 for t in tokens[start:end] if not _dots_and_spaces(t))
        if (out and start < out[-1][1]) or _count(tokens[start:end]) < MIN_TEXT_DOTS or stray > max(1, (end - start) // 8):
            return None
        out.append((start, end))
    return out


def recount(tokens: Sequence[str], logprobs: Sequence[float], boxes: Sequence[Box], runs: Sequence[Sequence[Box]],
            tokenize: Callable[[str], list[str]], placed: bool = False) -> tuple[list[str], list[float], list[Box]] | None:
    """The tokens, log-probabilities and boxes with each of the decoder's dot runs set to the count of
    the image's run in its place (``runs``, from ``dot_runs``): paired in reading order when the text
    has as many runs as the image, else, where ``boxes`` are the tokens' own (``placed``), by where
    they lie (``placed_runs``). None where nothing changes (no runs, no pairing, or a tokenizer that
    cannot write the run as dots and spaces alone)."""
    if not runs:
        return None
    spans: list[tuple[int, int]] | None = text_runs(tokens)
    if len(spans) != len(runs):
        spans = placed_runs(tokens, boxes, runs) if placed else None
    if not spans:
        return None
    out_t, out_l, out_b = list(tokens), list(logprobs), list(boxes)
    changed = False
    for (start, end), dots in reversed(list(zip(spans, runs))):
        if _count(tokens[start:end]) == len(dots) and all(map(_dots_and_spaces, tokens[start:end])):  # right already
            continue
        lead = " " if _SPACE.match(tokens[start]) else ""  # a space the run's first token carries
        spaced = bool(_SPACE.search("".join(tokens[start:end])[len(lead):]))
        new = tokenize(lead + (" " if spaced else "").join("." * len(dots)))
        if _count(new) != len(dots) or not all(map(_dots_and_spaces, new)):
            return None
        mean = sum(logprobs[start:end]) / max(1, end - start)
        new_boxes, k = [], 0
        for t in new:
            n = t.count(".")
            if n:
                new_boxes.append(localize.union(dots[k:k + n]))
                k += n
            else:  # a space: the gap between the dots on either side
                left, right = dots[max(0, k - 1)], dots[min(k, len(dots) - 1)]
                new_boxes.append((left[2], min(left[1], right[1]), max(left[2] + 1, right[0]), max(left[3], right[3])))
        out_t[start:end], out_l[start:end], out_b[start:end] = new, [mean] * len(new), new_boxes
        changed = True
    return (out_t, out_l, out_b) if changed else None
