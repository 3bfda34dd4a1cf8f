"""One shard of a batch run: its documents read a page at a time into per-document results.

Per document, the result is written as one object under ``<output>/work/`` (atomic; JSON Lines: a
header, then the records), so a rerun skips documents already done (same bytes, same model, same
config) and an interrupted shard loses at most the document it was reading. A document is read a
page at a time and its records are written as they are made, so memory stays flat however many
pages it has. A document that cannot be read becomes an error record; a failure of the run itself
(config, model, store) stops the run instead of turning every document into an error.

May import ``inkbooth.ocr.documents``, ``layout``, ``recognition`` and ``batch.results``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from inkbooth import artifacts, shards, storage
from inkbooth.config import config_hash, to_dict
from inkbooth.ocr.batch.results import (
    _note,
    _previous_result,
    error_result,
    json_line,
    line_records,
    result_uri,
    write_result,
)
from inkbooth.ocr.documents import pages
from inkbooth.ocr.layout.lines import Line, page_lines
from inkbooth.ocr.recognition.export import reading_export
from inkbooth.ocr.recognition.recognizer import LineResult, RecognizeConfig, Recognizer, resolve_model
from inkbooth.storage.localfiles import sweep_temp_dirs

log = logging.getLogger(__name__)


OWNER = "owner.json"
# How long a claim waits for an empty or cut-short owner.json to be completed before taking it for
# one left by a killed run (at once when it has not changed for that long).
OWNER_WAIT = 2.0


class OutputError(ValueError):
    """An output that this run may not write to (another run's, or inside the input)."""


def scan_documents(documents: str) -> tuple[list[str], list[dict[str, str]]]:
    """(keys of the documents under a prefix, files and folders left out with the reason why).

    Left out: hidden files and folders (a name starting with "."), manifests, partial writes, and
    folders that are symbolic links (not followed). Nothing is left out silently: the reasons go in
    the run's report.
    """
    keys, skipped = [], []
    links: list[str] = []
    for rel in storage.list_files(documents, links=links):
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):
            skipped.append({"key": rel, "reason": "hidden (a name starting with '.')"})
        elif parts[-1] == artifacts.MANIFEST:
            skipped.append({"key": rel, "reason": f"an artifact's {artifacts.MANIFEST}, not a document"})
        else:
            keys.append(rel)
    skipped += [{"key": rel + "/", "reason": "a symbolic link to a folder (not followed)"} for rel in links]
    return keys, skipped


def list_documents(documents: str) -> list[str]:
    """Relative keys of the documents under a prefix (see ``scan_documents`` for what is left out)."""
    return scan_documents(documents)[0]


def claim_output(documents: str, output: str) -> None:
    """Bind ``output`` to the documents whose results it holds, or refuse a run over other documents.

    The first run writes ``<output>/owner.json``, no-overwrite, so concurrent shards of one run agree;
    a run over another documents prefix is refused rather than merged away. An output inside the
    documents folder would be read back as documents on the next run: refused too.

    A local ``owner.json`` becomes visible only whole (``storage.write_bytes(if_absent=True)``). One
    found empty or cut short (an older inkbooth wrote it in place; a run killed between creating and
    writing it left it so) is waited for briefly, then, when it stays so, taken for unclaimed: one
    claimer at a time (a lock) removes it while it is still broken, and the claim starts over.
    """
    docs, out = str(storage.parse(documents)).rstrip("/"), str(storage.parse(output)).rstrip("/")
    if out == docs or out.startswith(docs + "/"):
        raise OutputError(f"{output}: the output is inside the documents folder {documents}; its results would be "
                          "read as documents by the next run. Choose an output outside it")
    owner = storage.join(output, OWNER)
    claim = (json.dumps({"documents": docs}) + "\n").encode("utf-8")
    broken_since: float | None = None
    give_up = time.monotonic() + 10 * OWNER_WAIT
    while time.monotonic() < give_up:
        if _write_owner(owner, claim):
            return
        held = _read_owner(owner)
        if held is None:  # removed by a takeover between our write and our read: claim again
            continue
        if not isinstance(held, _Broken):
            if held != docs:
                raise OutputError(f"{output}: holds the results of documents {held!r} (see {owner}); this run "
                                  f"reads {docs!r}. Use another output, or delete that one first")
            return
        now = time.monotonic()
        broken_since = now if broken_since is None else broken_since
        if now - broken_since < OWNER_WAIT and not _left_behind(owner):
            time.sleep(0.05)  # a writer that creates it in place may be about to fill it
            continue
        if storage.is_s3(owner):  # an S3 write is whole or absent: this was written so
            raise OutputError(f"{owner}: not an owner record ({held}); delete it if no run writes to {output}")
        _take_over(storage.parse(owner).path, held)
        time.sleep(0.01)
    raise OutputError(f"{owner}: could not be claimed in {10 * OWNER_WAIT:.0f}s (it keeps changing, or stays "
                      "broken); delete it if no run writes to this output")


