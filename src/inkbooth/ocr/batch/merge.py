"""The merge that closes a batch run: every planned document's result into one published artifact.

``merge_results`` gathers the per-document results of the plan into ``<output>/results/``
(``results.jsonl``, ``text/<document>.txt``, ``report.json``), published as a new version of that
artifact with the pointer (its manifest) moved last: read it through ``inkbooth.artifacts``
(``read_text(results, "results.jsonl")``, ``fetch``). A planned document with no result becomes an
error record: nothing is dropped silently.

Pages and documents read with low confidence (the model may not fit them; ``inkbooth.ocr.batch.fit``)
are flagged: each line record of a flagged page carries ``"page_low_confidence": true``; report.json
counts them (``pages_flagged``, ``documents_flagged`` and their shares, logged as KFP metrics) and
says under ``fit`` which documents and pages, at which threshold, for which model.

May import ``inkbooth.ocr.recognition`` and the other batch modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.ocr.batch.fit import STATISTIC, DocumentFit, FitConfig, page_groups
from inkbooth.ocr.batch.results import error_result, json_line, json_text, read_result, result_uri
from inkbooth.ocr.batch.shard import claim_output
from inkbooth.ocr.recognition.text import cer, normalise
from inkbooth.reports.metrics import throughput
from inkbooth.storage.localfiles import sweep_temp_dirs

RESULTS = "results"


KIND = "ocr-results"


# Longest path segment reused as a file name (a file system allows 255 bytes; temporary names add some).
MAX_NAME_BYTES = 200


def _text_name(rel: str) -> str:
    """``text/<document>.txt`` where the document key is safe to reuse as a file name, else a hashed name."""
    try:
        storage.check_part(rel)
        if max(len(part.encode("utf-8")) for part in rel.split("/")) + len(".txt") <= MAX_NAME_BYTES:
            return f"{rel}.txt"
    except ValueError:
        pass
    return "_unsafe_names/" + result_uri("x", rel).rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".txt"


def merge_results(plan: dict[str, Any], output: str, ground_truth: str | None = None,
                  shard_summaries: list[dict[str, Any]] | None = None,
                  model_hash: str | None = None, *, fit: FitConfig | None = None,
                  model: str | None = None) -> artifacts.Manifest:
    """Collect the plan's per-document results into the results artifact at ``<output>/results``.

    With ``model_hash``, a result left by a run with another model counts as missing, not as current.
    ``fit`` says when a page or document counts as read with low confidence; ``model`` (its name or
    URI) and the model's hash are recorded beside it, so the flag can be interpreted.
    Results are streamed (a document's records never all in memory); local file names come from
    hashes wherever a document's name could not be one. A document whose result cannot be read
    becomes an error record, like any other failed document.
    """
    sweep_temp_dirs()  # what killed merges left in the temp folder (this one makes inkbooth-merge-…)
    fit = fit or FitConfig()
    fit.validate()
    documents = plan["documents"]
    claim_output(documents, output)
    report: dict[str, Any] = {"documents": len(plan["keys"]), "documents_ok": 0, "documents_failed": 0,
                              "documents_empty": 0, "documents_with_warnings": 0, "pages_with_text": 0,
                              "lines": 0, "recognition_seconds": 0.0}
    edits = ref_chars = 0.0
    per_doc_cer: dict[str, float] = {}
    renamed: dict[str, str] = {}
    flagged: dict[str, dict[str, Any]] = {}
    counts = {"pages_judged": 0, "pages_flagged": 0, "documents_judged": 0}
    models: set[str] = set()
    with storage.temp_dir("inkbooth-merge-") as tmp:
        work, scratch = Path(tmp) / "results", Path(tmp) / "scratch"
        (work / "text").mkdir(parents=True)
        scratch.mkdir()
        with open(work / "results.jsonl", "w", encoding="utf-8") as out:
            for rel in plan["keys"]:
                header, records = _result(output, rel, model_hash, scratch)
                if header["status"] != "ok":
                    for record in records:
                        out.write(json_line(record))
                    report["documents_failed"] += 1
                    continue
                name = _text_name(rel)
                if name != f"{rel}.txt":
                    renamed[rel] = f"text/{name}"
                target = work / "text" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                doc_fit = DocumentFit(fit)
                notes = _write_document(records, out, target, doc_fit)
                if header.get("model"):
                    models.add(header["model"])
                counts["pages_judged"] += len(doc_fit.pages)
                counts["pages_flagged"] += len(doc_fit.flagged_pages)
                counts["documents_judged"] += doc_fit.judged
                if doc_fit.flagged:
                    flagged[rel] = doc_fit.summary()
                report["documents_ok"] += 1
                report["documents_empty"] += "empty" in notes
                report["documents_with_warnings"] += "warning" in notes
                report["lines"] += header["lines"]
                report["pages_with_text"] += header["pages_with_text"]
                report["recognition_seconds"] += header["seconds"]
                if ground_truth:
                    truth = _ground_truth(ground_truth, documents, rel)
                    if truth is not None:
                        ref = normalise(truth)
                        err = cer(normalise(target.read_text(encoding="utf-8")), ref)
                        per_doc_cer[rel] = round(err, 4)
                        edits += err * len(ref)
                        ref_chars += len(ref)
        secs = report["recognition_seconds"]
        report["recognition_seconds"] = round(secs, 3)
        report["lines_per_second"] = round(report["lines"] / secs, 3) if secs > 0 else None
        if ground_truth:
            report["cer"] = round(edits / ref_chars, 4) if ref_chars else None
            report["cer_documents"] = per_doc_cer
        report.update(_fit_report(fit, counts, flagged, model, model_hash, models))
        skipped = plan.get("skipped", [])
        report["files_skipped"] = len(skipped)
        report["skipped"] = skipped
        if renamed:
            report["text_files_renamed"] = renamed
        if shard_summaries:
            report["shards"] = shard_summaries
            report.update(throughput(shard_summaries))
        (work / "report.json").write_text(json_text(report, indent=2), encoding="utf-8")
        metrics = {k: v for k, v in report.items() if isinstance(v, (int, float)) and v is not None}
        return artifacts.publish(work, storage.join(output, RESULTS), kind=KIND, config={"documents": documents},
                                 inputs={"documents": documents, "ground_truth": ground_truth or ""},
                                 metrics=metrics, overwrite=True)


def _result(output: str, rel: str, model_hash: str | None, scratch: Path) -> tuple[dict[str, Any], Any]:
    """(header, records) of a document's result, or an error in their place when it is missing or stale."""
    uri = result_uri(output, rel)
    try:
        found = read_result(uri, scratch)
    except (storage.StorageError, ValueError) as e:
        problem = f"{rel}: its result {uri} cannot be read ({e}); rerun the pipeline to redo it"
    else:
        if found is not None and not (model_hash and found[0]["status"] == "ok"
                                       and found[0].get("model") != model_hash):
            return found
        problem = f"{rel}: no result (its shard did not finish); rerun the pipeline to resume"
    return error_result(rel, problem)


def _fit_report(fit: FitConfig, counts: dict[str, int], flagged: dict[str, dict[str, Any]], model: str | None,
                model_hash: str | None, models: set[str]) -> dict[str, Any]:
    """report.json's counts of flagged pages and documents (shares of those judged) and its ``fit``."""
    judged_pages, judged_docs = counts["pages_judged"], counts["documents_judged"]
    hashes = sorted(models | ({model_hash} if model_hash else set()))
    return {
        "pages_flagged": counts["pages_flagged"],
        "pages_flagged_share": round(counts["pages_flagged"] / judged_pages, 4) if judged_pages else None,
        "documents_flagged": len(flagged),
        "documents_flagged_share": round(len(flagged) / judged_docs, 4) if judged_docs else None,
        "fit": {"statistic": STATISTIC, "threshold": fit.threshold, "min_lines": fit.min_lines,
                "rule": "a page is flagged when its statistic is below the threshold; a document when most of "
                        "its judged pages are",
                "model": model, "model_hash": hashes[0] if len(hashes) == 1 else (hashes or None),
                "pages_judged": judged_pages, "documents_judged": judged_docs, "documents": flagged},
    }


def _write_document(records: Any, out: Any, text_file: Path, fit: DocumentFit) -> set[str]:
    """A document's records to ``out`` and its text to ``text_file`` (lines in reading order, pages
    separated by a form feed), a page at a time: its lines are judged (``fit``) and flagged when read
    with low confidence. Returns the statuses of its non-line records."""
    notes: set[str] = set()
    first = True
    with open(text_file, "w", encoding="utf-8") as text:
        for page, run in page_groups(records):
            if page is None:  # a note about the document
                out.write(json_line(run[0]))
                notes.add(run[0]["status"])
                continue
            low = fit.add_page(page, (r.get("confidence") for r in run))
            for i, record in enumerate(run):
                out.write(json_line({**record, "page_low_confidence": True} if low else record))
                if not first:
                    text.write("\n" if i else "\f\n")
                first = False
                text.write(record["text"])
        text.write("\n")
    return notes


def _ground_truth(ground_truth: str, documents: str, rel: str) -> str | None:
    """``<ground_truth>/<document key>.txt`` when it exists."""
    try:
        return storage.read_text(storage.join(ground_truth, rel + ".txt"))
    except (storage.StorageError, ValueError):  # absent, or a name no file can have: no CER for it
        return None
