"""Labelled line images: the label file beside them, and decoding one image.

A folder or ``s3://`` prefix holds line images and one label file:

* ``labels.jsonl``: one JSON object a line, ``{"image": "crops/0001.png", "text": "Total 12.50"}``
  (``file_name`` is accepted for ``image``, as in Hugging Face image folders);
* ``labels.tsv``: ``<image>\\t<text>`` a line (an optional ``image\\ttext`` header is skipped).

Image names are relative to the prefix. Fine-tuning data, prepared line sets and an export's parity
images all use this format.

A label file is UTF-8 (a byte-order mark is dropped); one that is not is refused, naming the byte
and its line, never guessed at: any byte string decodes as Latin-1, so a guess would turn a
Windows-1252 or UTF-16 file into wrong labels, which the model would then learn. Records end at
``"\\n"`` only (a ``"\\r"`` before it is dropped): ``str.splitlines()`` also ends lines at U+2028,
U+2029, U+0085 and \\x0b, \\x0c, \\x1c-\\x1e, which ``json.dumps(ensure_ascii=False)`` leaves raw inside
a string. An image named twice with different texts is a problem record at each entry (neither
text is used: one of them is wrong and nothing says which); named twice with the same text, it is
one line (logged).

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from inkbooth import storage

log = logging.getLogger(__name__)

LABEL_FILES = ("labels.jsonl", "labels.tsv")

# Largest line image (width x height) decoded by default: far above any line crop (a 300 dpi line
# across an A3 page is ~3500 x 150 pixels; a whole A4 page ~8.7 M pixels), far below the 60 M of a
# page (``PagesConfig.max_pixels``): a line image is one of thousands held in memory while training.
MAX_LINE_PIXELS = 25_000_000


class UnreadableImage(ValueError):
    """A line image that cannot be decoded; the message names it and says what is wrong."""


@dataclasses.dataclass
class LabelledLine:
    image: str  # relative to the data prefix (in a prepared set: images/<sha256><suffix>)
    text: str
    split: str = ""
    source: str = ""  # the image's name in the original data
    line: int = dataclasses.field(default=0, compare=False, repr=False)  # its line in the label file read


def label_file(data: str) -> str:
    """The URI of the label file under ``data`` (labels.jsonl preferred)."""
    for name in LABEL_FILES:
        uri = storage.join(data, name)
        if storage.exists(uri):
            return uri
    raise ValueError(f"{data}: no {' or '.join(LABEL_FILES)} here: expected line images with a label file")


def records(text: str) -> Iterator[tuple[int, str]]:
    r"""(line number, line) of a JSON Lines or TSV text. Lines end at ``"\n"`` only, and a ``"\r"``
    before it is dropped: never ``str.splitlines()``, which also splits at U+2028, U+2029, U+0085,
    \x0b, \x0c and \x1c-\x1e, characters that JSON strings (``ensure_ascii=False``) and TSV texts hold."""
    for number, raw in enumerate(text.split("\n"), 1):
        yield number, raw[:-1] if raw.endswith("\r") else raw


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _convert(uri: str, encoding: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return f"`iconv -f {encoding} -t UTF-8 {name} > {name}.utf8 && mv {name}.utf8 {name}`"


def decode_label_text(blob: bytes, uri: str) -> str:
    """The text of a label file: UTF-8, a leading byte-order mark dropped. Anything else is refused
    with a ``ValueError`` naming the file, the first bad byte's offset and line, and the fix."""
    skipped = 0
    if blob.startswith(codecs.BOM_UTF8):
        blob, skipped = blob[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    for bom, encoding in _WIDE_BOMS:
        if blob.startswith(bom):
            raise ValueError(f"{uri}: not UTF-8: it is {encoding} text (it starts with a {encoding} byte-order "
                             f"mark); label files must be UTF-8: convert it once, e.g. {_convert(uri, encoding)}")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        line = blob.count(b"\n", 0, e.start) + 1
        start = max(blob.rfind(b"\n", 0, e.start) + 1, e.start - 30)
        near = blob[start:e.start + 10].split(b"\n", 1)[0].decode("utf-8", "replace")
        raise ValueError(f"{uri}: not UTF-8: byte 0x{blob[e.start]:02x} at offset {e.start + skipped} (line {line}, "
                         f"near {near!r}) is not valid UTF-8; label files must be UTF-8. Saved as Latin-1 or "
                         f"Windows-1252 (Excel, older Windows tools)? Convert it once: "
                         f"{_convert(uri, 'WINDOWS-1252')}") from None
    if "\x00" in text:
        offset = blob.index(b"\x00")
        line = blob.count(b"\n", 0, offset) + 1
        raise ValueError(f"{uri}: not UTF-8 text: a NUL byte at offset {offset + skipped} (line {line}); "
                         f"UTF-16 without a byte-order mark? Label files must be UTF-8: convert it once, e.g. "
                         f"{_convert(uri, 'UTF-16LE')}")
    return text


def parse_labels(text: str, where: str) -> tuple[list[LabelledLine], list[dict[str, Any]]]:
    """Entries and problems (each naming its line, and its image where it has one) of a labels.jsonl
    or labels.tsv text. An image named again with the same text is one entry (logged); named again
    with another text, each of its entries is a problem and none is used."""
    entries: list[LabelledLine] = []
    problems: list[dict[str, Any]] = []
    jsonl = where.endswith(".jsonl")
    first = True
    for number, raw in records(text):
        if not raw.strip():
            continue
        header, first = first, False
        if jsonl:
            try:
                item = json.loads(raw)
            except json.JSONDecodeError as e:
                problems.append({"line": number, "error": f"{where}:{number}: not valid JSON ({e.msg})"})
                continue
            if not isinstance(item, dict):
                problems.append({"line": number, "error": f"{where}:{number}: expected a JSON object"})
                continue
            image, label = item.get("image", item.get("file_name")), item.get("text")
        else:
            image, sep, label = raw.partition("\t")
            if header and (image, label) == ("image", "text"):
                continue
            if not sep:
                problems.append({"line": number, "error": f"{where}:{number}: expected <image>\\t<text>"})
                continue
        if not isinstance(image, str) or not image:
            problems.append({"line": number, "error": f"{where}:{number}: no image name"})
            continue
        if not isinstance(label, str) or not label.strip():
            problems.append({"line": number, "image": image,
                             "error": f"{where}:{number}: {image}: empty or missing text"})
            continue
        try:
            storage.check_part(image, "image name")
        except ValueError as e:
            problems.append({"line": number, "image": image, "error": f"{where}:{number}: {e}"})
            continue
        # Any whitespace run (a tab, a line or paragraph separator inside a label) is one space.
        entries.append(LabelledLine(image, " ".join(label.split()), line=number))
    return _without_duplicates(entries, problems, where), problems


def _without_duplicates(entries: list[LabelledLine], problems: list[dict[str, Any]],
                        where: str) -> list[LabelledLine]:
    """``entries`` with each image once; an image labelled with different texts adds a problem per entry."""
    by_name: dict[str, list[LabelledLine]] = {}
    for e in entries:
        by_name.setdefault(e.image, []).append(e)
    kept, again = [], []
    for e in entries:
        same = by_name[e.image]
        if len(same) == 1:
            kept.append(e)
            continue
        texts = list(dict.fromkeys(x.text for x in same))
        if len(texts) == 1:
            (kept if e is same[0] else again).append(e)
            continue
        numbers = ", ".join(str(x.line) for x in same)
        problems.append({"line": e.line, "image": e.image,
                         "error": f"{where}:{e.line}: {e.image}: labelled {len(same)} times with {len(texts)} "
                                  f"different texts (lines {numbers}); none of them is used: keep the right one"})
    if again:
        shown = ", ".join(f"line {e.line} ({e.image})" for e in again[:5]) + (" ..." if len(again) > 5 else "")
        log.info("%s: %d entries repeat an image with the same text; each image counted once: %s",
                 where, len(again), shown)
    return kept


def read_labels(data: str) -> tuple[str, list[LabelledLine], list[dict[str, Any]]]:
    """The label file under ``data``, its entries and the problems of the entries left out."""
    labels_uri = label_file(data)
    entries, problems = parse_labels(decode_label_text(storage.read_bytes(labels_uri), labels_uri), labels_uri)
    return labels_uri, entries, problems


def open_image(blob: bytes, name: str, max_pixels: int = MAX_LINE_PIXELS) -> Any:
    """The image encoded in ``blob``, loaded; ``UnreadableImage`` naming ``name`` if it cannot be.

    Its size is checked from the header, before any pixel is decoded: over ``max_pixels`` it is
    refused as a possible decompression bomb (as is anything over Pillow's own limit)."""
    from PIL import Image, UnidentifiedImageError

    if not blob:
        raise UnreadableImage(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # Pillow warns between 1x and 2x its limit; ours is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(blob))
    except UnidentifiedImageError:
        raise UnreadableImage(f"{name}: not an image that can be read (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"{name}: over Pillow's limit, so over the limit of {max_pixels} (max_pixels) too "
                              f"({e}); refused as a possible decompression bomb") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise UnreadableImage(f"{name}: cannot be decoded (truncated or corrupt?): {e}") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise UnreadableImage(f"{name}: image is {w}x{h} pixels, over the limit of {max_pixels} (max_pixels); "
                              f"refused as a possible decompression bomb")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001
        img.close()
        raise UnreadableImage(f"{name}: cannot be decoded (truncated or corrupt?): {e}") from None
    return img


def decode(blob: bytes, *, name: str = "line image", max_pixels: int = MAX_LINE_PIXELS) -> Any:
    """An encoded line image as RGB (transparency composited on white); ``UnreadableImage`` naming
    ``name`` if it cannot be decoded or is over ``max_pixels``."""
    from PIL import Image

    img = open_image(blob, name, max_pixels)
    try:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img.convert("RGBA"))
        return img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - an odd mode or a broken palette
        raise UnreadableImage(f"{name}: cannot be turned into RGB ({img.mode}): {e}") from None
