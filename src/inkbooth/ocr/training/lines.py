"""Labelled line crops for fine-tuning: reading them, their identity, and the prepared line set.

Input: a folder or ``s3://`` prefix holding line images and one label file beside them:

* ``labels.jsonl``: one JSON object a line, ``{"image": "crops/0001.png", "text": "Total 12.50"}``
  (``file_name`` is accepted for ``image``, as in Hugging Face image folders);
* ``labels.tsv``: ``<image>\t<text>`` a line (an optional ``image\ttext`` header is skipped).

Image names are relative to the prefix. ``prepare_lines`` checks every entry (the name is a safe
key, the image exists, decodes and is within ``max_pixels``, the text is neither empty nor over
``max_text_chars``, no other entry gives the image another text), records each bad one as a problem
naming its line and image and goes on (an unreadable item is never the end of the run), assigns each line
to ``train`` or ``heldout`` by a hash of its image name (so a line stays on its side as the data
grows, and retraining is evaluated on lines it never trained on) unless its labels.jsonl entry gives
its side (``"split": "train"`` or ``"heldout"``, as ``pdf_lines`` writes, so that all lines of one
document are on one side), and publishes a snapshot: the
images named by content, ``labels.jsonl`` with the split, ``problems.jsonl`` and a manifest whose
input hash is the data's identity (``line_data_hash``, which the retrain trigger compares).

May import ``inkbooth.ocr.documents``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.config import option, to_dict
from inkbooth.ocr.documents.labels import (
    MAX_LINE_PIXELS,
    LabelledLine,
    UnreadableImage,
    decode_label_text,
    label_file,
    open_image,
    parse_labels,
    read_labels,
    records,
)

log = logging.getLogger(__name__)


KIND = "ocr-lines"


SPLITS = ("train", "heldout")


@dataclasses.dataclass
class LinesConfig:
    """How labelled lines are checked and split."""

    holdout: float = option(0.1, "share of lines held out for evaluation, chosen by a hash of the image name")
    max_problem_share: float = option(0.5, "fail when more than this share of the entries is unusable")
    max_pixels: int = option(MAX_LINE_PIXELS, "largest line image (width x height) accepted; bigger is a problem "
                                              "record, refused as a possible decompression bomb",
                             min=1, max=2_000_000_000)
    max_text_chars: int = option(1000, "longest label accepted, in characters (a line's text, not a page's)",
                                 min=1, max=1_000_000)

    def validate(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not 0.0 <= self.max_problem_share <= 1.0:
            raise ValueError(f"max_problem_share must be in [0, 1], got {self.max_problem_share}")


def split_of(name: str, holdout: float) -> str:
    """``heldout`` for a stable ``holdout`` share of image names, else ``train``."""
    bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2**64
    return "heldout" if bucket < holdout else "train"


def _digest(uri: str) -> str:
    return storage.stat(uri).sha256 or hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def _image_digest(data: str, name: str) -> str:
    """The content hash of image ``name`` under ``data``; a name the store cannot address counts as such.

    A store that fails (connection, auth) raises; a local file system's refusal of one name (too long,
    a file where a folder should be) is that name's problem, not the store's."""
    try:
        return _digest(storage.join(data, name))
    except storage.NotFoundError:
        return "missing"
    except storage.UnsafeKeyError:
        return "unaddressable"
    except storage.StorageError:
        if storage.is_s3(data):
            raise
        return "unreadable"


def line_data_hash(data: str, labels: tuple[str, list[LabelledLine], Any] | None = None) -> str:
    """The identity of labelled line data: its label file and the images it names, by content.

    From the store's recorded checksums where objects carry one, so nothing is downloaded then.
    An image that is missing counts by its name, so adding it later changes the identity.
    ``labels`` is ``read_labels(data)`` where the caller holds it already.
    """
    labels_uri, entries, _ = labels or read_labels(data)
    h = hashlib.sha256(_digest(labels_uri).encode())
    for name in sorted({e.image for e in entries}):
        h.update(f"\n{name}\0{_image_digest(data, name)}".encode())
    return h.hexdigest()


def _check_image(data: bytes, name: str, max_pixels: int = MAX_LINE_PIXELS) -> str | None:
    """None if ``data`` decodes as a line image of at most ``max_pixels``, else what is wrong."""
    try:
        with open_image(data, name, max_pixels) as img:
            if img.width < 4 or img.height < 4:
                return f"{name}: image is {img.width}x{img.height} pixels, too small to be a line"
    except UnreadableImage as e:
        return str(e)
    return None


def _shown(name: str) -> str:
    """``name`` for a message: a very long one is cut (its problem record keeps it whole)."""
    return name if len(name) <= 120 else f"{name[:100]}...({len(name)} characters)"


def _followed(data: str, source: str | None) -> tuple[str, str | None]:
    """``data`` and ``source``, or, where ``data`` is a pointer file (``{"uri": ...}``, an
    ``inkbooth.lineage`` pointer artifact), the labelled lines it points to, twice."""
    if storage.is_s3(data) or not Path(data).is_file():
        return data, source
    try:
        uri = json.loads(Path(data).read_text(encoding="utf-8"))["uri"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{data}: a file, neither a folder of labelled lines nor a pointer to one") from None
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"{data}: a pointer without a uri")
    return uri, uri


def _given_splits(text: str, labels_uri: str) -> dict[int, Any]:
    """The ``split`` a labels.jsonl entry gives, by its line number (entries that give none are not here)."""
    given = {}
    if labels_uri.endswith(".jsonl"):
        for number, raw in records(text):
            try:
                item = json.loads(raw) if raw.strip() else None
            except json.JSONDecodeError:
                continue  # parse_labels records it
            if isinstance(item, dict) and "split" in item:
                given[number] = item["split"]
    return given


def _entry_problem(data: str, labels_uri: str, entry: LabelledLine,
                   config: LinesConfig) -> tuple[bytes | None, str | None]:
    """The image bytes of ``entry``, or what is wrong with the entry (never an exception for bad input)."""
    where = f"{labels_uri}:{entry.line}: "
    if len(entry.text) > config.max_text_chars:
        return None, (f"{where}{_shown(entry.image)}: text is {len(entry.text)} characters long, over "
                      f"max_text_chars ({config.max_text_chars}); a line's label, not a page's?")
    try:
        blob = storage.read_bytes(storage.join(data, entry.image))
    except storage.UnsafeKeyError as e:  # a safe name that is too long joined to this prefix (S3: 1024 bytes)
        return None, f"{where}{_shown(entry.image)}: cannot be addressed under {data}: {e}"
    except storage.StorageError as e:  # after the store's retries; a store that is down fails max_problem_share
        return None, f"{where}{_shown(entry.image)}: {e}"
    bad = _check_image(blob, _shown(entry.image), config.max_pixels)
    return (None, where + bad) if bad else (blob, None)


def prepare_lines(data: str, output: str, config: LinesConfig | None = None, *,
                  source: str | None = None) -> artifacts.Manifest:
    """Check and split the labelled lines under ``data``; publish the snapshot at ``output``.

    ``source`` is the data's URI to record, where ``data`` is a local copy of it (KFP's launcher
    copies imported inputs into the pod). ``data`` may also be a pointer to the labelled lines (a
    file naming their ``uri``: what the pdf-lines stage passes on when a run has no PDFs). A rerun on
    unchanged data with the same config finds the published set and returns it.
    """
    config = config or LinesConfig()
    config.validate()
    data, source = _followed(data, source)
    labels_uri = label_file(data)
    text = decode_label_text(storage.read_bytes(labels_uri), labels_uri)
    labels = (labels_uri, *parse_labels(text, labels_uri))
    given = _given_splits(text, labels_uri)
    data_hash = line_data_hash(data, labels)
    if artifacts.is_published(output):
        existing = artifacts.read_manifest(output)
        if existing.inputs.get("data") == data_hash and existing.config == to_dict(config):
            log.info("%s: these lines are prepared already; reusing them", output)
            return existing
    _, entries, problems = labels
    kept: list[LabelledLine] = []
    with storage.temp_dir("inkbooth-lines-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        for entry in entries:
            split = given.get(entry.line) or split_of(entry.image, config.holdout)
            if split not in SPLITS:
                problems.append({"line": entry.line, "image": entry.image,
                                 "error": f"{labels_uri}:{entry.line}: {_shown(entry.image)}: split is {split!r}, "
                                          f"not one of {', '.join(SPLITS)}"})
                continue
            blob, bad = _entry_problem(data, labels_uri, entry, config)
            if bad or blob is None:
                problems.append({"line": entry.line, "image": entry.image, "error": bad})
                continue
            name = f"images/{hashlib.sha256(blob).hexdigest()}{_suffix(entry.image)}"
            (work / name).write_bytes(blob)
            kept.append(LabelledLine(name, entry.text, split, entry.image))
        problems.sort(key=lambda p: p.get("line", 0))  # in the label file's order
        total = len(kept) + len(problems)
        if not kept:
            raise ValueError(f"{data}: no usable labelled lines ({len(problems)} problem(s); first: "
                             f"{problems[0]['error'] if problems else 'the label file is empty'})")
        if len(problems) > config.max_problem_share * total:
            raise ValueError(f"{data}: {len(problems)} of {total} entries are unusable (more than "
                             f"max_problem_share = {config.max_problem_share}); first: {problems[0]['error']}")
        for p in problems:
            log.warning("skipped: %s", p["error"])
        counts = {s: sum(1 for e in kept if e.split == s) for s in SPLITS}
        if counts["train"] == 0:
            raise ValueError(f"{data}: every line fell into the held-out split; lower holdout or add lines")
        # Read back by load_lines, which splits at "\n" only (U+2028 in a name or text stays raw here).
        (work / "labels.jsonl").write_text("".join(json.dumps(_record(e), ensure_ascii=False) + "\n"
                                                  for e in kept), encoding="utf-8")
        (work / "problems.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in problems),
                                             encoding="utf-8")
        metrics = {"lines": len(kept), "train_lines": counts["train"], "heldout_lines": counts["heldout"],
                   "problems": len(problems)}
        return artifacts.publish(work, output, kind=KIND, inputs={"data": data_hash}, config=to_dict(config),
                                 metrics=metrics, lineage={"data": source or data, "data_hash": data_hash},
                                 overwrite=True)


def _suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix and len(suffix) <= 10 and suffix[1:].isalnum() else ".png"


def _record(line: LabelledLine) -> dict[str, Any]:
    return {"image": line.image, "text": line.text, "split": line.split, "source": line.source}


@dataclasses.dataclass
class LineSet:
    """A prepared set, loaded: encoded images in memory (decoded when drawn), by split."""

    uri: str
    data_hash: str
    source: str
    train: list[tuple[bytes, str]]
    heldout: list[tuple[bytes, str]]
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # image SHA-256 -> its name in the data
    max_pixels: int = MAX_LINE_PIXELS  # the limit the set was checked with; decoding keeps to it

    def name_of(self, blob: bytes) -> str:
        """The data's name for an image of this set (for messages)."""
        digest = hashlib.sha256(blob).hexdigest()
        return self.names.get(digest, f"images/{digest}")


