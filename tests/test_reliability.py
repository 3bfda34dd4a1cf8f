"""Issue 9, reliability second round: the cases a hostile user found, each failing before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inkbooth import artifacts, cli, storage
from inkbooth.ocr import batch
from inkbooth.ocr.batch.results import document_result
from inkbooth.ocr.batch.shard import OutputError, claim_output, recognize_documents
from inkbooth.ocr.documents import pages, synthetic
from inkbooth.ocr.documents.pages import PagesConfig
from inkbooth.ocr.layout import lines as layout
from inkbooth.ocr.recognition.export import ExportConfig, export_trocr
from inkbooth.ocr.recognition.recognizer import RecognizeConfig
from inkbooth.ocr.training import finetune

FAST = ["--num-beams", "1", "--max-new-tokens", "4", "--token-boxes", "false"]


def page_png(folder, name: str, seed: int = 1, lines: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    synthetic.render_page(seed=seed, max_lines=lines, width=600, height=400).image.save(folder / name)


def results_of(output) -> list[dict]:
    return [json.loads(x) for x in artifacts.read_text(str(output) + "/results", "results.jsonl").splitlines()]


# ---- item 4: an output belongs to one documents prefix ---------------------------------------------


def test_a_second_run_over_other_documents_into_one_output_is_refused(tiny_onnx, tmp_path, capsys):
    model, _ = tiny_onnx
    page_png(tmp_path / "a", "a.png", seed=1)
    page_png(tmp_path / "b", "b.png", seed=2)
    out = tmp_path / "out"
    assert cli.main(["ocr", str(tmp_path / "a"), str(model), str(out), *FAST]) == 0
    capsys.readouterr()
    assert cli.main(["ocr", str(tmp_path / "b"), str(model), str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "holds the results of documents" in err and str(tmp_path / "a") in err and str(tmp_path / "b") in err
    assert {r["document"] for r in results_of(out)} == {"a.png"}, "the first run's results are intact"
    assert cli.main(["ocr", str(tmp_path / "a"), str(model), str(out), *FAST]) == 0, "the same documents again: fine"


def test_an_output_inside_the_documents_folder_is_refused(tmp_path):
    page_png(tmp_path / "docs", "a.png")
    with pytest.raises(OutputError, match="inside the documents folder"):
        claim_output(str(tmp_path / "docs"), str(tmp_path / "docs" / "ocr-out"))
    assert not (tmp_path / "docs" / "ocr-out").exists()


def test_owner_of_an_s3_output_is_shared_by_concurrent_shards(bucket):
    for _ in range(3):  # every shard of one run claims; all agree
        claim_output(f"{bucket}/docs/", f"{bucket}/out")
    with pytest.raises(OutputError, match="holds the results of documents"):
        claim_output(f"{bucket}/other", f"{bucket}/out")
    assert json.loads(storage.read_text(f"{bucket}/out/owner.json")) == {"documents": f"{bucket}/docs"}


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "inkbooth.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_a_reader_is_installed_in_place_not_as_a_version(tmp_path, monkeypatch):
    """A package's reader folder is found by file names (package data, ``readers.path``): installing
    again replaces it whole, in place, never as a hidden version beside the old files."""
    from inkbooth import readers
    monkeypatch.setattr(readers, "HERE", tmp_path / "readers")
    (tmp_path / "readers" / "latin").mkdir(parents=True)
    (tmp_path / "readers" / "latin" / readers.RECIPE).write_text("base: {}\n")
    fonts = tmp_path / "fonts"
    word_list = {"word_list": f"{fonts.absolute()}/american-english"}  # as the trainer records it
    for run, weights in (("one", b"first"), ("two", b"second")):
        trained = tmp_path / f"trained-{run}"
        (trained / finetune.LOGS).mkdir(parents=True)
        (trained / "model.safetensors").write_bytes(weights)
        (trained / "training.json").write_text(json.dumps({"config": {"synthetic": word_list}}))
        (trained / finetune.LOGS / "events").write_text("log")
        artifacts.publish(trained, str(tmp_path / f"out-{run}"), kind=finetune.KIND, overwrite=True,
                          config={"synthetic": word_list}, metrics={"steps": 3, "synthetic_cer": 0.5})
        folder = readers.install("latin", [str(tmp_path / "out-one"), str(tmp_path / f"out-{run}")], fonts)
    assert readers.path("latin") == folder and (folder / "model.safetensors").read_bytes() == b"second"
    manifest = artifacts.read_manifest(str(folder))
    assert manifest.root == "" and not (folder / artifacts.VERSIONS).exists()
    assert sorted(p.name for p in (tmp_path / "readers").iterdir()) == ["latin"], "the old folder is gone"
    assert {f.path for f in manifest.files} == {"model.safetensors", "training.json", readers.RECIPE}
    # Every stage in the lineage; font paths as the recipe names them, in the manifest and training.json.
    assert [s["stage"] for s in manifest.lineage["stages"]] == [1, 2] and manifest.lineage["stages"][1]["steps"] == 3
    assert manifest.config["synthetic"]["word_list"] == "american-english"
    assert json.loads((folder / "training.json").read_text())["config"]["synthetic"]["word_list"] == "american-english"


def test_a_re_export_into_an_old_export_folder_seals_no_stale_files(tiny_trocr, tiny_onnx, tmp_path):
    import shutil

    old, _ = tiny_onnx  # fp32, int8 and fp16
    folder = tmp_path / "export"
    shutil.copytree(old, folder)
    m = export_trocr(str(tiny_trocr), str(folder), ExportConfig(variants=["fp32"], parity_images=4, opset=17))
    assert not [f.path for f in m.files if not f.path.startswith("fp32/") and f.path != "parity.json"]
    assert not (artifacts.fetch(str(folder)) / "fp16").exists(), "the old fp16/ is not part of the new version"
    assert artifacts.read_manifest(str(folder)).content_hash == m.content_hash


def ocr(docs, model, out, *extra: str) -> int:
    return cli.main(["ocr", str(docs), str(model), str(out), *FAST, *extra])


# ---- item 2: pages past max_pages, and every document a record -------------------------------------


def _pdf(pages_: list, path) -> None:
    first, *rest = [p.convert("RGB") for p in pages_]
    first.save(path, save_all=True, append_images=rest, resolution=100)


def test_pages_past_max_pages_become_a_warning_record(tiny_onnx, tmp_path):
    from PIL import Image

    model, _ = tiny_onnx
    blank = Image.new("L", (600, 400), 255)
    text = synthetic.render_page(seed=5, max_lines=2, width=600, height=400).image
    (tmp_path / "docs").mkdir()
    _pdf([blank, blank, text], tmp_path / "docs" / "long.pdf")  # the text is on the last page only
    summary = recognize_documents(str(tmp_path / "docs"), str(model), str(tmp_path / "out"),
                                  RecognizeConfig(num_beams=1, max_new_tokens=4,
                                                  pages={"max_pages": 2}), progress=False)
    result = document_result(str(tmp_path / "out"), "long.pdf")
    assert summary["errors"] == 0 and result["pages"] == 2 and result["pages_in_document"] == 3
    notes = {r["status"]: r for r in result["records"] if "status" in r}
    assert "only the first 2 read (max_pages); pages 3-3 were not read" in notes["warning"]["warning"]
    assert "no text found on its 2 page(s)" in notes["empty"]["empty"], "never 'ok, 0 lines' without a record"


def test_every_planned_document_gets_a_record(tiny_onnx, tmp_path):
    from PIL import Image

    model, _ = tiny_onnx
    docs = tmp_path / "docs"
    page_png(docs, "text.png")
    Image.new("L", (800, 600), 255).save(docs / "blank.png")
    Image.new("L", (1, 1), 0).save(docs / "one-pixel.png")
    assert ocr(docs, model, tmp_path / "out") == 0
    by_doc: dict[str, list] = {}
    for r in results_of(tmp_path / "out"):
        by_doc.setdefault(r["document"], []).append(r)
    assert set(by_doc) == {"text.png", "blank.png", "one-pixel.png"}
    assert [r["status"] for r in by_doc["blank.png"]] == ["empty"] == [r["status"] for r in by_doc["one-pixel.png"]]
    report = json.loads(artifacts.read_text(str(tmp_path / "out" / "results"), "report.json"))
    assert report["documents_empty"] == 2 and report["documents_ok"] == 3


def test_a_document_is_read_a_page_at_a_time(tiny_onnx, tmp_path, monkeypatch):
    """The quick stand-in for the 20 vs 600-page memory test (``test_load.py``, slow): while a
    40-page TIFF is read, at most two page images are alive at once (the page being cut and the one
    being decoded), and the records reach the result file. Before, every line kept its whole page
    and a document's lines were all held: every page stayed alive to the end."""
    import weakref

    model, _ = tiny_onnx
    (tmp_path / "docs").mkdir()
    frames = [synthetic.render_page(seed=300 + i, max_lines=1, width=600, height=300).image for i in range(40)]
    frames[0].save(tmp_path / "docs" / "long.tiff", save_all=True, append_images=frames[1:])
    del frames
    alive: list[weakref.ref] = []
    most = 0
    load = pages.load_pages

    def watched(*args, **kwargs):
        nonlocal most
        for page in load(*args, **kwargs):
            alive.append(weakref.ref(page.image))
            most = max(most, sum(ref() is not None for ref in alive))
            yield page

    monkeypatch.setattr(pages, "load_pages", watched)
    monkeypatch.setattr(layout, "document_lines", lambda source, name, config=None: (
        line for page in watched(source, name, config) for line in layout.page_lines(page, config)))
    summary = recognize_documents(str(tmp_path / "docs"), str(model), str(tmp_path / "out"),
                                  RecognizeConfig(num_beams=1, max_new_tokens=2,
                                                  batch_size=4), progress=False)
    assert summary["errors"] == 0 and len(alive) == 40
    result = document_result(str(tmp_path / "out"), "long.tiff")
    assert result["pages"] == 40 and result["lines"] == summary["lines"] > 0
    assert most <= 2, f"{most} page images alive at once"