class _Broken(str):
    """Why an owner.json that exists holds no owner (empty, cut short, not JSON)."""


def _write_owner(owner: str, claim: bytes) -> bool:
    """Whether this call wrote the owner record (whole or absent, locally too: storage.write_bytes)."""
    try:
        storage.write_bytes(owner, claim, if_absent=True)
        return True
    except storage.AlreadyExistsError:
        return False


def _read_owner(owner: str) -> str | _Broken | None:
    """The documents an owner.json names; ``_Broken`` if it names none; None if it is gone."""
    try:
        text = storage.read_text(owner)
    except storage.NotFoundError:
        return None
    except UnicodeDecodeError:
        return _Broken("not UTF-8")
    if not text.strip():
        return _Broken("empty")
    try:
        held = json.loads(text)
    except ValueError:
        return _Broken("cut short or not JSON")
    if not isinstance(held, dict) or not isinstance(held.get("documents"), str):
        return _Broken("no 'documents' in it")
    return held["documents"]


def _left_behind(owner: str) -> bool:
    """Whether a local owner.json has not changed for OWNER_WAIT seconds (nobody is writing it)."""
    loc = storage.parse(owner)
    if loc.is_s3:
        return False
    try:
        return time.time() - loc.path.stat().st_mtime > OWNER_WAIT
    except OSError:
        return False


