"""Visual reports of a run, as self-contained HTML and Markdown, kept beside the run's results.

* OCR: ``<output>/reports/`` beside ``<output>/results/``;
* DreamBooth: ``<registry>/<name>/reports/<version>/`` beside the registered version.

Each report folder is an artifact of its own (``report.html``, ``report.md``, manifest last), so a
user without the KFP UI opens the same files the UI shows. A report is republished as a new version
(see ``inkbooth.artifacts``): the file URIs returned are those of the current version. ``locate`` finds them from a run's
output (what ``inkbooth report RUN_OUTPUT`` prints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage

HTML = "report.html"
MARKDOWN = "report.md"
REPORTS = "reports"
KINDS = {"ocr-results": "ocr-report", "dreambooth-export": "dreambooth-report"}


def _parent(uri: str) -> str:
    stripped = uri.rstrip("/")
    if "/" not in stripped.split("://", 1)[-1]:
        raise ValueError(f"{uri}: has no parent folder to keep reports in")
    return stripped.rsplit("/", 1)[0]


def report_uri(run_output: str, kind: str) -> str:
    """Where the report of ``run_output`` (an ``ocr-results`` artifact or a registered version) lives."""
    if kind == "ocr-results":
        return storage.join(_parent(run_output), REPORTS)
    if kind == "dreambooth-export":
        version = run_output.rstrip("/").rsplit("/", 1)[-1]
        return storage.join(_parent(run_output), REPORTS, version)
    raise ValueError(f"{run_output}: a {kind!r} artifact has no report; expected OCR results or a model version")


def write(page: Any, folder: str | Path) -> dict[str, Path]:
    """``report.html`` and ``report.md`` of ``page`` into a local folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HTML).write_text(page.html(), encoding="utf-8")
    (folder / MARKDOWN).write_text(page.markdown(), encoding="utf-8")
    return {"html": folder / HTML, "markdown": folder / MARKDOWN}


def publish(page: Any, run_output: str, *, kind: str | None = None) -> dict[str, str]:
    """Write ``page`` as the report of ``run_output`` beside it; returns the files' URIs."""
    source = _source(run_output)
    kind = kind or source.kind
    uri = report_uri(run_output, kind)
    with storage.temp_dir("inkbooth-report-") as tmp:
        write(page, tmp)
        manifest = artifacts.publish(tmp, uri, kind=KINDS[kind], inputs={"source": source.content_hash},
                                     lineage={"source": run_output}, overwrite=True)
    # A new version of the report artifact: its files live where its manifest says.
    return {"html": manifest.location(uri, HTML), "markdown": manifest.location(uri, MARKDOWN)}


def _source(run_output: str) -> artifacts.Manifest:
    try:
        return artifacts.read_manifest(run_output)
    except artifacts.NotPublishedError as e:
        raise ValueError(f"{run_output}: not a finished run output: {e}") from None


def locate(run_output: str) -> dict[str, Any]:
    """The report files of ``run_output`` and whether they are published and current."""
    source = _source(run_output)
    uri = report_uri(run_output, source.kind)
    found: dict[str, Any] = {"run_output": run_output, "kind": source.kind, "report": uri,
                             "html": storage.join(uri, HTML), "markdown": storage.join(uri, MARKDOWN)}
    try:
        report = artifacts.read_manifest(uri)
    except artifacts.NotPublishedError:
        found["published"] = False
        return found
    found["published"] = True
    found["html"], found["markdown"] = report.location(uri, HTML), report.location(uri, MARKDOWN)
    found["current"] = report.inputs.get("source") == source.content_hash
    return found


def build(run_output: str, *, samples: str | None = None, export_model: str | None = None,
          pages_config: Any = None, recognize_config: dict[str, Any] | None = None) -> Any:
    """The report page of ``run_output`` from its artifacts (OCR results or a registered version).

    ``export_model`` (OCR) adds the export's parity table; ``samples`` (DreamBooth) the samples.
    ``pages_config`` (or the run's ``recognize_config``) says how the recognizer loaded the pages.
    """
    if recognize_config is not None and pages_config is None:
        from inkbooth import config
        from inkbooth.ocr.recognition.recognizer import RecognizeConfig

        pages_config = config.from_dict(RecognizeConfig, recognize_config, source="recognize config").pages
    kind = _source(run_output).kind
    if kind == "ocr-results":
        from inkbooth.reports.ocr import ocr_report

        parity = artifacts.read_manifest(export_model) if export_model else None
        return ocr_report(run_output, export_manifest=parity, pages_config=pages_config)
    if kind == "dreambooth-export":
        from inkbooth.reports.dreambooth import dreambooth_report

        return dreambooth_report(run_output, samples=samples)
    raise ValueError(f"{run_output}: a {kind!r} artifact has no report; expected OCR results or a model version")


def write_outputs(page: Any, *, html: str | None = None, markdown: str | None = None) -> None:
    """Write ``page`` to KFP output files (``Output[dsl.HTML]``/``Output[dsl.Markdown]`` paths)."""
    for path, text in ((html, page.html() if html else ""), (markdown, page.markdown() if markdown else "")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")


def for_run(run_output: str, *, html: str | None = None, markdown: str | None = None, **sources: Any) -> dict[str, str]:
    """What a pipeline stage does: build the report, publish it beside ``run_output``, write the KFP outputs."""
    page = build(run_output, **sources)
    found = publish(page, run_output)
    write_outputs(page, html=html, markdown=markdown)
    return found