def test_cutting_a_page_leaves_nothing_for_the_cyclic_gc():
    """A page's arrays must go when its lines are cut; held by a reference cycle, they waited for the
    cyclic GC and pages piled up (peak RSS 1.8 GB for one 600-page TIFF; 0.6 GB for 20 pages)."""
    import gc

    page = pages.Page(0, synthetic.render_page(seed=13, max_lines=5, width=900, height=700).image)
    layout.page_lines(page)  # first use: imports and caches
    gc.collect()
    gc.disable()
    try:
        lines = layout.page_lines(page)
        assert gc.collect() == 0, "no reference cycles"
    finally:
        gc.enable()
    assert len(lines) == 5


# ---- item 3: one long name must not stop the merge ---------------------------------------------------


def test_a_long_document_name_does_not_stop_the_merge(tiny_onnx, tmp_path, bucket):
    model, _ = tiny_onnx
    docs = tmp_path / "docs"
    long_local = "n" * 250 + ".png"  # 254 bytes: a legal file name, too long with ".txt" added
    page_png(docs, long_local, seed=3)
    page_png(docs, "short.png", seed=4)
    assert ocr(docs, model, tmp_path / "out") == 0
    report = json.loads(artifacts.read_text(str(tmp_path / "out" / "results"), "report.json"))
    assert report["documents_ok"] == 2 and long_local in report["text_files_renamed"]
    assert artifacts.read_text(str(tmp_path / "out" / "results"), report["text_files_renamed"][long_local])
    # Long key segments are legal on S3 (AWS: up to 1,024 bytes a key; SeaweedFS: 255 a segment): a file
    # named after one, plus ".txt", would be too long here. Its text file name comes from a hash too.
    long_key = "k" * 248 + ".png"
    storage.write_bytes(f"{bucket}/docs/{long_key}", (docs / "short.png").read_bytes())
    out = f"{bucket}/out"
    recognize_documents(f"{bucket}/docs", str(model), out, RecognizeConfig(
        num_beams=1, max_new_tokens=4, token_boxes=False), progress=False)
    manifest = batch.merge_results(batch.plan_documents(f"{bucket}/docs", 1), out)
    assert manifest.metrics["documents_ok"] == 1 and manifest.metrics["lines"] == 2


