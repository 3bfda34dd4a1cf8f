"""Labelled line images: the label file beside them, and decoding one image.

A folder or ``s3://`` prefix holds line images and one label file:

* ``labels.jsonl``: one JSON object a line, ``{"image": "crops/0001.png", "text": "Total 12.50"}``
  (``file_name`` is accepted for ``image``, as in Hugging Face image folders);
* ``labels.tsv``: ``<image>\\t<text>`` a line (an optional ``image\\ttext`` header is skipped).

Image names are relative to the prefix. Fine-tuning data, prepared line sets and an export's parity
images all use this format.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

from inkbooth import storage

LABEL_FILES = ("labels.jsonl", "labels.tsv")


@dataclasses.dataclass
class LabelledLine:
    image: str  # relative to the data prefix (in a prepared set: images/<sha256><suffix>)
    text: str
    split: str = ""
    source: str = ""  # the image's name in the original data


def label_file(data: str) -> str:
    """The URI of the label file under ``data`` (labels.jsonl preferred)."""
    for name in LABEL_FILES:
        uri = storage.join(data, name)
        if storage.exists(uri):
            return uri
    raise ValueError(f"{data}: no {' or '.join(LABEL_FILES)} here: expected line images with a label file")


def parse_labels(text: str, where: str) -> tuple[list[LabelledLine], list[dict[str, Any]]]:
    """Entries and problems (each naming its line) of a labels.jsonl or labels.tsv text."""
    entries: list[LabelledLine] = []
    problems: list[dict[str, Any]] = []
    jsonl = where.endswith(".jsonl")
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
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
            if number == 1 and (image, label) == ("image", "text"):
                continue
            if not sep:
                problems.append({"line": number, "error": f"{where}:{number}: expected <image>\\t<text>"})
                continue
        if not isinstance(image, str) or not image:
            problems.append({"line": number, "error": f"{where}:{number}: no image name"})
            continue
        if not isinstance(label, str) or not label.strip():
            problems.append({"line": number, "image": image, "error": f"{where}:{number}: {image}: empty or missing text"})
            continue
        try:
            storage.check_part(image, "image name")
        except ValueError as e:
            problems.append({"line": number, "error": f"{where}:{number}: {e}"})
            continue
        entries.append(LabelledLine(image, " ".join(label.split())))
    return entries, problems


def read_labels(data: str) -> tuple[str, list[LabelledLine], list[dict[str, Any]]]:
    """The label file under ``data``, its entries and the problems of the entries left out."""
    labels_uri = label_file(data)
    entries, problems = parse_labels(storage.read_text(labels_uri), labels_uri)
    return labels_uri, entries, problems


def decode(blob: bytes) -> Any:
    """An encoded line image as RGB (transparency composited on white)."""
    from PIL import Image

    img = Image.open(io.BytesIO(blob))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img.convert("RGBA"))
    return img.convert("RGB")
