"""Long lines read in chunks (inkbooth.ocr.recognition.chunks): the stitcher on token sequences with
known overlaps, the planner, and the committed Latin reader on long lines (exported to ONNX here,
fp32 and INT8, and read with PyTorch once), in its training font (Pillow's bundled Aileron)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from inkbooth import readers
from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.recognition import chunks, localize
from inkbooth.ocr.recognition.export import ExportConfig, export_trocr
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer
from inkbooth.ocr.recognition.text import corpus_cer

CHAR = 10  # pixels per character of the synthetic sequences
HEIGHT = 30  # their line height


def _pieces(text: str, spans, *, tokens=None, jitter: int = 0, seed: int = 0, edge_errors: bool = False):
    """Readings of ``text`` (one token per character, or ``tokens`` with their character offsets) by
    chunks ``spans``: a chunk reads the tokens whose middle it holds, each boxed where it lies (give
    or take ``jitter`` pixels); ``edge_errors`` misreads the token at each chunk's cut edges."""
    rng = random.Random(seed)
    if tokens is None:
        tokens = [("Ġ" if c == " " else c, i, i + 1) for i, c in enumerate(text)]
    out = []
    for k, (x0, x1) in enumerate(spans):
        mine = [(t, a, b) for t, a, b in tokens if x0 <= (a + b) * CHAR / 2 < x1]
        if k and mine and mine[0][0].startswith("Ġ") and len(mine[0][0]) > 1:  # a chunk's first word has no space
            mine[0] = (mine[0][0][1:], mine[0][1], mine[0][2])
        toks = [t for t, _, _ in mine]
        if edge_errors:
            if k + 1 < len(spans):
                toks[-1] = "#"
            if k:
                toks[0] = "%"
        boxes = []
        for _, a, b in mine:
            d = rng.randint(-jitter, jitter)
            boxes.append((a * CHAR + d, 0, b * CHAR + d, HEIGHT))
        out.append(chunks.Piece(span=(x0, x1), ids=list(range(len(toks))), tokens=toks,
                                logprobs=[-0.01 * (k + 1)] * len(toks), boxes=boxes, lead=[-0.5], tail=[-0.25]))
    return out


def _text(line: chunks.Stitched) -> str:
    return "".join(t.replace("Ġ", " ") for t in line.tokens)


def _spans(n_chars: int, width: int, lap: int) -> list[tuple[int, int]]:
    total = n_chars * CHAR
    spans, x = [], 0
    while True:
        end = min(total, x + width)
        spans.append((x, end))
        if end == total:
            return spans
        x = end - lap


TEXTS = [
    "Invoice total amount due 1234.56 paid by bank transfer on the date of order 88231 net tax 19.00",
    "the the the the the the the the the the the the the the the the the the the the the the the",
    "total total total total total total total total total total total total total total total",
    "1111 1111 1111 1111 1111 1111 1111 1111 1111 1111 1111 1111 1111 1111 1111 1111 1111",
    "of of of of of of of of of of of of of of of of of of of of of of of of of of of of of of",
    "Page 1 of 2 Page 2 of 2 Page 1 of 2 Page 2 of 2 Page 1 of 2 Page 2 of 2 Page 1 of 2 Page 2 of 2",
]
SPANS = [(300, 60), (250, 90), (400, 40), (220, 120)]  # chunk width and overlap, in pixels (10 per character)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(("width", "lap"), SPANS)
@pytest.mark.parametrize("jitter", [0, 8])
def test_stitching_keeps_every_token_once(text, width, lap, jitter):
    """Known overlaps of 4 to 12 characters, repeated words across the seam, boxes off by up to 8
    pixels (0.8 characters; the Latin reader's two readings of one token are 0.2 line heights apart
    on average, 0.76 at most): the stitched line is the text, nothing doubled, nothing lost."""
    spans = _spans(len(text), width, lap)
    assert len(spans) >= 3
    for seed in range(5):
        line = chunks.stitch(_pieces(text, spans, jitter=jitter, seed=seed), HEIGHT)
        assert _text(line) == text, seed


