"""A document's result: one JSON Lines object (a header, then a record per line) under ``<output>/work/``.

Written atomically and named by a hash of the document's key; a rerun finds the finished ones by
the document's bytes, the model and the config. Records carry boxes in page pixels, token and word
boxes from the recogniser's attention. The header of a document read says whether it was read with
low confidence (``fit``: see ``inkbooth.ocr.batch.fit``; at the default threshold, which the merge
may replace with its own).

May import ``inkbooth.ocr.layout``, ``inkbooth.ocr.recognition`` and ``batch.fit``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inkbooth import storage
from inkbooth.ocr.batch.fit import document_fit
from inkbooth.ocr.layout.lines import Line
from inkbooth.ocr.recognition import localize
from inkbooth.ocr.recognition.recognizer import LineResult, RecognizeConfig

WORK = "work"


# JSON Lines: a header, then the records (streamed; the older one-object ".json" results are redone).
DOC_SUFFIX = ".jsonl"


def result_uri(output: str, rel: str) -> str:
    """Where a document's result lives: named by a hash of its key, so no input name becomes a key."""
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return storage.join(output, WORK, digest + DOC_SUFFIX)


def _note(doc: str, status: str, message: str) -> dict[str, Any]:
    """A record about a document rather than one of its lines: ``error``, ``warning`` or ``empty``."""
    return {"document": doc, "page": None, "line": None, "status": status, status: message}


def error_result(doc: str, message: str, digest: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a document that could not be read: one error record."""
    header: dict[str, Any] = {"document": doc, "status": "error"}
    if digest:
        header["sha256"] = digest
    return header, [_note(doc, "error", message)]


def _previous_result(out_uri: str, model_hash: str, settings: str) -> dict[str, Any] | None:
    """The header of the finished result at ``out_uri`` if the same model and config made it (else None)."""
    try:
        head = storage.read_bytes(out_uri).split(b"\n", 1)[0]
        prev = json.loads(head)
    except (ValueError, storage.StorageError):  # absent, or unreadable: do the document again
        return None
    ok = isinstance(prev, dict) and prev.get("status") == "ok" and prev.get("model") == model_hash \
        and prev.get("config") == settings
    return prev if ok and prev.get("sha256") else None


def json_text(value: Any, indent: int | None = None) -> str:
    """JSON with UTF-8 text as itself; where a value names a file whose name is not UTF-8 (a lone
    surrogate), with escapes instead, so it can still be stored and read back."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, indent=indent)
    return text


def json_line(record: dict[str, Any]) -> str:
    """One JSON Lines line (see ``json_text``)."""
    return json_text(record) + "\n"


def write_result(out_uri: str, header: dict[str, Any], records: Path | list[dict[str, Any]]) -> None:
    """A document's result as one object: its header line, then one record per line (JSON Lines).

    ``records`` is a local file of JSON lines (streamed, never held in memory) or a short list. The
    header of a document read (status ok) gets its ``fit`` (pages and document flagged as read with
    low confidence, at the default threshold).
    """
    if header.get("status") == "ok":
        header = {**header, "fit": document_fit(records if isinstance(records, list) else _local_records(records)
                                                ).header()}
    if isinstance(records, list):
        text = "".join(json_line(r) for r in [header, *records])
        storage.write_text(out_uri, text)
        return
    whole = records.with_name(records.name + ".result")
    with open(whole, "w", encoding="utf-8") as out, open(records, encoding="utf-8") as body:
        out.write(json_line(header))
        shutil.copyfileobj(body, out)
    storage.upload(whole, out_uri)
    whole.unlink()


def _local_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_result(out_uri: str, scratch: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]] | None:
    """(header, records) of a document's result, streamed from a local copy in ``scratch``; None if absent."""
    local = scratch / "result.jsonl"
    try:
        storage.download(out_uri, local)
    except storage.NotFoundError:
        return None
    f = open(local, encoding="utf-8")  # noqa: SIM115 - closed by the generator below
    try:
        header = json.loads(f.readline())
    except ValueError:
        f.close()
        raise storage.StorageError(f"{out_uri}: not a document result (unreadable header)") from None

    def records() -> Iterator[dict[str, Any]]:
        with f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    return header, records()


def document_result(output: str, rel: str) -> dict[str, Any] | None:
    """A document's result as one dict, its header with ``records`` (for tools and tests; a big
    document's records are better streamed with ``read_result``)."""
    with storage.temp_dir("inkbooth-result-") as tmp:
        found = read_result(result_uri(output, rel), Path(tmp))
        return None if found is None else {**found[0], "records": list(found[1])}


def line_records(doc: str, lines: list[Line], results: list[LineResult], grid: tuple[int, int],
                 config: RecognizeConfig, content: Any = None, first: int = 1) -> list[dict[str, Any]]:
    """JSON-able records, one per line, boxes in page pixels; lines are numbered from ``first``.

    ``content`` maps a crop size to where the crop lands in the encoder input (``Recognizer.content_box``);
    without it the crop fills the input.
    """
    records = []
    for idx, (line, res) in enumerate(zip(lines, results), start=first):
        rec: dict[str, Any] = {
            "document": doc, "page": line.page + 1, "line": idx, "box": list(line.box), "text": res.text,
            "confidence": round(res.confidence, 5) if math.isfinite(res.confidence) else None,
        }
        if config.token_boxes and (res.boxes is not None or res.attention is not None) and len(res.tokens):
            if res.boxes is not None:  # a line read in chunks: its stitched boxes, in crop pixels
                boxes = [line.to_page(tuple(b)) for b in res.boxes]
            else:
                boxes = localize.token_boxes(res.attention, grid, line.image.size, line.to_page, config.box_threshold,
                                             content(line.image.size) if content else None)
            rec["tokens"] = [
                {"text": _decode_tokens(t), "box": list(b), "logprob": round(lp, 5)}
                for t, b, lp in zip(res.tokens, boxes, res.token_logprobs)
            ]
            words = []
            for group in localize.group_words(res.tokens):
                text = _decode_tokens("".join(res.tokens[i] for i in group)).strip()
                words.append({"text": text, "box": list(localize.union([boxes[i] for i in group])),
                              "logprob": round(sum(res.token_logprobs[i] for i in group) / len(group), 5)})
            rec["words"] = words
        records.append(rec)
    return records


_BYTE_DECODER: dict[str, int] | None = None


def _decode_tokens(text: str) -> str:
    """Byte-level BPE token characters back to UTF-8 text."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        from transformers.models.roberta.tokenization_roberta import bytes_to_unicode

        _BYTE_DECODER = {v: k for k, v in bytes_to_unicode().items()}
    raw = bytes(_BYTE_DECODER[c] for c in text if c in _BYTE_DECODER)
    return raw.decode("utf-8", errors="replace")
