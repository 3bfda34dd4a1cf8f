"""The OCR report: a few pages with their boxes, the least confident lines, the errors, the parity.

Built from a published results artifact (``results.jsonl`` and ``report.json``), the documents it
was read from (to draw pages and cut crops) and, when given, the ONNX export's manifest (for the
parity table). ``results.jsonl`` is streamed: however large the run, the report keeps only the
pages it draws, the lowest-confidence lines and a bounded list of errors in memory (and a few
numbers per document). The per-document table shows the ``DOCUMENT_ROWS`` least well read
documents, in the HTML and the Markdown alike, and says how many it leaves out and where they are:
at 10,000 documents the Markdown stays far below the KFP UI's 400,000 characters.

Documents read with low confidence (report.json's ``fit``: the model may not fit them) get a line in
the summary, a note each under "Low-confidence documents" (the ``FLAGGED_ROWS`` least confident) and
a mark in the per-document table.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.reports import figures
from inkbooth.reports.page import Cell, Page, data_uri, esc, jpeg_bytes, png_bytes

log = logging.getLogger(__name__)

KIND = "ocr"
MAX_ERRORS = 100
# Rows of the per-document table (the least well read documents); the rest are in results.jsonl.
DOCUMENT_ROWS = 500
# Notes on flagged documents (the least confident first); the rest are in report.json (fit.documents).
FLAGGED_ROWS = 200


def iter_records(results_uri: str) -> Iterator[dict[str, Any]]:
    """The records of ``<results_uri>/results.jsonl``, one at a time (downloaded first from S3)."""
    uri = artifacts.file_uri(results_uri, "results.jsonl")  # the current version's file
    if not storage.is_s3(uri):
        with open(storage.parse(uri).path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
        return
    with storage.temp_dir("inkbooth-report-") as tmp:
        local = Path(tmp) / "results.jsonl"
        storage.download(uri, local)
        with open(local, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


class _Scan:
    """One pass over the records: what the report shows, in bounded memory."""

    def __init__(self, pages: int, lowest: int) -> None:
        self.page_keys: list[tuple[str, int]] = []
        self.page_records: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._lowest: list[tuple[float, int, dict[str, Any]]] = []  # max-heap on -confidence
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0
        self.documents: dict[str, dict[str, Any]] = {}
        self._pages, self._k = pages, lowest
        self._seq = itertools.count()

    def add(self, r: dict[str, Any]) -> None:
        doc = r["document"]
        if r.get("status") == "error":
            self.error_count += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(r)
            return
        if "status" in r:  # a note about a document ("empty", "warning"), not one of its lines
            return
        stats = self.documents.setdefault(doc, {"lines": 0, "pages": set(), "conf_sum": 0.0, "conf_n": 0})
        stats["lines"] += 1
        stats["pages"].add(r["page"])
        conf = r.get("confidence")
        if conf is not None:
            stats["conf_sum"] += conf
            stats["conf_n"] += 1
        key = (doc, r["page"])
        if key in self.page_records:
            self.page_records[key].append(r)
        elif len(self.page_keys) < self._pages:
            self.page_keys.append(key)
            self.page_records[key] = [r]
        if self._k:
            score = conf if conf is not None else float("-inf")
            item = (-score, next(self._seq), r)
            if len(self._lowest) < self._k:
                heapq.heappush(self._lowest, item)
            elif score < -self._lowest[0][0]:
                heapq.heapreplace(self._lowest, item)

    @property
    def lowest(self) -> list[dict[str, Any]]:
        return [r for _, _, r in sorted(self._lowest, key=lambda t: (-t[0], t[1]))]


def _page_images(documents: str, wanted: set[tuple[str, int]], pages_config: Any) -> dict[tuple[str, int], Any]:
    """The pages ``wanted`` ((document, 1-based page)) as loaded by the recognizer, one document at a time."""
    from inkbooth.ocr.documents import pages

    out: dict[tuple[str, int], Any] = {}
    by_doc: dict[str, set[int]] = {}
    for doc, page in wanted:
        by_doc.setdefault(doc, set()).add(page)
    for doc, numbers in sorted(by_doc.items()):
        try:
            data = storage.read_bytes(storage.join(documents, doc))
            for p in pages.load_pages(data, doc, pages_config):
                if p.index + 1 in numbers:
                    out[(doc, p.index + 1)] = p.image
                if p.index + 1 >= max(numbers):
                    break
        except (storage.StorageError, ValueError) as e:
            log.warning("report: cannot load %r to draw it: %s", doc, e)
    return out


def add_parity_table(page: Page, manifest: artifacts.Manifest) -> None:
    """The export's parity numbers against the gate's thresholds, and its verdict."""
    from inkbooth.ocr.recognition.export import ExportConfig, check_parity

    m, cfg = manifest.metrics, manifest.config
    try:
        failed = check_parity(m, ExportConfig(**cfg))
    except (TypeError, ValueError, KeyError):  # an export from another version of the config: re-judging fails
        failed = []
    rows: list[list[Any]] = []

    def row(label: str, key: str, threshold: str = "") -> None:
        if key in m:
            value = m[key]
            rows.append([label, value if not isinstance(value, str) else Cell(value), threshold])

    row("ORT fp32 vs PyTorch, greedy: token exact match", "fp32_greedy_exact", f">= {cfg.get('min_fp32_exact', '–')}")
    row(f"ORT fp32 vs PyTorch, beam {m.get('num_beams', '')}: token exact match", "fp32_beam_exact",
        f">= {cfg.get('min_fp32_exact', '–')}")
    row("INT8 vs fp32, greedy: token exact match", "int8_greedy_exact")
    row("INT8 vs fp32: CER", "int8_cer_vs_fp32", f"<= {cfg.get('max_int8_cer', '–')}")
    row("fp32 CER against the lines' true text", "fp32_cer")
    row("INT8 CER against the lines' true text", "int8_cer")
    row("INT8 CER - fp32 CER (what quantisation costs in reading)", "int8_cer_delta")
    row("FP16 vs fp32, greedy: token exact match", "fp16_greedy_exact")
    row("FP16 vs fp32: CER", "fp16_cer_vs_fp32", f"<= {cfg.get('max_fp16_cer', '–')}")
    row("FP16 parity", "fp16_parity")
    for variant in ("fp32", "int8", "fp16"):
        if f"{variant}_bytes" in m:
            rows.append([f"{variant} size (MB)", round(m[f"{variant}_bytes"] / 1e6, 2), ""])
    row("INT8 size / fp32 size", "int8_size_ratio")
    row("line images in the parity set", "parity_images")
    verdict = ("passed: published" if not failed else "failed: " + "; ".join(failed))
    rows.append(["gate", Cell(verdict, f'<b class="{"ok" if not failed else "bad"}">{esc(verdict)}</b>'), ""])
    page.table(["check", "value", "threshold"], rows, css="parity")


def export_report(model_uri: str) -> Page:
    """The export stage's own report: the parity table of the ONNX export at ``model_uri``."""
    manifest = artifacts.read_manifest(model_uri)
    page = Page("TrOCR export: parity", kind="ocr-export")
    page.meta("export", model_uri)
    page.meta("source", manifest.lineage.get("source", ""))
    page.meta("content hash", manifest.content_hash)
    add_parity_table(page, manifest)
    return page