def load_lines(uri: str) -> LineSet:
    """A prepared line set (``prepare_lines`` output); every file verified against its manifest."""
    manifest = artifacts.read_manifest(uri)
    if manifest.kind != KIND:
        raise ValueError(f"{uri}: is a {manifest.kind!r} artifact, not prepared lines ({KIND})")
    folder = artifacts.fetch(uri)
    split: dict[str, list[tuple[bytes, str]]] = {s: [] for s in SPLITS}
    names: dict[str, str] = {}
    for number, raw in records((folder / "labels.jsonl").read_text(encoding="utf-8")):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            entry = LabelledLine(item["image"], item["text"], item["split"], item.get("source", ""))
            images = split[entry.split]
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(f"{uri}: labels.jsonl:{number}: not a prepared line ({type(e).__name__}: {e}); "
                             f"prepare the data again") from None
        images.append(((folder / entry.image).read_bytes(), entry.text))
        names[Path(entry.image).stem] = entry.source or entry.image
    max_pixels = manifest.config.get("max_pixels", MAX_LINE_PIXELS)
    return LineSet(uri, manifest.inputs["data"], manifest.lineage.get("data", ""), split["train"], split["heldout"],
                   names, max_pixels)


def open_lines(data: str, workdir: str | Path, config: LinesConfig | None = None) -> LineSet:
    """Prepared lines from ``data``: a prepared set as is, or labelled lines prepared into ``workdir``."""
    if artifacts.is_published(data) and artifacts.read_manifest(data).kind == KIND:
        return load_lines(data)
    target = str(Path(workdir) / "lines")
    prepare_lines(data, target, config)
    return load_lines(target)