# ---- item 5: the files that will be loaded decide, not decoys beside them --------------------------


def test_pickle_weights_are_refused_whatever_lies_beside_them(tmp_path):
    from inkbooth import models

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (folder / "README.onnx").write_bytes(b"decoy")
    (folder / "other.safetensors").write_bytes(b"decoy")
    with pytest.raises(models.ModelSourceError, match=r"pickle-based weights \(pytorch_model.bin\)"):
        models.resolve(str(folder))
    (folder / "unet").mkdir()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (folder / "model.safetensors").write_bytes(b"{}")  # what transformers loads instead of pytorch_model.bin
    with pytest.raises(models.ModelSourceError, match="unet/diffusion_pytorch_model.bin"):
        models.resolve(str(folder))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"{}")
    (folder / "training_args.bin").write_bytes(b"\x80\x04pickle")  # a trainer's state, never loaded
    assert models.resolve(str(folder)) == folder, "every pickle is shadowed by the file loaders prefer"


# ---- item 6: errors of the run fail the run; only documents' errors are records -------------------


def test_config_and_model_errors_fail_the_run_before_any_document(tmp_path, capsys):
    page_png(tmp_path / "docs", "a.png")
    src = tmp_path / "fake-export" / "fp32"
    src.mkdir(parents=True)
    (src / "encoder_model.onnx").write_bytes(b"not a model")
    artifacts.publish(src.parent, str(tmp_path / "export"), kind="trocr-onnx")
    out = tmp_path / "out"
    assert cli.main(["ocr", str(tmp_path / "docs"), str(tmp_path / "export"), str(out), "--threads", "-1"]) == 2
    assert "threads: must be between 0 and 1024, got -1" in capsys.readouterr().err
    assert cli.main(["ocr", str(tmp_path / "docs"), str(tmp_path / "export"), str(out), "--variant", "fp16"]) == 1
    assert "variant 'fp16' is not in this export (it has ['fp32'])" in capsys.readouterr().err
    assert cli.main(["ocr", str(tmp_path / "docs"), str(tmp_path / "export"), str(out), "--variant", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("inkbooth ocr: "), \
        "a model that cannot load: one line, exit 1"
    assert not (out / "work").exists() and not (out / "results").exists(), "no document became an error record"


@pytest.mark.parametrize("bad, message", [
    ({"pages": {"max_pages": 0}}, "max_pages: must be between 1 and 1000000, got 0"),
    ({"pages": {"max_skew_degrees": 1e9}}, "max_skew_degrees: must be between 0.0 and 45.0"),
    ({"pages": {"max_skew_degrees": float("nan")}}, "max_skew_degrees: expected a finite number"),
    ({"box_threshold": float("inf")}, "box_threshold: expected a finite number"),
    ({"batch_size": 0}, "batch_size: must be between 1 and 4096"),
])
def test_every_numeric_field_is_validated(bad, message):
    from inkbooth.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=message):
        from_dict(RecognizeConfig, bad)


def test_nan_in_a_yaml_file_and_in_code_is_refused(tmp_path):
    from inkbooth.config import ConfigError, load
    (tmp_path / "c.yaml").write_text("pages:\n  max_skew_degrees: .nan\n")
    with pytest.raises(ConfigError, match="max_skew_degrees: expected a finite number"):
        load(RecognizeConfig, tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="max_pages: must be between"):
        RecognizeConfig(pages=PagesConfig(max_pages=0)).validate()


def test_a_store_failure_fails_the_run_but_a_missing_document_is_a_record(tiny_onnx, tmp_path, monkeypatch):
    model, _ = tiny_onnx
    page_png(tmp_path / "docs", "a.png")
    page_png(tmp_path / "docs", "b.png", seed=2)
    keys = ["a.png", "b.png", "gone.png"]  # planned, then deleted before its shard ran
    cfg = RecognizeConfig(num_beams=1, max_new_tokens=4, token_boxes=False)
    summary = recognize_documents(str(tmp_path / "docs"), str(model), str(tmp_path / "out"), cfg,
                                  keys=keys, progress=False)
    assert summary["done"] == 2 and summary["errors"] == 1
    assert "no such file" in document_result(str(tmp_path / "out"), "gone.png")["records"][0]["error"]

    def store_down(*a, **kw):
        raise storage.StorageError("reading s3://docs/a.png: failed after 6 attempts: EndpointConnectionError")

    monkeypatch.setattr(storage, "download", store_down)
    with pytest.raises(storage.StorageError, match="EndpointConnectionError"):
        recognize_documents(str(tmp_path / "docs"), str(model), str(tmp_path / "out2"), cfg,
                            progress=False)
    assert not (tmp_path / "out2" / "work").exists()


# ---- item 7: hangs ------------------------------------------------------------------------------------


def test_a_stalled_endpoint_is_an_error_naming_the_uri_in_bounded_time(caplog):
    """Issue 18 item 11: botocore retried a timed-out request silently (request_attempts more times), so the
    first warning came after 4 read timeouts (246 s) and the error after the deadline plus as much again
    (487 s of a 300 s deadline). Now a timeout goes to inkbooth's retry loop: a warning after one read
    timeout, and no attempt starts that could not end by the deadline."""
    import logging
    import socket
    import threading
    import time

    from inkbooth import objectstore

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept_and_say_nothing():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    # botocore's per-request retries as by default (3), the timeouts and the deadline scaled down (60 s -> 1 s).
    read_timeout, deadline = 1.0, 4.0
    quick = storage.RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05, request_attempts=3,
                                connect_timeout=1, read_timeout=read_timeout, deadline=deadline)
    previous = storage.retries._retry_policy
    storage.set_retry_policy(quick)
    env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{server.getsockname()[1]}", "AWS_ACCESS_KEY_ID": "a",
           "AWS_SECRET_ACCESS_KEY": "b"}
    took = {}
    try:
        with objectstore.environment(env), caplog.at_level(logging.WARNING, logger="inkbooth.storage.retries"):
            for what, call in (("reading", lambda: storage.read_bytes("s3://stalled/doc.png")),
                               ("writing", lambda: storage.write_bytes("s3://stalled/doc.png", b"x" * 100))):
                caplog.clear()
                start = time.time()
                with pytest.raises(storage.StorageError, match=rf"{what} s3://stalled/doc.png: failed after \d+ "
                                                               r"attempts \(no answer in \d+s: the store stalls\)"):
                    call()
                took[what] = time.time() - start
                warnings = [r.created - start for r in caplog.records if "retrying in" in r.getMessage()]
                if what == "reading":
                    assert warnings, "a stalled read warns before it fails"
                    assert read_timeout * 0.9 < warnings[0] < read_timeout * 1.9, \
                        f"the first warning comes after one read timeout, not several ({warnings[0]:.1f}s)"
    finally:
        storage.set_retry_policy(previous)
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    for what, seconds in took.items():
        assert seconds < deadline + 0.5, f"{what}: an error by the deadline ({seconds:.1f}s of {deadline:.0f}s)"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    import time

    from inkbooth.config import ConfigError, load

    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]"
                                                   for i in range(8)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\npages:\n  deskew: *i\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="YAML (aliases|anchors) are not allowed"):
        load(RecognizeConfig, tmp_path / "bomb.yaml")
    assert time.monotonic() - start < 2


