"""Batch OCR around the recognizer: one plan for all shards, and the merge that closes a run.

``plan_documents`` lists the documents once, so every shard of a run works from the same snapshot
even if files arrive meanwhile. ``merge_results`` gathers the per-document results of the plan into
``<output>/results/`` (``results.jsonl``, ``text/<document>.txt``, ``report.json``), published as an
artifact with its manifest written last. A planned document with no result becomes an error record:
nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from inkbooth import artifacts, shards, storage
from inkbooth.ocr.export import cer
from inkbooth.ocr.recognize import list_documents, result_uri
from inkbooth.reports.metrics import throughput

RESULTS = "results"
KIND = "ocr-results"


def plan_documents(documents: str, num_shards: int) -> dict[str, Any]:
    """The documents under ``documents`` and the shard specs (``i/n``) that split them."""
    shards.specs(num_shards)  # validates the count before anything is listed
    keys = list_documents(documents)
    if not keys:
        raise ValueError(f"{documents}: no documents found")
    return {"documents": documents, "keys": keys, "shards": shards.specs(min(num_shards, len(keys))),
            "created": time.time()}


def write_plan(plan: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(plan, indent=1, ensure_ascii=True), encoding="utf-8")


def read_plan(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _text_name(rel: str) -> str:
    """``text/<document>.txt`` where the document key is safe to reuse, else a hashed name."""
    try:
        storage.check_part(rel)
        return f"{rel}.txt"
    except ValueError:
        return "_unsafe_names/" + result_uri("x", rel).rsplit("/", 1)[-1].replace(".json", ".txt")


def merge_results(plan: dict[str, Any], output: str, ground_truth: str | None = None,
                  shard_summaries: list[dict[str, Any]] | None = None,
                  model_hash: str | None = None) -> artifacts.Manifest:
    """Collect the plan's per-document results into the results artifact at ``<output>/results``.

    With ``model_hash``, a result left by a run with another model counts as missing, not as current.
    """
    documents = plan["documents"]
    report: dict[str, Any] = {"documents": len(plan["keys"]), "documents_ok": 0, "documents_failed": 0,
                              "pages_with_text": 0, "lines": 0, "recognition_seconds": 0.0}
    edits = ref_chars = 0.0
    per_doc_cer: dict[str, float] = {}
    with storage.temp_dir("inkbooth-merge-") as tmp:
        work = Path(tmp)
        (work / "text").mkdir()
        with open(work / "results.jsonl", "w", encoding="utf-8") as out:
            for rel in plan["keys"]:
                try:
                    result = json.loads(storage.read_text(result_uri(output, rel)))
                except storage.NotFoundError:
                    result = None
                if result is not None and model_hash and result["status"] == "ok" and result.get("model") != model_hash:
                    result = None
                if result is None:
                    result = {"status": "error", "records": [{
                        "document": rel, "page": None, "line": None, "status": "error",
                        "error": f"{rel}: no result (its shard did not finish); rerun the pipeline to resume"}]}
                for record in result["records"]:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                if result["status"] != "ok":
                    report["documents_failed"] += 1
                    continue
                report["documents_ok"] += 1
                report["lines"] += result["lines"]
                report["pages_with_text"] += result["pages_with_text"]
                report["recognition_seconds"] += result["seconds"]
                text = _document_text(result["records"])
                target = work / "text" / _text_name(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                if ground_truth:
                    truth = _ground_truth(ground_truth, documents, rel)
                    if truth is not None:
                        ref = _normalise(truth)
                        err = cer(_normalise(text), ref)
                        per_doc_cer[rel] = round(err, 4)
                        edits += err * len(ref)
                        ref_chars += len(ref)
        secs = report["recognition_seconds"]
        report["recognition_seconds"] = round(secs, 3)
        report["lines_per_second"] = round(report["lines"] / secs, 3) if secs > 0 else None
        if ground_truth:
            report["cer"] = round(edits / ref_chars, 4) if ref_chars else None
            report["cer_documents"] = per_doc_cer
        if shard_summaries:
            report["shards"] = shard_summaries
            report.update(throughput(shard_summaries))
        (work / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        metrics = {k: v for k, v in report.items() if isinstance(v, (int, float)) and v is not None}
        return artifacts.publish(work, storage.join(output, RESULTS), kind=KIND, config={"documents": documents},
                                 inputs={"documents": documents, "ground_truth": ground_truth or ""},
                                 metrics=metrics, overwrite=True)


def _document_text(records: list[dict[str, Any]]) -> str:
    """Lines in reading order; pages separated by a form feed."""
    pages: dict[int, list[str]] = {}
    for r in records:
        pages.setdefault(r["page"], []).append(r["text"])
    return "\f\n".join("\n".join(lines) for _, lines in sorted(pages.items())) + "\n"


def _ground_truth(ground_truth: str, documents: str, rel: str) -> str | None:
    """``<ground_truth>/<document key>.txt`` when it exists."""
    try:
        return storage.read_text(storage.join(ground_truth, rel + ".txt"))
    except (storage.NotFoundError, ValueError):
        return None