def _take_over(path: Path, why: str) -> None:
    """Remove a broken local owner.json, under a lock, only while it is still broken."""
    import fcntl

    uri = str(path)
    try:
        fd = os.open(path.parent / f".{OWNER}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise storage._local_error(e, uri, "locking") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed, or when this process dies
        # Under the lock nobody else removes it, and nobody can write it while it is there: still broken
        # now means broken when removed.
        if isinstance(_read_owner(uri), _Broken):
            log.warning("%s: %s (left by a run killed while claiming this output?); claiming the output anew",
                        uri, why)
            path.unlink(missing_ok=True)
    except OSError as e:
        raise storage._local_error(e, uri, "removing") from None
    finally:
        os.close(fd)


def _document_error(e: BaseException) -> bool:
    """Whether a failure to reach a document is the document's (gone, corrupt, unaddressable), not the run's."""
    return isinstance(e, (storage.NotFoundError, storage.ChecksumError, ValueError))


def recognize_documents(documents: str, model: str, output: str, config: RecognizeConfig | None = None, *,
                        shard: str = "0/1", keys: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """OCR every document of shard ``shard`` under ``documents``; per-document results go to ``output``.

    ``model`` is an ONNX export artifact (local folder or ``s3://``), or for the torch backend a
    PyTorch checkpoint (folder, hub id, ``s3://``). A checkpoint given to the onnx backend is read
    through its export: made once through the default parity gate into the local cache and reused
    (``export.reading_export``); a model that fails the gate fails the run. ``keys`` (relative
    document keys) overrides listing ``documents``, so all shards of a run work from one snapshot.

    Errors of the run (config, model, store) raise before or between documents; only a document's
    own problems become its error record. A document is read a page at a time: its lines are
    recognised in batches and their records written to a local file as they come, so memory does
    not grow with the number of pages. Every document gets at least one record: its lines, an
    ``empty`` record when no text was found, a ``warning`` record for pages past ``max_pages``.
    A PDF password may come from the ``INKBOOTH_PDF_PASSWORD`` environment variable.
    """
    from tqdm import tqdm

    sweep_temp_dirs()  # what killed shards left in the temp folder (this one makes inkbooth-ocr-…)
    config = config or RecognizeConfig()
    config.validate()
    if config.pages.pdf_password is None and os.environ.get(pages.PASSWORD_ENV):
        config.pages.pdf_password = os.environ[pages.PASSWORD_ENV]
    claim_output(documents, output)
    if config.backend == "onnx":  # a checkpoint (a reader's folder, a hub id): its cached export
        model = reading_export(model, threads=config.threads)
    model_dir, model_hash = resolve_model(model, config)
    settings = config_hash({k: v for k, v in to_dict(config).items() if k != "skip_done"})
    all_keys = sorted(keys) if keys is not None else list_documents(documents)
    mine = shards.select(all_keys, shard)
    recognizer: Recognizer | None = None
    # started/finished (epoch seconds) give the merge the run's wall-clock throughput across shards.
    summary = {"shard": shard, "documents": len(mine), "done": 0, "skipped": 0, "errors": 0, "lines": 0,
               "pages": 0, "seconds": 0.0, "started": time.time()}
    bar = tqdm(mine, desc=f"ocr shard {shard}", unit="doc", file=sys.stderr, disable=not progress)
    with storage.temp_dir("inkbooth-ocr-") as tmp:
        scratch = Path(tmp)
        local = scratch / "document"  # never named after the input: its name may be too long to be a file
        for rel in bar:
            started = time.perf_counter()
            out_uri = result_uri(output, rel)
            prev = _previous_result(out_uri, model_hash, settings) if config.skip_done else None
            try:
                doc_uri = storage.join(documents, rel)
                # Done already? The store's recorded checksum says so without a download, where it has one.
                if prev is not None and storage.stat(doc_uri).sha256 == prev["sha256"]:
                    summary["skipped"] += 1
                    continue
                storage.download(doc_uri, local)
            except Exception as e:
                if not _document_error(e):
                    raise
                write_result(out_uri, *error_result(rel, f"{rel!r}: {e}"))
                summary["errors"] += 1
                continue
            digest = storage.sha256_file(local)
            if prev is not None and prev["sha256"] == digest:
                summary["skipped"] += 1
                continue
            if recognizer is None:
                recognizer = Recognizer(model_dir, config)  # a model that cannot load fails the run
            try:
                header, records = _read_document(local, rel, recognizer, config, scratch)
                header.update({"sha256": digest, "model": model_hash, "config": settings,
                               "seconds": round(time.perf_counter() - started, 4)})
                summary["done"] += 1
                summary["lines"] += header["lines"]
                summary["pages"] += header["pages_with_text"]
            except pages.InputError as e:
                header, records = error_result(rel, str(e), digest)
                summary["errors"] += 1
                log.warning("%s", e)
            except Exception as e:  # noqa: BLE001 - one bad document must not stop the batch
                message = f"{rel}: {type(e).__name__}: {e}"
                header, records = error_result(rel, message, digest)
                summary["errors"] += 1
                log.exception("%s", message)
            write_result(out_uri, header, records)
            summary["seconds"] += time.perf_counter() - started
            bar.set_postfix(lines=summary["lines"], errors=summary["errors"])
            local.unlink(missing_ok=True)
    summary["seconds"] = round(summary["seconds"], 3)
    summary["finished"] = time.time()
    return summary


def _read_document(path: Path, rel: str, recognizer: Recognizer, config: RecognizeConfig,
                   scratch: Path) -> tuple[dict[str, Any], Path]:
    """Read one document page by page; its records go to a local JSON Lines file as they are made.

    Lines wait in a small buffer (a few batches, never a whole document) so that batches hold
    lines of similar width, which keeps beam lengths alike; record order is the reading order.
    """
    records_path = scratch / "records.jsonl"
    pending: list[Line] = []
    counts = {"lines": 0, "pages": 0, "total": 0}
    with_text: set[int] = set()
    buffer = 4 * config.batch_size

    with open(records_path, "w", encoding="utf-8") as sink:
        def flush() -> None:
            results: list[LineResult | None] = [None] * len(pending)
            order = sorted(range(len(pending)), key=lambda i: pending[i].image.width)
            for start in range(0, len(order), config.batch_size):
                chunk = order[start:start + config.batch_size]
                for i, res in zip(chunk, recognizer.read([pending[i].image for i in chunk])):
                    results[i] = res
            for rec in line_records(rel, pending, results, recognizer.grid, config, recognizer.content_box,
                                    first=counts["lines"] + 1):
                sink.write(json_line(rec))
            counts["lines"] += len(pending)
            pending.clear()

        for page in pages.load_pages(path, rel, config.pages):
            counts["pages"] += 1
            counts["total"] = page.total
            lines = page_lines(page, config.pages)
            del page  # its image goes now; the lines keep only their crops
            with_text.update(ln.page for ln in lines)
            pending.extend(lines)
            if len(pending) >= buffer:
                flush()
        if pending:
            flush()
        if counts["total"] > counts["pages"]:
            sink.write(json_line(_note(rel, "warning", (
                f"{rel}: {counts['total']} pages, only the first {counts['pages']} read (max_pages); "
                f"pages {counts['pages'] + 1}-{counts['total']} were not read"))))
        if counts["lines"] == 0:
            sink.write(json_line(_note(rel, "empty", f"{rel}: no text found on its {counts['pages']} page(s)")))
    header = {"document": rel, "status": "ok", "pages": counts["pages"], "pages_in_document": counts["total"],
              "pages_with_text": len(with_text), "lines": counts["lines"]}
    return header, records_path