# ---- item 8: wrong output without an error -----------------------------------------------------------


def _lines(image) -> int:
    import io

    buf = io.BytesIO()
    image.save(buf, format="TIFF")  # holds float pixels too
    return len(list(layout.document_lines(buf.getvalue(), "x.tiff")))


def test_exif_rotated_photos_are_read_upright(tmp_path):
    from PIL import Image

    from inkbooth.dreambooth import train
    page = synthetic.render_page(seed=8, max_lines=3, width=900, height=600)
    sideways = page.image.convert("RGB").transpose(Image.Transpose.ROTATE_90)  # the sensor's view
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": what a camera held upright writes
    sideways.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    (loaded,) = pages.load_pages((tmp_path / "photo.jpg").read_bytes(), "photo.jpg")
    assert loaded.image.size == (900, 600)
    assert len(list(layout.document_lines((tmp_path / "photo.jpg").read_bytes(), "photo.jpg"))) == len(page.lines)
    (subject,), _ = train.load_images(str(tmp_path), "subject")
    assert subject.size == (900, 600)


def test_pdf_page_rotation_is_honoured(tmp_path):
    """A scan stored sideways with /Rotate 90 is shown upright by viewers, and read upright here.
    (pdfium already honoured /Rotate before this round; this keeps it so.)"""
    import io

    from PIL import Image
    from pypdf import PdfReader, PdfWriter

    page = synthetic.render_page(seed=9, max_lines=3, width=900, height=600)
    buf = io.BytesIO()
    page.image.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(buf, format="PDF", resolution=100)
    writer = PdfWriter()
    for p in PdfReader(io.BytesIO(buf.getvalue())).pages:
        writer.add_page(p).rotate(90)
    out = io.BytesIO()
    writer.write(out)
    (loaded,) = pages.load_pages(out.getvalue(), "rotated.pdf", pages.PagesConfig(pdf_dpi=100))
    assert loaded.image.size[0] > loaded.image.size[1]
    assert len(list(layout.document_lines(out.getvalue(), "rotated.pdf", pages.PagesConfig(pdf_dpi=100)))) == \
        len(page.lines)


