"""Visual reports (HTML and Markdown) and the metrics each stage logs."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import pytest

from inkbooth import artifacts, cli, reports, storage
from inkbooth.ocr import batch
from inkbooth.ocr.batch.shard import recognize_documents
from inkbooth.ocr.recognition.recognizer import RecognizeConfig
from inkbooth.reports import metrics
from inkbooth.reports.page import MARKDOWN_BUDGET


class Tree(HTMLParser):
    """Every element as (tag, attrs, ancestors' (tag, attrs)); enough to query a report."""

    VOID = {"img", "meta", "input", "br", "hr", "image", "link"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[tuple[str, dict[str, str]]]]] = []
        self._stack: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a, list(self._stack)))
        if tag not in self.VOID:
            self._stack.append((tag, a))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}, list(self._stack)))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def find(self, tag, css=None, inside=None):
        """Elements ``tag`` with class ``css``, within an element matching ``inside`` (a predicate)."""
        out = []
        for t, a, parents in self.elements:
            if t != tag or (css and css not in a.get("class", "").split()):
                continue
            if inside and not any(inside(pt, pa) for pt, pa in parents):
                continue
            out.append(a)
        return out


def assert_self_contained(text: str) -> None:
    """No script, and nothing fetched: every src/href is inline data or a fragment."""
    assert "<script" not in text.lower()
    tree = Tree(text)
    for _, attrs, _ in tree.elements:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), f"{key}={attrs[key][:60]} is fetched from elsewhere"
    assert "@import" not in text and "url(" not in text


# ---- OCR -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ocr_run(tiny_onnx, s3_server, tmp_path_factory):
    """The demo documents read by the tiny model on S3, merged with ground truth."""
    import uuid

    from inkbooth import demo
    local = tmp_path_factory.mktemp("ocr-report")
    bucket = f"s3://report-{uuid.uuid4().hex[:8]}"
    storage.ensure_bucket(bucket)
    demo.make_documents(local)
    storage.upload_dir(local / "documents", f"{bucket}/documents")
    storage.upload_dir(local / "ground-truth", f"{bucket}/gt")
    out = f"{bucket}/ocr"
    summary = recognize_documents(f"{bucket}/documents", str(tiny_onnx[0]), out,
                                  RecognizeConfig(num_beams=1, max_new_tokens=8), progress=False)
    batch.merge_results(batch.plan_documents(f"{bucket}/documents", 1), out, f"{bucket}/gt", [summary])
    return f"{out}/results", tiny_onnx[1]


def _records(results):
    return [json.loads(line) for line in artifacts.read_text(results, "results.jsonl").splitlines()]


def test_ocr_report_draws_one_box_per_line_record_of_the_first_page(ocr_run):
    results, export_manifest = ocr_run
    from inkbooth.reports.ocr import ocr_report

    page = ocr_report(results, export_manifest=export_manifest)
    html = page.html()
    assert_self_contained(html)
    records = [r for r in _records(results) if r.get("status") != "error"]
    first = (records[0]["document"], records[0]["page"])
    first_page = [r for r in records if (r["document"], r["page"]) == first]
    tree = Tree(html)
    svgs = tree.find("svg", "page")
    assert len(svgs) == 3 and (svgs[0]["data-document"], int(svgs[0]["data-page"])) == first

    def in_first(tag, attrs):
        return tag == "svg" and attrs.get("data-document") == first[0] and attrs.get("data-page") == str(first[1])

    boxes = tree.find("rect", "line", inside=in_first)
    assert len(boxes) == len(first_page) > 0, "one box per line record of the first page"
    for rect, record in zip(boxes, first_page):
        x0, y0, x1, y1 = record["box"]
        assert (int(rect["x"]), int(rect["y"]), int(rect["width"]), int(rect["height"])) == (x0, y0, x1 - x0, y1 - y0)
        assert rect["stroke"] in ("#2f855a", "#d69e2e", "#c53030", "#718096")
    assert len(tree.find("rect", "word", inside=in_first)) == sum(len(r["words"]) for r in first_page)
    assert len(tree.find("rect", "token", inside=in_first)) == sum(len(r["tokens"]) for r in first_page)
    # The ten least confident lines, each with its crop; the corrupt file's error record; the parity table.
    lowest = sorted(records, key=lambda r: r["confidence"])[:10]
    crops = tree.find("img", "crop")
    assert len(crops) == 10
    assert f"<td>{lowest[0]['document']}</td>" in html
    assert "corrupt.png" in html and "Errors (1)" in html
    assert "passed: published" in html and "int8_cer_vs_fp32" not in html  # labelled, not raw keys
    md = page.markdown()
    assert len(md) < MARKDOWN_BUDGET and "| documents ok | 4 |" in md and "corrupt.png" in md


