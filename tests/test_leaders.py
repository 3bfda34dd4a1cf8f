"""Dot leaders counted in the image (inkbooth.ocr.recognition.leaders): rows of dots found in rendered
lines (Pillow's bundled font, the demo's) at the right count and nowhere else, and the decoder's
runs of dots given that count with their spacing, tokens and boxes."""

from __future__ import annotations

import pytest

from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.recognition import leaders


def _leader(n: int, spaced: bool = True) -> str:
    return (" " if spaced else "").join("." * n)


@pytest.mark.parametrize("size", [16, 24, 32])
@pytest.mark.parametrize("n", [4, 9, 23, 41])
@pytest.mark.parametrize("spaced", [True, False])
def test_every_dot_of_a_leader_is_counted(size, n, spaced):
    image = synthetic.render_line(f"3.4 Tracking {_leader(n, spaced)} 8", size=size)
    runs = leaders.dot_runs(image)
    assert [len(r) for r in runs] == [n]
    xs = [b[0] for b in runs[0]]
    assert xs == sorted(xs) and all(b[2] - b[0] <= 0.25 * image.height for b in runs[0])


def test_two_leaders_on_one_line_are_two_runs():
    image = synthetic.render_line(f"Tracking {_leader(6)} 8    Kerning {_leader(11)} 17", size=24)
    assert [len(r) for r in leaders.dot_runs(image)] == [6, 11]


@pytest.mark.parametrize("text", [
    "Wait... and see, e.g. i.e. etc.", "Version 1.2.3.4 of 2024-05-06", "a: b; c: d :: e", "Über Ärger, öfter",
    "x := y ... z", "i j i j i j", "Price ($) 13.65 . . 7",
])
def test_text_without_a_leader_has_no_run(text):
    assert leaders.dot_runs(synthetic.render_line(text, size=24)) == []


def test_a_blank_line_has_no_run():
    from PIL import Image

    assert leaders.dot_runs(Image.new("RGB", (300, 30), "white")) == []


def _chars(text: str) -> list[str]:
    """A character-level byte BPE's tokens, as the committed readers' (a space is its own token)."""
    return ["Ġ" if c == " " else c for c in text]


def _dots(n: int, x0: int = 100, pitch: int = 10) -> list[tuple[int, int, int, int]]:
    return [(x0 + k * pitch, 20, x0 + k * pitch + 3, 23) for k in range(n)]


def _recount(text: str, runs, tokenize=_chars):
    tokens = _chars(text) if tokenize is _chars else tokenize(text)
    boxes = [(i, 0, i + 1, 1) for i in range(len(tokens))]
    return tokens, leaders.recount(tokens, [-0.1] * len(tokens), boxes, runs, tokenize)


def test_the_decoders_run_gets_the_images_count_and_keeps_its_spacing():
    tokens, fixed = _recount("3.4 Tracking . . . . . 8", [_dots(8)])
    new_tokens, logprobs, boxes = fixed
    assert "".join(new_tokens).replace("Ġ", " ") == "3.4 Tracking . . . . . . . . 8"
    assert len(logprobs) == len(boxes) == len(new_tokens)
    dot_boxes = [b for t, b in zip(new_tokens, boxes) if t == "."][1:]  # the first dot is 3.4's
    assert dot_boxes == _dots(8)
    _, fixed = _recount("see...... here", [_dots(4)])
    assert "".join(fixed[0]).replace("Ġ", " ") == "see.... here"


def test_runs_are_paired_in_order_and_only_when_both_count_the_same_number():
    _, fixed = _recount("A . . . 1  B . . . . . . . . . 2", [_dots(5), _dots(6, x0=300)])
    assert "".join(fixed[0]).replace("Ġ", " ") == "A . . . . . 1  B . . . . . . 2"
    assert _recount("A . . . 1  B . . . . . 2", [_dots(5)])[1] is None, "two runs read, one seen: left as read"
    assert _recount("A . . . . . 1", [])[1] is None
    assert _recount("A . . . . . 1", [_dots(5)])[1] is None, "the count is right already"
    assert _recount("Wait.. and", [_dots(5)])[1] is None, "two dots are no run"


def test_a_tokenizer_with_dots_and_spaces_in_one_token_is_served_too():
    def bpe(text: str) -> list[str]:  # RoBERTa's merges: a space joins the token after it
        out = []
        for k, word in enumerate(text.split(" ")):
            out.append(("Ġ" if k else "") + word) if word else None
        return out

    tokens, fixed = _recount("Tracking . . . 8", [_dots(5)], tokenize=bpe)
    assert tokens == ["Tracking", "Ġ.", "Ġ.", "Ġ.", "Ġ8"]
    assert fixed[0] == ["Tracking", "Ġ.", "Ġ.", "Ġ.", "Ġ.", "Ġ.", "Ġ8"]
    assert fixed[2][1:6] == _dots(5)