@pytest.mark.parametrize("kind", ["I;16", "F", "I"])
def test_deep_and_float_subject_images_keep_their_tones(kind, tmp_path):
    import numpy as np
    from PIL import Image

    from inkbooth.dreambooth import train

    ramp = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))  # dark to light
    if kind == "I;16":
        img = Image.fromarray((ramp * 65535).astype(np.uint16))
    elif kind == "F":
        img = Image.fromarray(ramp.astype(np.float32))
    else:
        img = Image.fromarray((ramp * 65535).astype(np.int32))
    assert img.mode == kind
    img.save(tmp_path / "x.tiff")
    (rgb,), _ = train.load_images(str(tmp_path), "subject")
    gray = np.asarray(rgb.convert("L"), dtype=np.float64)
    assert gray[:, 0].mean() < 10 and gray[:, -1].mean() > 245 and 100 < gray.mean() < 155, \
        f"{kind}: a ramp stays a ramp (not all white or all black)"


@pytest.mark.parametrize(("value", "gray"), [(100_000, 0), (1_000_000_000, 119), (2**31 - 1, 255),
                                           (40_000, 156), (200, 200), (0, 0), (-5, 127)])
def test_a_uniform_32_bit_subject_image_keeps_its_tone(value, gray, tmp_path):
    """Issue 18 item 11: a uniform 32-bit integer image above 65535 was scaled by its own (empty) range
    and came out white, while ``to_8bit`` said it scales by the type's range. Now it does: the smallest
    of 0-255, 0-65535, 0-2**31-1 that holds the values (the signed range when any is negative)."""
    import numpy as np
    from PIL import Image

    from inkbooth.dreambooth import train
    from inkbooth.imaging import to_8bit

    img = Image.fromarray(np.full((16, 16), value, dtype=np.int32))
    assert img.mode == "I"
    assert set(np.asarray(to_8bit(img, stretch=False)).ravel()) == {gray}, f"{value} -> {gray}"
    img.save(tmp_path / "x.tiff")
    (rgb,), _ = train.load_images(str(tmp_path), "subject")
    assert set(np.asarray(rgb.convert("L")).ravel()) == {gray}
    assert set(np.asarray(to_8bit(img, stretch=True)).ravel()) == {255}, "a uniform page is still blank"
    big = Image.fromarray((np.tile(np.linspace(0.0, 1.0, 64), (8, 1)) * (2**31 - 1)).astype(np.int32))
    ramp = np.asarray(to_8bit(big, stretch=False), dtype=np.float64)
    assert ramp[:, 0].mean() < 3 and ramp[:, -1].mean() > 252 and (np.diff(ramp[0]) >= 0).all(), "a ramp stays one"