def ocr_report(results_uri: str, *, documents: str | None = None, export_manifest: artifacts.Manifest | None = None,
               pages_config: Any = None, pages: int = 3, lowest: int = 10) -> Page:
    """The report of the OCR results at ``results_uri`` (a published ``ocr-results`` artifact).

    ``documents`` defaults to the prefix recorded in the results' manifest; ``pages_config`` must be
    the one the recognizer used (PDF resolution) for boxes to land on the pages drawn.
    """
    manifest = artifacts.read_manifest(results_uri)
    documents = documents or manifest.inputs.get("documents") or manifest.config.get("documents")
    summary = json.loads(artifacts.read_text(results_uri, "report.json", manifest))
    scan = _Scan(pages, lowest)
    for record in iter_records(results_uri):
        scan.add(record)
    images = _page_images(documents, set(scan.page_keys) | {(r["document"], r["page"]) for r in scan.lowest},
                          pages_config) if documents else {}

    page = Page("OCR report", kind=KIND)
    page.meta("results", results_uri)
    page.meta("documents", documents or "(unknown)")
    page.meta("published", manifest.created_at)
    page.heading("Summary", anchor="summary")
    rows = [[k.replace("_", " "), summary[k]] for k in
            ("documents", "documents_ok", "documents_failed", "pages_with_text", "lines", "cer",
             "lines_per_second", "lines_per_second_wall", "lines_per_second_per_worker", "workers")
            if k in summary]
    rows += [[label, summary[k]] for k, label in (("documents_flagged", "documents flagged: low confidence"),
                                                  ("pages_flagged", "pages flagged: low confidence")) if k in summary]
    page.table(["measure", "value"], rows, css="summary")
    fit = summary.get("fit") if isinstance(summary.get("fit"), dict) else None
    flagged_docs = fit.get("documents") if fit and isinstance(fit.get("documents"), dict) else {}
    if fit:
        _fit_summary(page, summary, fit)
        if flagged_docs:
            _flagged_documents(page, flagged_docs, results_uri)
    if export_manifest is not None:
        page.heading("Export parity", anchor="parity")
        add_parity_table(page, export_manifest)

    page.heading("Pages", anchor="pages")
    legend = "".join(f'<span class="swatch" style="background:{figures.COLOURS[b]}"></span>{esc(label)}'
                     for b, label in (("high", f"p ≥ {figures.HIGH}"), ("medium", f"{figures.MEDIUM} ≤ p < {figures.HIGH}"),
                                      ("low", f"p < {figures.MEDIUM}"), ("none", "no confidence")))
    page.html_only(f'<p class="legend">Line boxes coloured by confidence p = exp(mean token log-prob):{legend}. '
                   'Dashed blue: word boxes. Hover a box for its text.</p>',
                   f"Line boxes are coloured by confidence p = exp(mean token log-prob): green p ≥ {figures.HIGH}, "
                   f"amber p ≥ {figures.MEDIUM}, red below.\n")
    for i, key in enumerate(scan.page_keys):
        doc, number = key
        records = scan.page_records[key]
        page.heading(f"{doc}, page {number}: {len(records)} lines", level=3)
        image = images.get(key)
        if image is None:
            page.paragraph("(the document could not be loaded to draw this page)", css="muted")
            continue
        background = image.copy()
        background.thumbnail((1100, 1100))
        svg = figures.page_svg(data_uri(jpeg_bytes(background, 70), "image/jpeg"), image.size, records,
                               document=doc, page=number)
        page.html_only(f'<section class="page-view"><input type="checkbox" class="toggle" id="tokens-{i}">'
                       f'<label for="tokens-{i}"> show token boxes</label><figure>{svg}</figure></section>', None)
        # Markdown renders no SVG: the same boxes burnt into a small copy of the page.
        page.image(png_bytes(figures.burn_boxes(image, records, 700)), f"{doc} page {number}", html=False)

    page.heading("Least confident lines", anchor="lowest")
    rows = []
    for r in scan.lowest:
        image = images.get((r["document"], r["page"]))
        p = figures.probability(r.get("confidence"))
        crop_cell = Cell("")
        if image is not None:
            crop_cell = Cell("(crop in the HTML report)",
                             f'<img class="crop" alt="crop" src="{data_uri(png_bytes(figures.crop(image, r["box"])))}">')
        rows.append([r["document"], r["page"], r["line"], round(p, 3) if p is not None else None,
                     Cell(r.get("text", "")), crop_cell])
    page.table(["document", "page", "line", "p", "text", "crop"], rows, css="lowest")

    page.heading(f"Errors ({scan.error_count})", anchor="errors")
    if scan.errors:
        page.table(["document", "error"], [[e["document"], Cell(e.get("error", ""))] for e in scan.errors], css="errors")
        if scan.error_count > len(scan.errors):
            page.paragraph(f"… and {scan.error_count - len(scan.errors)} more in results.jsonl", css="muted")
    else:
        page.paragraph("No document failed.")

    page.heading("Documents", anchor="documents")
    cer_docs = summary.get("cer_documents") or {}
    per_document = []
    for doc, s in scan.documents.items():
        p = figures.probability(s["conf_sum"] / s["conf_n"] if s["conf_n"] else None)
        per_document.append((doc, len(s["pages"]), s["lines"], p, _finite(cer_docs.get(doc)), doc in flagged_docs))
    shown = heapq.nsmallest(DOCUMENT_ROWS, per_document, key=_least_well_read_first)
    order = "highest CER first, then lowest mean p" if cer_docs else "lowest mean p first"
    if len(shown) < len(per_document):
        page.paragraph(f"The {len(shown):,} least well read of {len(per_document):,} documents ({order}); the other "
                       f"{len(per_document) - len(shown):,} are in results.jsonl of {results_uri} (a record per line)"
                       + (", their CER in its report.json (cer_documents)." if cer_docs else "."))
    else:
        page.paragraph(f"{len(per_document):,} documents, {order}.")
    rows = [[doc, pages_, lines, round(p, 3) if p is not None else None, cer, _LOW if low else ""]
            for doc, pages_, lines, p, cer, low in shown]
    page.table(["document", "pages", "lines", "mean p", "CER", "fit"], rows, css="documents")
    return page