@pytest.mark.parametrize(("width", "lap"), SPANS)
def test_a_run_of_one_character_is_placed_by_the_boxes_alone(width, lap):
    """No word or space to anchor the seam: the boxes say which readings are one glyph, so they must
    agree within a fifth of a character (a chunk cut at word gaps anchors real text on its words)."""
    text = "a" * 90
    for seed in range(5):
        line = chunks.stitch(_pieces(text, _spans(len(text), width, lap), jitter=2, seed=seed), HEIGHT)
        assert _text(line) == text, seed


@pytest.mark.parametrize("text", TEXTS)
def test_a_misread_token_at_a_cut_edge_is_not_kept(text):
    """A chunk reads the glyph its cut halves badly: the seam falls inside the overlap, away from
    both chunks' edges, so neither misreading is kept."""
    spans = _spans(len(text), 300, 100)
    line = chunks.stitch(_pieces(text, spans, edge_errors=True), HEIGHT)
    assert _text(line) == text


def test_subword_tokens_are_stitched_whole():
    """BPE tokens with a word-start mark, the right chunk's first word read without it."""
    words = "amount due 1234.56 paid by bank transfer amount due on the amount due date".split()
    tokens, at = [], 0
    for i, w in enumerate(words):
        start = at + (1 if i else 0)
        pieces = [w[:3], w[3:]] if len(w) > 4 else [w]
        for j, p in enumerate(pieces):
            a = start + sum(len(q) for q in pieces[:j])
            tokens.append((("Ġ" if i and not j else "") + p, a - (1 if i and not j else 0), a + len(p)))
        at = start + len(w)
    text = " ".join(words)
    spans = _spans(len(text), 260, 80)
    line = chunks.stitch(_pieces(text, spans, tokens=tokens, jitter=4), HEIGHT)
    assert _text(line) == text


def test_the_line_confidence_is_over_the_kept_tokens():
    text = TEXTS[0]
    pieces = _pieces(text, _spans(len(text), 300, 60))
    line = chunks.stitch(pieces, HEIGHT)
    every = [-0.5, *line.logprobs, -0.25]  # the first chunk's lead, the kept tokens, the last chunk's tail
    assert line.confidence == pytest.approx(sum(every) / len(every))
    assert len(line.logprobs) == len(text)


def test_with_nothing_in_common_the_seam_is_the_middle_of_the_overlap():
    a = _pieces("abcdefghij", [(0, 100)])[0]
    b = _pieces("0123456789klmnop", [(60, 160)])[0]
    b.tokens = ["z"] * len(b.tokens)
    assert chunks.seam(a, b, HEIGHT) == (8, 2)  # a's tokens left of x=80, b's from there on