def test_a_png_mentioning_pdf_in_a_text_chunk_is_read_as_a_png(tmp_path):
    import io

    from PIL.PngImagePlugin import PngInfo

    page = synthetic.render_page(seed=10, max_lines=2, width=700, height=400)
    info = PngInfo()
    info.add_text("Comment", "converted from %PDF-1.7 by a scanner")
    buf = io.BytesIO()
    page.image.save(buf, format="PNG", pnginfo=info)
    assert b"%PDF-" in buf.getvalue()[:1024]
    assert len(list(layout.document_lines(buf.getvalue(), "scan.png"))) == len(page.lines)


def test_one_nan_pixel_does_not_whiten_the_page():
    import numpy as np
    from PIL import Image

    page = synthetic.render_page(seed=11, max_lines=3, width=800, height=500)
    arr = np.asarray(page.image, dtype=np.float32) / 255.0
    arr[0, 0] = np.nan
    assert _lines(Image.fromarray(arr, "F")) == len(page.lines)


def test_files_left_out_of_a_run_are_listed_in_the_report(tiny_onnx, tmp_path):
    import os

    model, _ = tiny_onnx
    docs = tmp_path / "docs"
    page_png(docs, "read.png")
    for name in ("..png", ".hidden.png", "manifest.json"):
        (docs / name).write_bytes((docs / "read.png").read_bytes())
    page_png(tmp_path / "elsewhere", "linked.png")
    os.symlink(tmp_path / "elsewhere", docs / "linked-folder")
    assert ocr(docs, model, tmp_path / "out") == 0
    report = json.loads(artifacts.read_text(str(tmp_path / "out" / "results"), "report.json"))
    skipped = {s["key"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"..png", ".hidden.png", "manifest.json", "linked-folder/"}
    assert "symbolic link" in skipped["linked-folder/"] and report["files_skipped"] == 4
    assert {r["document"] for r in results_of(tmp_path / "out")} == {"read.png"}


# ---- item 9: messages ----------------------------------------------------------------------------------

PLANTED = "PLANTED-PASSWORD-7f3a"


def test_store_errors_are_one_line_naming_the_uri(s3_server, bucket):
    res = run_cli("ocr", f"{bucket}/no-such-folder", "model", "out")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"inkbooth ocr: {bucket}/no-such-folder: no documents found"
    wrong = {"AWS_SECRET_ACCESS_KEY": PLANTED}
    res = run_cli("ocr", f"{bucket}/docs", "model", "out", env=wrong)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert last.startswith(f"inkbooth ocr: listing {bucket}/docs: ") and "SignatureDoesNotMatch" in last
    assert PLANTED not in res.stderr


def test_credentials_in_the_endpoint_url_are_never_printed(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"AWS_ENDPOINT_URL_S3": f"http://admin:{PLANTED}@127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "a",
           "AWS_SECRET_ACCESS_KEY": "b"}
    res = run_cli("-v", "ocr", "s3://docs/in", "model", str(tmp_path / "out"), env=env, timeout=300)
    assert res.returncode == 1
    assert PLANTED not in res.stderr + res.stdout, res.stderr[-2000:]
    assert "admin:" not in res.stderr and "***@127.0.0.1" in res.stderr, "the URL is shown, its password is not"


def test_a_huge_subject_image_is_one_clear_line(tiny_sd, class_set, tmp_path):
    from PIL import Image

    (tmp_path / "subject").mkdir()
    Image.new("1", (15000, 15000), 1).save(tmp_path / "subject" / "huge.png", optimize=True)
    res = run_cli("train", str(tiny_sd), str(tmp_path / "subject"), str(tmp_path / "out"), "--class-images",
                  class_set, "--max-train-steps", "1", timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("inkbooth train: ") and "huge.png" in last and "decompression bomb" in last


def test_pdf_password_is_a_secret(tiny_onnx, tmp_path, caplog, monkeypatch):
    import logging

    from inkbooth import runs
    from inkbooth.config import ConfigError, to_dict
    from tests.badinputs import _encrypted_pdf

    model, _ = tiny_onnx
    page = synthetic.render_page(seed=12, max_lines=2, width=700, height=400)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "locked.pdf").write_bytes(_encrypted_pdf(page.image))  # password "s3cret"
    # In a run config it would become a pipeline parameter (printed in the kfp.local run log): refused.
    with pytest.raises(ConfigError, match="INKBOOTH_PDF_PASSWORD"):
        runs.OCRRun(model="m", documents="d", output="o", recognize={"pages": {"pdf_password": "s3cret"}}).validate()
    cfg = RecognizeConfig(num_beams=1, max_new_tokens=4, pages={"pdf_password": "s3cret"})
    assert "s3cret" not in repr(cfg) and "s3cret" not in json.dumps(to_dict(cfg))
    monkeypatch.setenv("INKBOOTH_PDF_PASSWORD", "s3cret")  # the way a pipeline step gets it (a Secret)
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        assert ocr(tmp_path / "docs", model, out) == 0
    assert [r.get("status") for r in results_of(out)] == [None, None], "read with the password from the env"
    written = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert "s3cret" not in written and "s3cret" not in caplog.text


def test_a_bad_alias_is_refused_before_anything_is_registered(tmp_path):
    res = run_cli("export-model", str(tmp_path / "trained"), str(tmp_path / "registry"), "--alias", "../escape")
    assert res.returncode == 2 and "alias '../escape'" in res.stderr
    assert not (tmp_path / "registry").exists()


def test_a_class_image_set_that_lost_or_changed_a_file_is_refused(tmp_path):
    import shutil

    from inkbooth.demo import subject_images
    from inkbooth.dreambooth import prior, train

    subject_images(tmp_path / "set", 3)
    names = sorted(p.name for p in (tmp_path / "set").iterdir())
    artifacts.seal(str(tmp_path / "set"), kind=prior.KIND, files=names)
    assert len(train.load_images(str(tmp_path / "set"), "class", published=True)[0]) == 3
    shutil.copy(tmp_path / "set" / names[0], tmp_path / "set" / names[1])  # replaced
    with pytest.raises(ValueError, match="the class-image set does not match its manifest"):
        train.load_images(str(tmp_path / "set"), "class", published=True)
    (tmp_path / "set" / names[1]).unlink()  # missing
    with pytest.raises(ValueError, match="does not match its manifest"):
        train.load_images(str(tmp_path / "set"), "class", published=True)
    with pytest.raises(ValueError, match="not a finished class-image set"):
        train.load_images(str(tmp_path / "subject-like"), "class", published=True)


# ---- item 10: config words and a progress bar -----------------------------------------------------------


def test_yaml_1_1_booleans_do_not_break_string_choices(tmp_path):
    from inkbooth.config import load
    from inkbooth.dreambooth.train import TrainConfig

    (tmp_path / "t.yaml").write_text("mixed_precision: no\ncenter_crop: no\nrandom_flip: on\n")
    cfg = load(TrainConfig, tmp_path / "t.yaml")
    assert cfg.mixed_precision == "no" and cfg.center_crop is False and cfg.random_flip is True
    args = cli.build_parser().parse_args(["train", "m", "i", "o", "--mixed-precision", "no"])
    assert cli._load_config(args).mixed_precision == "no"


def test_training_shows_progress_with_loss_and_speed(tiny_sd, subject_dir, class_set, tmp_path):
    res = run_cli("train", str(tiny_sd), str(subject_dir), str(tmp_path / "out"), "--class-images", class_set,
                  "--max-train-steps", "2", "--mixed-precision", "no", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    bar = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.startswith("train:")]
    assert bar and "2/2" in bar[-1] and ("step/s" in bar[-1] or "s/step" in bar[-1]), bar[-1:]
    assert "loss=" in bar[-1]


# ---- item 11: the embedded store ---------------------------------------------------------------------


def test_embedded_store_is_supervised_keeps_its_ports_and_its_files_private(tmp_path):
    import os
    import signal
    import stat
    import time

    data = tmp_path / "store"

    def start() -> tuple[subprocess.Popen, str]:
        # Output to files, read with a deadline: a pipe nobody drains, or a readline on a server that
        # never prints, could hang the suite.
        out, err = tmp_path / f"out-{time.monotonic_ns()}", tmp_path / f"err-{time.monotonic_ns()}"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "inkbooth.cli", "store", "start", "--data", str(data)],
                                    stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for line in out.read_text().splitlines():
                if line.startswith("export AWS_ENDPOINT_URL_S3="):
                    return proc, line.strip().split("=", 1)[1]
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        proc.kill()
        proc.wait(10)
        pytest.fail(f"store start printed no endpoint: {err.read_text()[-2000:]}")

    def answers(endpoint: str) -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(endpoint, timeout=2)
        except urllib.error.HTTPError:
            return True  # an S3 error reply (anonymous request) is an answer
        except OSError:
            return False
        return True

    def server_pid() -> int | None:
        try:
            return int((data / "weed.pid").read_text())
        except (OSError, ValueError):  # being rewritten
            return None

    proc, endpoint = start()
    try:
        weed = server_pid()
        os.kill(weed, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (server_pid() in (weed, None) or not answers(endpoint)):
            time.sleep(0.5)
        assert proc.poll() is None and server_pid() not in (weed, None), "restarted, not abandoned"
        assert answers(endpoint), "on the same endpoint"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    again, endpoint_again = start()
    try:
        assert endpoint_again == endpoint, "a restart keeps the data folder's ports"
        child = server_pid()
        again.kill()  # the supervisor dies without cleaning up: its server goes with it
        again.wait(30)
        for _ in range(100):
            try:
                if Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] == "Z":
                    break  # a zombie is dead, only not yet reaped
            except (OSError, IndexError):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server outlived the process that started it")
    finally:
        if again.poll() is None:
            again.kill()
            again.wait(10)
    loose = [str(p) for p in data.rglob("*") if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == [], "data, credentials and logs readable by their owner only"