_LOW = Cell("low confidence", '<b class="bad">low confidence</b>')


def _fit_summary(page: Page, summary: dict[str, Any], fit: dict[str, Any]) -> None:
    """The summary's line on documents read with low confidence, with the rule and the model it holds for."""
    threshold = _finite(fit.get("threshold"))
    p = figures.probability(threshold) if threshold is not None else None
    model = ", ".join(str(v)[:16] for v in (fit.get("model"), fit.get("model_hash")) if isinstance(v, str) and v)
    rule = (f"a page of at least {fit.get('min_lines')} lines is flagged when the median of its line confidences "
            f"(mean token log-probability) is below {threshold}" + (f" (p = {p:.3f})" if p is not None else "")
            + ", a document when most of its pages are; the threshold was measured for "
            + (f"the model ({model})" if model else "the model") + ", another model needs its own")
    docs, pages_ = _count(summary.get("documents_flagged")), _count(summary.get("pages_flagged"))
    judged_docs, judged_pages = _count(fit.get("documents_judged")), _count(fit.get("pages_judged"))
    if docs or pages_:
        page.paragraph(f"Low confidence: {docs:,} of {judged_docs:,} documents ({pages_:,} of {judged_pages:,} judged "
                       f"pages) were read with low confidence: the model may not fit them, and their text is "
                       f"likely wrong. Rule: {rule}.", css="bad")
    else:
        page.paragraph(f"No document was read with low confidence ({judged_pages:,} pages of {judged_docs:,} "
                       f"documents judged). Rule: {rule}.", css="ok")


