"""Labelled line crops for fine-tuning: reading them, their identity, and the prepared line set.

Input: a folder or ``s3://`` prefix holding line images and one label file beside them:

* ``labels.jsonl``: one JSON object a line, ``{"image": "crops/0001.png", "text": "Total 12.50"}``
  (``file_name`` is accepted for ``image``, as in Hugging Face image folders);
* ``labels.tsv``: ``<image>\t<text>`` a line (an optional ``image\ttext`` header is skipped).

Image names are relative to the prefix. ``prepare_lines`` checks every entry (the image exists and
decodes, the text is not empty), records each bad one as a problem and goes on, assigns each line
to ``train`` or ``heldout`` by a hash of its image name (so a line stays on its side as the data
grows, and retraining is evaluated on lines it never trained on), and publishes a snapshot: the
images named by content, ``labels.jsonl`` with the split, ``problems.jsonl`` and a manifest whose
input hash is the data's identity (``line_data_hash``, which the retrain trigger compares).

May import ``inkbooth.ocr.documents``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.config import option, to_dict
from inkbooth.ocr.documents.labels import LabelledLine, read_labels

log = logging.getLogger(__name__)


KIND = "ocr-lines"


SPLITS = ("train", "heldout")


@dataclasses.dataclass
class LinesConfig:
    """How labelled lines are checked and split."""

    holdout: float = option(0.1, "share of lines held out for evaluation, chosen by a hash of the image name")
    max_problem_share: float = option(0.5, "fail when more than this share of the entries is unusable")

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


def line_data_hash(data: str, labels: tuple[str, list[LabelledLine], Any] | None = None) -> str:
    """The identity of labelled line data: its label file and the images it names, by content.

    From the store's recorded checksums where objects carry one, so nothing is downloaded then.
    An image that is missing counts by its name, so adding it later changes the identity.
    ``labels`` is ``read_labels(data)`` where the caller holds it already.
    """
    labels_uri, entries, _ = labels or read_labels(data)
    h = hashlib.sha256(_digest(labels_uri).encode())
    for name in sorted({e.image for e in entries}):
        try:
            digest = _digest(storage.join(data, name))
        except storage.NotFoundError:
            digest = "missing"
        h.update(f"\n{name}\0{digest}".encode())
    return h.hexdigest()


def _check_image(data: bytes, name: str) -> str | None:
    """None if ``data`` decodes as an image, else what is wrong."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.width < 4 or img.height < 4:
                return f"{name}: image is {img.width}x{img.height} pixels, too small to be a line"
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"{name}: cannot be decoded (truncated or corrupt?): {e}"
    return None


def prepare_lines(data: str, output: str, config: LinesConfig | None = None, *,
                  source: str | None = None) -> artifacts.Manifest:
    """Check and split the labelled lines under ``data``; publish the snapshot at ``output``.

    ``source`` is the data's URI to record, where ``data`` is a local copy of it (KFP's launcher
    copies imported inputs into the pod). A rerun on unchanged data with the same config finds the
    published set and returns it.
    """
    config = config or LinesConfig()
    config.validate()
    labels = read_labels(data)
    data_hash = line_data_hash(data, labels)
    if artifacts.is_published(output):
        existing = artifacts.read_manifest(output)
        if existing.inputs.get("data") == data_hash and existing.config == to_dict(config):
            log.info("%s: these lines are prepared already; reusing them", output)
            return existing
    labels_uri, entries, problems = labels
    kept: list[LabelledLine] = []
    with storage.temp_dir("inkbooth-lines-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        for entry in entries:
            uri = storage.join(data, entry.image)
            try:
                blob = storage.read_bytes(uri)
            except storage.StorageError as e:
                problems.append({"image": entry.image, "error": f"{entry.image}: {e}"})
                continue
            bad = _check_image(blob, entry.image)
            if bad:
                problems.append({"image": entry.image, "error": bad})
                continue
            name = f"images/{hashlib.sha256(blob).hexdigest()}{Path(entry.image).suffix.lower() or '.png'}"
            (work / name).write_bytes(blob)
            kept.append(LabelledLine(name, entry.text, split_of(entry.image, config.holdout), entry.image))
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
        (work / "labels.jsonl").write_text("".join(json.dumps(dataclasses.asdict(e), ensure_ascii=False) + "\n"
                                                  for e in kept), encoding="utf-8")
        (work / "problems.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in problems),
                                             encoding="utf-8")
        metrics = {"lines": len(kept), "train_lines": counts["train"], "heldout_lines": counts["heldout"],
                   "problems": len(problems)}
        return artifacts.publish(work, output, kind=KIND, inputs={"data": data_hash}, config=to_dict(config),
                                 metrics=metrics, lineage={"data": source or data, "data_hash": data_hash},
                                 overwrite=True)


@dataclasses.dataclass
class LineSet:
    """A prepared set, loaded: encoded images in memory (decoded when drawn), by split."""

    uri: str
    data_hash: str
    source: str
    train: list[tuple[bytes, str]]
    heldout: list[tuple[bytes, str]]


def load_lines(uri: str) -> LineSet:
    """A prepared line set (``prepare_lines`` output); every file verified against its manifest."""
    manifest = artifacts.read_manifest(uri)
    if manifest.kind != KIND:
        raise ValueError(f"{uri}: is a {manifest.kind!r} artifact, not prepared lines ({KIND})")
    folder = artifacts.fetch(uri)
    split: dict[str, list[tuple[bytes, str]]] = {s: [] for s in SPLITS}
    for raw in (folder / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        entry = LabelledLine(**json.loads(raw))
        split[entry.split].append(((folder / entry.image).read_bytes(), entry.text))
    return LineSet(uri, manifest.inputs["data"], manifest.lineage.get("data", ""), split["train"], split["heldout"])


def open_lines(data: str, workdir: str | Path, config: LinesConfig | None = None) -> LineSet:
    """Prepared lines from ``data``: a prepared set as is, or labelled lines prepared into ``workdir``."""
    if artifacts.is_published(data) and artifacts.read_manifest(data).kind == KIND:
        return load_lines(data)
    target = str(Path(workdir) / "lines")
    prepare_lines(data, target, config)
    return load_lines(target)
