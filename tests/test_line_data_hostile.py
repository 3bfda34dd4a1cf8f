"""Hostile fine-tuning data: label files and line images a team might really bring.

For every case the run either trains on the good lines, with ``problems.jsonl`` naming each bad
entry, or is refused up front with a message naming the file and what is wrong with it.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib

import pytest

from inkbooth import artifacts, storage, tiny
from inkbooth.ocr.documents import labels as labelfiles
from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.training import finetune, lines
from tests.test_finetune import FAST, SMALL

# Everything str.splitlines() splits on besides "\n" and "\r": json.dumps(ensure_ascii=False) leaves
# them raw in a JSON string (U+2028/U+2029/U+0085), and \x1c-\x1e, \x0b, \x0c are legal in a TSV text.
SEPARATORS = "\u2028\u2029\u0085\x1c\x1d\x1e\x0b\x0c"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny.build_tiny_trocr(tmp_path_factory.mktemp("base") / "reader", SMALL)


def crops(folder, n: int, seed: int = 0, prefix: str = "crops/line") -> list[tuple[str, str]]:
    """``n`` rendered line images saved under ``folder`` (no label file): their names and texts."""
    rows = []
    for i, (img, text) in enumerate(synthetic.line_images(n, seed=seed)):
        name = f"{prefix}{i:03d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(folder / name)
        rows.append((name, text))
    return rows


def png_bytes(size=(40, 12)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, 255).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A 1-bit PNG of ``width`` x ``height`` white pixels: a few tens of KB, 400 megapixels decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row * 500) for _ in range(height // 500)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def write_jsonl(folder, rows, *, ensure_ascii: bool = False, bom: bool = False, newline: str = "\n") -> None:
    body = "".join(json.dumps({"image": a, "text": b}, ensure_ascii=ensure_ascii) + newline for a, b in rows)
    (folder / "labels.jsonl").write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8"))


def write_tsv(folder, rows, *, encoding: str = "utf-8", bom: bool = False, newline: str = "\n") -> None:
    body = f"image\ttext{newline}" + "".join(f"{a}\t{b}{newline}" for a, b in rows)
    (folder / "labels.tsv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode(encoding))


def problems_of(prepared) -> list[dict]:
    text = artifacts.read_text(str(prepared), "problems.jsonl")
    return [json.loads(x) for x in text.split("\n") if x]


def prepared_entries(prepared) -> list[dict]:
    text = artifacts.read_text(str(prepared), "labels.jsonl")
    return [json.loads(x) for x in text.split("\n") if x]


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
def test_line_separators_inside_texts_keep_their_labels(tmp_path, fmt):
    """Before: str.splitlines() cut each such line in two, and both halves were dropped as 'not valid JSON'."""
    data = tmp_path / "data"
    rows = crops(data, 16, seed=1)
    rows = [(name, f"{text[:3]}{SEPARATORS[i % len(SEPARATORS)]}{text[3:]}" if i < 12 else text)
            for i, (name, text) in enumerate(rows)]
    (write_jsonl if fmt == "jsonl" else write_tsv)(data, rows)
    m = lines.prepare_lines(str(data), str(tmp_path / "prepared"))
    assert m.metrics["lines"] == 16 and m.metrics["problems"] == 0, problems_of(tmp_path / "prepared")
    texts = {e["source"]: e["text"] for e in prepared_entries(tmp_path / "prepared")}
    # A line separator inside a line's label is whitespace: it becomes one space, like a tab or a run of spaces.
    for name, text in rows[:12]:
        assert texts[name] == " ".join(text.split()) and not set(texts[name]) & set(SEPARATORS)
    loaded = lines.load_lines(str(tmp_path / "prepared"))
    assert len(loaded.train) + len(loaded.heldout) == 16


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_line_separators_in_image_names(base, tmp_path, ensure_ascii):
    """Names with U+2028/U+2029/U+0085 are ordinary file names: they train. Before, with them escaped in
    the input, prepare_lines wrote them raw into the prepared labels.jsonl and every fine-tune then
    failed in load_lines with a JSONDecodeError naming no file. Names with C0 controls are refused, each
    as a problem record naming it."""
    data = tmp_path / "data"
    rows = crops(data, 14, seed=2)
    odd = []
    for i, c in enumerate(SEPARATORS):
        name = f"crops/odd{c}name{i}.png"
        (data / name).write_bytes((data / rows[i][0]).read_bytes())
        odd.append((name, rows[i][1] + " again"))
    write_jsonl(data, rows + odd, ensure_ascii=ensure_ascii)
    prepared = tmp_path / "prepared"
    m = lines.prepare_lines(str(data), str(prepared))
    refused = {p["image"]: p["error"] for p in problems_of(prepared)}
    assert set(refused) == {name for name, _ in odd[3:]}, refused
    assert all("control characters" in e and "labels.jsonl:" in e for e in refused.values())
    assert m.metrics["lines"] == 14 + 3
    assert {e["source"] for e in prepared_entries(prepared)} >= {name for name, _ in odd[:3]}
    loaded = lines.load_lines(str(prepared))
    assert len(loaded.train) + len(loaded.heldout) == 17
    cfg = finetune.FinetuneConfig(**{**FAST, "max_steps": 1})
    trained = finetune.finetune_trocr(str(base), str(tmp_path / "out"), cfg, data=str(data)).metrics
    assert trained["steps"] == 1 and trained["train_lines"] + trained["heldout_lines"] == 17


def test_a_latin1_label_file_is_refused_naming_the_file_the_byte_and_the_fix(base, tmp_path):
    data = tmp_path / "data"
    rows = crops(data, 6, seed=3)
    rows[2] = (rows[2][0], "Café crème 12,50")
    write_tsv(data, rows, encoding="latin-1")
    with pytest.raises(ValueError) as refused:
        lines.prepare_lines(str(data), str(tmp_path / "prepared"))
    message = str(refused.value)
    assert str(data / "labels.tsv") in message and "not UTF-8" in message
    assert "0xe9" in message and "line 4" in message and "offset" in message, message
    assert "iconv" in message, "says how to fix it"
    assert not artifacts.is_published(str(tmp_path / "prepared"))
    with pytest.raises(ValueError, match="labels.tsv: not UTF-8"):  # the fine-tune is refused before training
        finetune.finetune_trocr(str(base), str(tmp_path / "out"), finetune.FinetuneConfig(**FAST), data=str(data))
    # UTF-16 (Windows "Unicode") is named as such.
    (data / "labels.tsv").write_bytes("image\ttext\r\n".encode("utf-16"))
    with pytest.raises(ValueError, match="labels.tsv: .*UTF-16"):
        lines.prepare_lines(str(data), str(tmp_path / "prepared"))


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_byte_order_mark_and_crlf_line_ends_lose_no_line(tmp_path, fmt, newline):
    """Before: a BOM made the first JSON line invalid, or the TSV header an entry for a file '\\ufeffimage'."""
    data = tmp_path / "data"
    rows = crops(data, 8, seed=4)
    (write_jsonl if fmt == "jsonl" else write_tsv)(data, rows, bom=True, newline=newline)
    m = lines.prepare_lines(str(data), str(tmp_path / "prepared"))
    assert m.metrics["lines"] == 8 and m.metrics["problems"] == 0, problems_of(tmp_path / "prepared")
    assert {(e["source"], e["text"]) for e in prepared_entries(tmp_path / "prepared")} == set(rows)


def test_duplicate_names_with_different_texts_are_problems_and_identical_ones_collapse(tmp_path, caplog):
    data = tmp_path / "data"
    rows = crops(data, 10, seed=5)
    conflicting = (rows[1][0], rows[1][1] + " (corrected)")
    write_jsonl(data, rows + [conflicting, rows[2], (rows[3][0], "  " + rows[3][1].replace(" ", "  ") + " ")])
    with caplog.at_level(logging.INFO):
        m = lines.prepare_lines(str(data), str(tmp_path / "prepared"))
    problems = problems_of(tmp_path / "prepared")
    # Neither text of the conflicting pair is used: one of them is wrong and we cannot tell which.
    assert [p["image"] for p in problems] == [rows[1][0], rows[1][0]]
    assert [p["line"] for p in problems] == [2, 11]
    assert all("2 different texts" in p["error"] and "lines 2, 11" in p["error"] for p in problems), problems
    # The same text twice (also after whitespace is normalised) is one line, with a note.
    assert m.metrics["lines"] == 9 and m.metrics["problems"] == 2
    assert "counted once" in caplog.text and rows[2][0] in caplog.text
    assert rows[1][0] not in {e["source"] for e in prepared_entries(tmp_path / "prepared")}


UNSAFE = ["../escape.png", "/etc/passwd", "crops/../../outside.png", "C:\\Windows\\line.png", "crops//double.png",
          "crops/" + "x" * 300 + ".png"]  # the last: legal as a key, too long for a local file name


def test_unsafe_and_unaddressable_names_are_problem_records_naming_the_entry(tmp_path):
    """Before: '..', absolute and backslash names were refused (UnsafeKeyError) into records without an
    'image' field; a 300-byte file name ended the whole run in line_data_hash (StorageError)."""
    data = tmp_path / "data"
    rows = crops(data, 12, seed=6)
    write_jsonl(data, rows + [(name, "some text") for name in UNSAFE])
    prepared = tmp_path / "prepared"
    m = lines.prepare_lines(str(data), str(prepared))
    problems = problems_of(prepared)
    assert [p["image"] for p in problems] == UNSAFE, problems
    assert all(p["error"].startswith(f"{data / 'labels.jsonl'}:{p['line']}: ") for p in problems), problems
    assert [p["line"] for p in problems] == list(range(13, 13 + len(UNSAFE)))
    assert m.metrics["lines"] == 12 and m.metrics["problems"] == len(UNSAFE)
    assert lines.line_data_hash(str(data)) == m.inputs["data"]


def test_a_name_too_long_for_an_s3_key_is_a_problem_record(bucket, tmp_path):
    """Before: the name passed the per-name check (< 1024 bytes) but not joined to the prefix: UnsafeKeyError
    from the storage layer ended the run."""
    data = tmp_path / "data"
    rows = crops(data, 8, seed=7)
    long_name = "crops/" + "y" * 1010 + ".png"
    write_jsonl(data, rows + [(long_name, "too long a key")])
    storage.upload_dir(data, f"{bucket}/lines")
    m = lines.prepare_lines(f"{bucket}/lines", f"{bucket}/prepared")
    problems = problems_of(f"{bucket}/prepared")
    assert [p["image"] for p in problems] == [long_name] and "longer than 1024 bytes" in problems[0]["error"]
    assert m.metrics["lines"] == 8


def test_bad_images_and_texts_among_good_lines_are_problems_and_the_rest_trains(base, tmp_path, caplog):
    """A decompression bomb, a truncated PNG, a zero-byte file, a text file named .png, a 2x2 image, a
    10,000-character text and an empty one: each a problem record naming it; the good lines train.
    Before: the bomb ended prepare_lines (and so every fine-tune) with a DecompressionBombError naming no file."""
    data = tmp_path / "data"
    rows = crops(data, 30, seed=8)
    bad = {"crops/bomb.png": bomb_png(), "crops/truncated.png": (data / rows[0][0]).read_bytes()[:200],
           "crops/empty.png": b"", "crops/notes.png": b"these are my notes, not an image\n",
           "crops/tiny.png": png_bytes((2, 2))}
    for name, blob in bad.items():
        (data / name).write_bytes(blob)
    huge = (data / "crops/huge.png")
    huge.write_bytes((data / rows[1][0]).read_bytes())
    empty_text = data / "crops/blank.png"
    empty_text.write_bytes((data / rows[2][0]).read_bytes())
    extra = [(name, "a line") for name in bad] + [("crops/huge.png", "x" * 10_000), ("crops/blank.png", "")]
    write_jsonl(data, rows[:15] + extra + rows[15:])
    prepared = tmp_path / "prepared"
    with caplog.at_level(logging.WARNING):
        m = lines.prepare_lines(str(data), str(prepared))
    problems = {p["image"]: p["error"] for p in problems_of(prepared)}
    assert set(problems) == set(bad) | {"crops/huge.png", "crops/blank.png"}, problems
    assert "over the limit" in problems["crops/bomb.png"]
    assert "decompression bomb" in problems["crops/bomb.png"]
    assert "cannot be decoded" in problems["crops/truncated.png"]
    assert "empty file (0 bytes)" in problems["crops/empty.png"]
    assert "not an image" in problems["crops/notes.png"]
    assert "too small" in problems["crops/tiny.png"]
    assert "10000 characters" in problems["crops/huge.png"] and "max_text_chars" in problems["crops/huge.png"]
    assert "empty or missing text" in problems["crops/blank.png"]
    assert all(name in error for name, error in problems.items())
    assert m.metrics["lines"] == 30 and m.metrics["problems"] == 7
    cfg = finetune.FinetuneConfig(**{**FAST, "max_steps": 2})
    trained = finetune.finetune_trocr(str(base), str(tmp_path / "out"), cfg, data=str(data)).metrics
    assert trained["steps"] == 2 and trained["train_lines"] + trained["heldout_lines"] == 30


def test_a_bomb_that_slipped_into_a_prepared_set_is_skipped_not_fatal(tmp_path, caplog):
    """Images are decoded again while training: one that cannot be is left out of its batch with a
    warning naming it, and counted, never the end of the run."""
    good = [(png_bytes((60, 16)), f"line {i}") for i in range(5)]
    bomb, broken = bomb_png(), png_bytes((60, 16))[:60]
    lineset = lines.LineSet("mem://prepared", "hash", "data", [*good[:2], (bomb, "boom"), (broken, "cut"), *good[2:]],
                            [(bomb, "held-out boom"), good[0]])
    with pytest.raises(labelfiles.UnreadableImage, match="crops/bomb.png: .*over the limit"):
        labelfiles.decode(bomb, name="crops/bomb.png")
    cfg = finetune.FinetuneConfig(**{**FAST, "batch_size": 7})
    batches = finetune.Batches(lineset, None, cfg)
    with caplog.at_level(logging.WARNING):
        pairs = batches.batch(0)
        again = batches.batch(0)
    assert [t for _, t in pairs] == [t for _, t in again], "still a function of the step"
    assert sorted(t for _, t in pairs) == sorted(t for _, t in good), "every readable line, no unreadable one"
    assert "decompression bomb" in caplog.text and "cannot be decoded" in caplog.text
    sets = finetune.heldout_sets(lineset, None, cfg)
    assert [t for _, t, _, _ in sets["heldout"]] == ["line 0"]