def test_a_line_is_planned_in_chunks_no_wider_than_the_model_reads_cut_at_word_gaps():
    text = synthetic.random_text(random.Random(3), 40, 40)[:150]
    img = synthetic.render_line(text, size=24)
    white = chunks.word_gaps(img)
    assert len(white) >= text.count(" ") - 2, "word spaces are white gaps; letter spacing is not"
    assert len(white) <= text.count(" ") + 3, "and the margins"
    aspect = 512 / 24
    spans = chunks.plan(img.width, img.height, aspect, overlap=2.0, white=white)
    assert spans[0][0] == 0 and spans[-1][1] == img.width and len(spans) >= 3
    mids = {(a + b) // 2 for a, b in white}
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a0 < b0 < a1 < b1, "neighbours overlap and advance"
        assert a1 - b0 >= img.height, "by at least a line height"
        assert a1 in mids and b0 in mids, "cut on word gaps"
    assert all(b - a <= aspect * img.height for a, b in spans)
    assert chunks.plan(500, 30, aspect, overlap=2.0, white=white) == [(0, 500)]
    assert chunks.plan(700, 30, aspect, overlap=2.0, tolerance=1.1) == [(0, 700)]
    # No gaps at all (one long word): cut where planned, overlap kept.
    spans = chunks.plan(2000, 30, aspect, overlap=2.0)
    assert all(a1 - b0 >= 30 for (_, a1), (b0, _) in zip(spans, spans[1:]))


def test_the_model_aspect_comes_from_the_image_processor():
    from transformers import DetrImageProcessor, ViTImageProcessor

    detr = DetrImageProcessor(size={"max_height": 24, "max_width": 512}, pad_size={"height": 24, "width": 512})
    assert chunks.model_aspect(detr, (1, 128)) == pytest.approx(512 / 24)
    vit = ViTImageProcessor(size={"height": 384, "width": 384})
    assert chunks.model_aspect(vit, (24, 24)) == chunks.STRETCHED_ASPECT


def test_painted_boxes_come_back_from_attention():
    boxes = [(0, 2, 40, 28), (35, 0, 80, 30), (700, 3, 900, 25), (1390, 0, 1400, 30)]
    content = ((0, 0, 512, 11), (512, 24))  # a 1400 x 30 crop, aspect kept: scaled to 512 x 11
    attn = chunks.paint(boxes, (1, 128), (1400, 30), content)
    assert attn.shape == (4, 129)
    back = localize.token_boxes(attn, (1, 128), (1400, 30), lambda b: b, 0.5, content)
    for (x0, _, x1, _), (b0, _, b1, _) in zip(boxes, back):
        assert b0 <= x0 and x1 <= b1 and b1 - b0 <= x1 - x0 + 2 * 1400 / 128 + 2
        assert 0 <= b0 < b1 <= 1400


# The committed Latin reader on long lines.

SIZES = (24, 28)  # the demo's size and one above: the sizes this reader reads best (see the report's table)
LINES = 16


def _text_of(rng: random.Random, n: int) -> str:
    """Document-like text (``synthetic.random_text``) of about ``n`` characters, cut at a word."""
    text = ""
    while len(text) < n:
        text = f"{text} {synthetic.random_text(rng)}".strip()
    cut = text[:n]
    if len(text) > n and text[n] != " ":
        cut = cut[:cut.rindex(" ")]
    return cut.strip()


def _lines(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    texts = [_text_of(rng, n) for _ in range(LINES)]
    return [(synthetic.render_line(t, size=rng.choice(SIZES)), t) for t in texts]


@pytest.fixture(scope="module")
def latin_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("latin") / "onnx"
    export_trocr(str(readers.path("latin")), str(out), ExportConfig(variants=["fp32", "int8"], parity_images=16,
                                                                    threads=1))
    return out


def _cer(rec: Recognizer, pairs) -> float:
    read = []
    for i in range(0, len(pairs), 8):
        read += [r.text for r in rec.read([img for img, _ in pairs[i:i + 8]])]
    return corpus_cer(read, [t for _, t in pairs])


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_a_long_line_reads_as_well_as_a_short_one(latin_onnx, variant):
    """120 characters (three chunks) within a point of 30 (one); read whole, the same line is lost
    (measured 0.86 CER whole, 0.002 to 0.004 chunked, 0.007 at 30 characters)."""
    rec = Recognizer(latin_onnx, RecognizeConfig(variant=variant, threads=1))
    short, long_ = _lines(30, 30), _lines(120, 120)
    assert len(rec.plan(long_[0][0])) >= 2 and len(rec.plan(short[0][0])) == 1
    short_cer, long_cer = _cer(rec, short), _cer(rec, long_)
    assert long_cer <= short_cer + 0.01, (short_cer, long_cer)
    whole = Recognizer(latin_onnx, RecognizeConfig(variant=variant, threads=1, chunk_long_lines=False))
    assert _cer(whole, long_[:4]) > 0.3, "without chunks the long lines are not read (else this test shows nothing)"


def test_stitched_token_boxes_go_left_to_right_inside_the_crop_where_the_words_are(latin_onnx):
    rec = Recognizer(latin_onnx, RecognizeConfig(variant="fp32", threads=1))
    rng = random.Random(7)
    texts = [_text_of(rng, 120) for _ in range(6)]
    pairs = [(synthetic.render_line(t, size=24), t) for t in texts]
    font = synthetic.load_font(synthetic.DEFAULT_FONT, 24)
    checked = 0
    for (img, text), res in zip(pairs, rec.read([img for img, _ in pairs])):
        assert len(rec.plan(img)) >= 2
        assert res.boxes is not None and len(res.boxes) == len(res.tokens) == len(res.token_logprobs)
        width, height = img.size
        assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in res.boxes)
        assert all(b[0] >= a[0] for a, b in zip(res.boxes, res.boxes[1:])), "left to right"
        middles = [(b[0] + b[2]) / 2 for b in res.boxes]
        assert middles[-1] - middles[0] > 0.8 * width, "over the whole line, not one chunk's width"
        # Through line_records' path: the painted attention gives boxes that hold these.
        again = localize.token_boxes(res.attention, rec.grid, img.size, lambda b: b, rec.config.box_threshold,
                                     rec.content_box(img.size))
        assert all(a[0] <= b[0] and b[2] <= a[2] for a, b in zip(again, res.boxes))
        assert all(b[0] >= a[0] for a, b in zip(again, again[1:]))
        if res.text != text:
            continue
        # Each word's box over the word as drawn (its true place from the font's advances).
        left, at = font.getbbox(text)[0], 0
        for word, group in zip(text.split(" "), localize.group_words(res.tokens)):
            start = text.index(word, at)
            at = start + len(word)
            x0, x1 = 6 - left + font.getlength(text[:start]), 6 - left + font.getlength(text[:at])
            box = localize.union([res.boxes[i] for i in group])
            assert abs((box[0] + box[2]) / 2 - (x0 + x1) / 2) <= height, (word, box, x0, x1)
        checked += 1
    assert checked


def test_both_backends_stitch_alike(latin_onnx):
    img, text = _lines(120, 11)[0]
    onnx = Recognizer(latin_onnx, RecognizeConfig(variant="fp32", threads=1)).read([img])[0]
    torch_ = Recognizer(readers.path("latin"), RecognizeConfig(backend="torch", threads=1)).read([img])[0]
    assert onnx.text == torch_.text
    assert onnx.tokens == torch_.tokens and onnx.confidence == pytest.approx(torch_.confidence, abs=1e-3)
    assert np.abs(np.array(onnx.boxes) - np.array(torch_.boxes)).max() <= 12


def test_records_of_a_chunked_line_carry_its_stitched_boxes_in_page_pixels():
    """line_records prefers a stitched line's own boxes (crop pixels) to drawing them from attention."""
    from PIL import Image

    from inkbooth.ocr.batch.results import line_records
    from inkbooth.ocr.layout.lines import Line
    from inkbooth.ocr.recognition.recognizer import LineResult, RecognizeConfig

    line = Line(page=0, box=(100, 50, 700, 74), image=Image.new("L", (600, 24), 255),
                to_page=lambda b: (b[0] + 100, b[1] + 50, b[2] + 100, b[3] + 50))
    res = LineResult(text="ab cd", confidence=-0.1, tokens=["ab", "Ġcd"], token_logprobs=[-0.1, -0.2],
                     attention=None, boxes=[(10, 2, 60, 22), (300, 2, 380, 22)])
    (rec,) = line_records("doc.png", [line], [res], (1, 128), RecognizeConfig())
    assert [t["box"] for t in rec["tokens"]] == [[110, 52, 160, 72], [400, 52, 480, 72]]
    assert [w["text"] for w in rec["words"]] == ["ab", "cd"]


def test_leaders_are_read_with_the_dots_the_line_has(latin_onnx):
    """A contents line's dot leader, long enough to be read in chunks or not, comes out with exactly the
    dots drawn, though the decoder alone miscounts them (and at a seam may write a stray character among
    them); the tokens keep their boxes."""
    import re

    rng = random.Random(5)
    pairs = []
    for k in range(8):
        title, n = _text_of(rng, rng.randint(12, 30)), rng.randint(8, 60)
        text = f"{k + 1}.{rng.randint(1, 9)} {title} {' '.join('.' * n)} {rng.randint(2, 300)}"
        pairs.append((synthetic.render_line(text, size=24), text))
    counted = Recognizer(latin_onnx, RecognizeConfig(variant="fp32", threads=1))
    alone = Recognizer(latin_onnx, RecognizeConfig(variant="fp32", threads=1, count_leaders=False))
    images = [img for img, _ in pairs]
    assert any(len(counted.plan(img)) > 1 for img in images) and any(len(counted.plan(img)) == 1 for img in images)

    def runs(text: str) -> list[int]:
        return [m.group(0).count(".") for m in re.finditer(r"\.(?: ?\.){3,}", text)]

    truth = [runs(t) for _, t in pairs]
    read, plain = counted.read(images), alone.read(images)
    assert [runs(r.text) for r in read] == truth, [r.text for r in read]
    assert sum(runs(r.text) != t for r, t in zip(plain, truth)) >= 2, \
        "the decoder alone counts these right: this test shows nothing"
    for r in read:
        assert len(r.tokens) == len(r.token_logprobs) == len(r.boxes) and r.attention.shape[0] == len(r.tokens)