def test_ocr_report_is_published_beside_the_results_and_found_by_the_cli(ocr_run, capsys):
    results, _ = ocr_run
    out = results.rsplit("/", 1)[0]
    assert cli.main(["report", results]) == 1, "no report yet"
    assert "--build" in capsys.readouterr().err
    assert cli.main(["report", results, "--build"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["html"] == artifacts.file_uri(f"{out}/reports", "report.html") and found["published"] \
        and found["current"], "the current version's file"
    assert artifacts.read_manifest(f"{out}/reports").kind == "ocr-report"
    assert storage.read_text(found["html"]).startswith("<!DOCTYPE html>")
    assert storage.read_text(found["markdown"]).startswith("# OCR report")
    assert cli.main(["report", f"{out}/work"]) == 1
    assert "not a finished run output" in capsys.readouterr().err


# ---- DreamBooth ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db_run(tiny_sd, subject_dir, class_set, tmp_path_factory):
    """Three steps logged every second one, validated at step 3, registered, sampled."""
    from inkbooth.dreambooth import export, sample, train

    root = tmp_path_factory.mktemp("db-report")
    cfg = train.TrainConfig(max_train_steps=3, learning_rate=1e-3, log_every=2, validation_every=3, validation_steps=2,
                            validation_prompts=["a photo of sks dog", "sks dog in snow"])
    trained = train.train_dreambooth(str(tiny_sd), str(subject_dir), str(root / "run"), cfg, class_images=class_set)
    version, _ = export.export_checkpoint(str(root / "run"), str(root / "registry"),
                                          export.ExportCheckpointConfig(name="ball"))
    sample.sample(version, str(root / "samples"),
                  sample.SampleConfig(prompts=["a photo of sks dog", "a painting of sks dog"], steps=2, images_per_prompt=2))
    return {"trained": trained, "version": version, "samples": str(root / "samples"), "class_set": class_set}


def test_training_logs_history_and_the_run_metrics(db_run):
    m = db_run["trained"].metrics
    history = json.loads(storage.read_text(storage.join(db_run["version"], "training.json")))["history"]
    assert [h["step"] for h in history] == [2, 3], "steps divisible by log_every, and the last"
    assert history[-1]["loss"] == m["loss"]
    assert m["mean_loss"] > 0 and m["steps_per_second"] > 0 and m["peak_memory_mb"] > 100
    assert m["resumed_from_step"] == 0 and m["steps_this_run"] == 3
    assert metrics.train_metrics(m).keys() == set(metrics.TRAIN_KEYS)


def test_dreambooth_report_has_the_grid_and_a_loss_point_per_logged_step(db_run):
    from inkbooth.reports.dreambooth import dreambooth_report

    page = dreambooth_report(db_run["version"], samples=db_run["samples"])
    html = page.html()
    assert_self_contained(html)
    tree = Tree(html)
    index = json.loads(artifacts.read_text(db_run["samples"], "samples.json"))
    [grid] = tree.find("table", "grid")
    samples = tree.find("img", "sample", inside=lambda t, a: t == "table" and a.get("class") == "grid")
    assert len(samples) == len(index) == 4
    assert "a painting of sks dog" in html
    history = json.loads(storage.read_text(f"{db_run['version']}/training.json"))["history"]
    [curve] = tree.find("img", "loss-curve")
    assert int(curve["data-points"]) == len(history) == 2
    assert curve["src"].startswith("data:image/png;base64,")
    rows = tree.find("tr", inside=lambda t, a: t == "table" and a.get("class") == "loss")
    assert len(rows) == 1 + len(history), "header and a row per logged step"
    assert len(tree.find("img", "validation")) == 2, "step 3, two prompts"
    [sheet] = tree.find("img", "contact-sheet")
    assert int(sheet["data-images"]) == 4
    md = page.markdown()
    assert len(md) < MARKDOWN_BUDGET and "![sample grid](data:image/png;base64," in md
    assert "![training loss curve](data:image/png;base64," in md


def test_loss_curve_plots_one_marker_per_point():
    from PIL import Image

    from inkbooth.reports import figures

    history = [{"step": s, "loss": 1 / s, "instance_loss": 0.5 / s, "prior_loss": 0.5 / s} for s in (10, 20, 30, 40)]
    png = figures.loss_curve_png(history)
    import io

    assert Image.open(io.BytesIO(png)).size[0] > 400
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def test_dreambooth_report_is_published_beside_the_version(db_run, capsys):
    version = db_run["version"]
    assert cli.main(["report", version, "--build", "--samples", db_run["samples"]]) == 0
    found = json.loads(capsys.readouterr().out)
    registry_name = version.rsplit("/", 1)[0]
    assert found["report"] == f"{registry_name}/reports/v1" and found["current"]
    assert artifacts.Registry(registry_name.rsplit("/", 1)[0]).versions("ball") == ["v1"], "reports are no version"


# ---- metrics -------------------------------------------------------------------------------------


def test_stage_metrics_keep_their_keys():
    exp = metrics.export_metrics({"fp32_greedy_exact": 1.0, "fp32_beam_exact": 0.98, "int8_greedy_exact": 0.5,
                                  "int8_cer_vs_fp32": 0.02, "fp32_bytes": 8_880_000, "int8_bytes": 2_760_000,
                                  "int8_size_ratio": 0.31, "fp16_parity": "not measured", "parity_images": 50})
    assert exp == {"fp32_greedy_exact": 1.0, "fp32_beam_exact": 0.98, "int8_greedy_exact": 0.5,
                   "int8_cer_vs_fp32": 0.02, "fp32_mb": 8.88, "int8_mb": 2.76, "int8_size_ratio": 0.31,
                   "gate_passed": 1.0}
    assert metrics.export_metrics({}, ["fp32_greedy_exact too low"])["gate_passed"] == 0.0
    assert metrics.prior_metrics({"made": 4, "reused": 2, "seconds": 2.0}) == {
        "images_made": 4.0, "images_reused": 2.0, "seconds_per_image": 0.5}
    assert metrics.prior_metrics({"made": 0, "reused": 6, "seconds": 0.1}) == {"images_made": 0.0, "images_reused": 6.0}
    merge = metrics.merge_metrics({"documents": 5, "documents_ok": 4, "documents_failed": 1, "lines": 58, "cer": None,
                                   "lines_per_second_wall": 3.5, "shards": [], "cer_documents": {}})
    assert merge == {"documents_ok": 4.0, "documents_failed": 1.0, "lines": 58.0, "lines_per_second_wall": 3.5}
    for keys in (metrics.EXPORT_KEYS, metrics.PRIOR_KEYS, metrics.TRAIN_KEYS, metrics.MERGE_KEYS, metrics.SAMPLE_KEYS):
        assert len(set(keys)) == len(keys)


def test_throughput_over_shards_uses_wall_clock_and_busy_seconds():
    shards = [{"lines": 30, "seconds": 10.0, "started": 100.0, "finished": 111.0},
              {"lines": 10, "seconds": 5.0, "started": 102.0, "finished": 120.0},
              {"lines": 0, "seconds": 0.0, "started": 101.0, "finished": 101.5}]
    t = metrics.throughput(shards)
    assert t["workers"] == 3
    assert math.isclose(t["lines_per_second_wall"], 40 / 20)
    assert math.isclose(t["lines_per_second_per_worker"], round(40 / 15, 3))
    assert "lines_per_second_wall" not in metrics.throughput([{"lines": 0, "seconds": 0.0}])


def test_merge_reports_wall_clock_and_per_worker_throughput(ocr_run):
    results, _ = ocr_run
    report = json.loads(artifacts.read_text(results, "report.json"))
    assert report["workers"] == 1 and report["lines_per_second_wall"] > 0 and report["lines_per_second_per_worker"] > 0
    assert report["lines_per_second_wall"] <= report["lines_per_second_per_worker"] * 1.001
    logged = metrics.merge_metrics(report)
    assert set(logged) == set(metrics.MERGE_KEYS), "ground truth given: every key, CER included"


def test_reports_locate_refuses_other_artifacts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    artifacts.publish(tmp_path / "a", str(tmp_path / "pub"), kind="something-else")
    with pytest.raises(ValueError, match="has no report"):
        reports.locate(str(tmp_path / "pub"))


def test_lineage_pointers_and_locations(tmp_path, monkeypatch):
    from kfp import dsl

    from inkbooth import lineage

    out = dsl.Dataset(name="class_images", uri=str(tmp_path / "root" / "class_images"))
    lineage.point(out, "s3://bucket/class-images/abc", content_hash="h", images=4)
    assert out.metadata == {"uri": "s3://bucket/class-images/abc", "content_hash": "h", "images": 4}
    bare = dsl.Dataset(name="class_images", uri=out.uri)  # metadata lost: the pointer file still says
    assert lineage.target(bare) == "s3://bucket/class-images/abc"
    with pytest.raises(ValueError, match="not a pointer"):
        lineage.target(dsl.Dataset(name="x", uri=str(tmp_path / "none")))
    # An imported s3:// model: KFP's local copy on a cluster, the URI where there is none (kfp.local).
    imported = dsl.Model(name="base", uri="s3://models/sd")
    assert lineage.location(imported) == "s3://models/sd"
    monkeypatch.setattr(lineage.os.path, "exists", lambda p: p == "/s3/models/sd")  # as the launcher leaves it
    assert lineage.location(imported) == "/s3/models/sd"
    monkeypatch.undo()
    hub = dsl.Model(name="base", uri="microsoft/trocr-base-printed")
    assert lineage.location(hub) == "microsoft/trocr-base-printed"
    copied = dsl.Model(name="base", uri=str(tmp_path / "copy"))
    (tmp_path / "copy").mkdir()
    assert lineage.location(copied) == str(tmp_path / "copy")


# ---- low confidence: the model may not fit the documents (issue 19 item 6; tests/test_fit.py reads) --


def test_merge_records_the_fit_rule_and_model_and_logs_flagged_counts(ocr_run):
    """The tiny model is random: it reads nothing well, so every judged page and document is flagged."""
    from inkbooth.ocr.batch.fit import FIT_THRESHOLD

    results, _ = ocr_run
    report = json.loads(artifacts.read_text(results, "report.json"))
    fit = report["fit"]
    assert fit["threshold"] == FIT_THRESHOLD and "median" in fit["statistic"] and fit["model_hash"]
    assert report["documents_flagged"] == fit["documents_judged"] == 4 and report["documents_flagged_share"] == 1.0
    assert report["pages_flagged"] == fit["pages_judged"] == report["pages_with_text"] == 6
    assert sorted(fit["documents"]) == ["letter.png", "receipt.jpg", "scan.tiff", "statement.pdf"]
    lines = [r for r in _records(results) if "status" not in r]
    assert lines and all(r["page_low_confidence"] for r in lines)
    logged = metrics.merge_metrics(artifacts.read_manifest(results).metrics)
    assert logged["documents_flagged"] == 4.0 and logged["pages_flagged_share"] == 1.0
    empty = metrics.merge_metrics({"documents_ok": 0, "documents_flagged": 0, "documents_flagged_share": None})
    assert empty == {"documents_ok": 0.0, "documents_flagged": 0.0}, "no share of nothing judged"


def test_the_ocr_report_says_which_documents_the_model_may_not_fit(ocr_run):
    from inkbooth.reports.ocr import ocr_report

    results, _ = ocr_run
    page = ocr_report(results)
    md, html = page.markdown(), page.html()
    assert "| documents flagged: low confidence | 4 |" in md and "| pages flagged: low confidence | 6 |" in md
    assert "4 of 4 documents" in html and "were read with low confidence" in html
    assert html.count("the model may not fit this document") == 4
    assert html.count('<b class="bad">low confidence</b>') == 4, "a mark per document in the documents table"


def test_a_report_of_many_flagged_documents_notes_the_least_confident_and_stays_small(tmp_path):
    from inkbooth.reports.ocr import FLAGGED_ROWS, ocr_report
    from tests.test_report_injection import KFP_MARKDOWN_LIMIT, publish_ocr_results

    n = 10_000
    names = [f"scans/batch-{i // 500:03d}/invoice-{i:06d}-scanned-at-the-front-desk.png" for i in range(n)]
    records = [{"document": d, "page": 1, "line": 1, "box": [0, 0, 9, 9], "text": "x", "confidence": -0.5,
                "page_low_confidence": True} for d in names]
    flagged = {d: {"flagged": True, "pages_judged": 3, "pages_flagged": [1, 2, 3], "confidence": -0.1 - i / n}
               for i, d in enumerate(names)}
    summary = {"documents": n, "documents_ok": n, "documents_failed": 0, "lines": n, "documents_flagged": n,
               "pages_flagged": 3 * n, "fit": {"threshold": -0.016, "min_lines": 3, "model": None, "model_hash": "abc",
                                               "documents_judged": n, "pages_judged": 3 * n, "documents": flagged}}
    page = ocr_report(publish_ocr_results(tmp_path, records, summary))
    md, html = page.markdown(), page.html()
    assert len(md) < KFP_MARKDOWN_LIMIT and html.count("the model may not fit this document") == FLAGGED_ROWS
    assert names[-1] in html and names[0] not in md[md.index("## Low-confidence"):md.index("## Pages")], \
        "the least confident are the ones noted"
    assert f"The {FLAGGED_ROWS} least confident of 10,000 flagged documents" in html