def _flagged_documents(page: Page, flagged: dict[str, Any], results_uri: str) -> None:
    """A note per flagged document (the least confident first, at most ``FLAGGED_ROWS``)."""
    items = [(doc, v) for doc, v in flagged.items() if isinstance(v, dict)]
    shown = heapq.nsmallest(FLAGGED_ROWS, items, key=lambda item: (_finite(item[1].get("confidence")) is None,
                                                                   _finite(item[1].get("confidence")) or 0.0,
                                                                   item[0]))
    page.heading(f"Low-confidence documents ({len(items):,})", anchor="fit")
    if len(shown) < len(items):
        page.paragraph(f"The {len(shown):,} least confident of {len(items):,} flagged documents; all of them are in "
                       f"report.json of {results_uri} (fit.documents), their lines in results.jsonl "
                       "(page_low_confidence).")
    rows = []
    for doc, v in shown:
        pages_flagged = v.get("pages_flagged") if isinstance(v.get("pages_flagged"), list) else []
        listed = ", ".join(str(n) for n in pages_flagged[:20]) + (", …" if len(pages_flagged) > 20 else "")
        conf = _finite(v.get("confidence"))
        p = figures.probability(conf) if conf is not None else None
        rows.append([doc, Cell(f"{listed} ({len(pages_flagged)} of {v.get('pages_judged')})"),
                     round(p, 3) if p is not None else None,
                     Cell("the model may not fit this document: most of its pages were read with low confidence")])
    page.table(["document", "pages flagged", "median p", "note"], rows, css="flagged")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else 0


def _least_well_read_first(row: tuple[str, int, int, float | None, float | None, bool]) -> tuple[Any, ...]:
    """Documents with a CER first, highest first; then by mean p, lowest first (none known: last)."""
    doc, _, _, p, cer, _ = row
    return (cer is None, -(cer or 0.0), p is None, p or 0.0, doc)
