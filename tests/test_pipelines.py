"""The pipelines: compiled IR kept in the repo, and whole runs through kfp.local on SeaweedFS."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from inkbooth import demo, runs, storage, tiny
from inkbooth.config import ConfigError
from inkbooth.ocr.documents import synthetic


@pytest.mark.parametrize("name", sorted(runs.PIPELINES))
def test_compiled_yaml_matches_the_code(name, tmp_path):
    fresh = runs.compile_pipeline(name, tmp_path / "fresh.yaml").read_text()
    kept = runs.packaged_yaml(name).read_text()
    assert fresh == kept, f"pipelines/{runs.get(name).yaml} is stale: run `make compile` and commit it"


def test_ocr_ir_shape():
    ir, _platform = yaml.safe_load_all(runs.packaged_yaml("ocr").read_text())
    # Every task sits in the exit handler's group; the exit task beside it.
    assert set(ir["root"]["dag"]["tasks"]) == {"exit-handler-1", "finish-run"}
    tasks = ir["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert {"pin-model", "export-trocr", "plan-ocr", "for-loop-2", "merge-ocr"} <= set(tasks)
    loop = tasks["for-loop-2"]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("Output")
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    from inkbooth import __version__

    assert images == {f"ghcr.io/inkbooth/inkbooth-ocr-cpu:{__version__}"}
    for executor in ir["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(executor["container"]["command"]), "images carry everything"


def test_run_config_is_strict():
    with pytest.raises(ConfigError, match="unknown key"):
        runs.OCRRun(model="m", documents="d", output="o", recognize={"num_beam": 2}).validate()
    with pytest.raises(ConfigError, match="missing required key 'documents'"):
        from inkbooth.config import from_dict

        from_dict(runs.OCRRun, {"model": "m", "output": "o"})


def test_ocr_train_reads_pdfs_through_pdf_lines():
    """PDFs (with or without labelled lines besides) or labelled lines: one import, pdf-lines always runs
    (kfp.local cannot join dsl.If branches) and prepare-lines takes its output artifact."""
    ir, _platform = yaml.safe_load_all(runs.packaged_yaml("ocr-train").read_text())
    tasks = ir["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert tasks["pdf-lines"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"] == "importer"
    assert tasks["prepare-lines"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"] == {
        "outputArtifactKey": "lines", "producerTask": "pdf-lines"}
    both = runs.OCRTrainRun(base_model="m", registry="s3://r", pdfs="s3://b/pdfs", data="s3://b/lines",
                            pdf_lines={"holdout": 0.2, "pages": {"pdf_dpi": 300}})
    both.validate()
    args = both.arguments()
    assert (args["data"], args["data_format"], args["extra_lines"]) == ("s3://b/pdfs", "pdfs", "s3://b/lines")
    assert args["pdf_lines_config"] == {"holdout": 0.2, "pages": {"pdf_dpi": 300}}
    args = runs.OCRTrainRun(base_model="m", registry="s3://r", data="s3://b/lines").arguments()
    assert (args["data"], args["data_format"], args["extra_lines"]) == ("s3://b/lines", "lines", "")
    with pytest.raises(ConfigError, match="give data .*, pdfs .* or both"):
        runs.OCRTrainRun(base_model="m", registry="s3://r").validate()
    with pytest.raises(ConfigError, match="pdf_lines.pages.pdf_password: .*INKBOOTH_PDF_PASSWORD"):
        runs.OCRTrainRun(base_model="m", registry="s3://r", pdfs="s3://b/pdfs",
                         pdf_lines={"pages": {"pdf_password": "x"}}).validate()
    with pytest.raises(ConfigError, match="unknown key"):
        runs.OCRTrainRun(base_model="m", registry="s3://r", pdfs="s3://b/pdfs", pdf_lines={"dpi": 300}).validate()


def test_ocr_pipeline_end_to_end_on_s3(s3_server, bucket, tmp_path, capfd, monkeypatch):
    """Model, documents and results on the real S3 server; every step a kfp.local subprocess.

    One PDF is encrypted: its password reaches the steps as INKBOOTH_PDF_PASSWORD (a Secret on a
    cluster), never as a pipeline parameter, so the run log holds no trace of it.
    """
    from inkbooth import readers
    from tests.badinputs import _encrypted_pdf

    storage.upload_dir(readers.path("latin"), f"{bucket}/models/reader-latin")
    expected = demo.make_documents(tmp_path / "local")
    locked = synthetic.render_page(seed=21, max_lines=3, width=900, height=500)
    (tmp_path / "local" / "documents" / "locked.pdf").write_bytes(_encrypted_pdf(locked.image))  # "s3cret"
    expected["locked.pdf"] = len(locked.lines)
    monkeypatch.setenv("INKBOOTH_PDF_PASSWORD", "s3cret")
    storage.upload_dir(tmp_path / "local" / "documents", f"{bucket}/documents")
    storage.upload_dir(tmp_path / "local" / "ground-truth", f"{bucket}/gt")
    run = runs.OCRRun(
        model=f"{bucket}/models/reader-latin", documents=f"{bucket}/documents", output=f"{bucket}/ocr",
        num_shards=3, ground_truth=f"{bucket}/gt",
        # The parity gate at its default thresholds, on a smaller set; greedy decoding to save time.
        export={"parity_images": 16, "variants": ["fp32", "int8"]},
        recognize={"num_beams": 1},
    )
    run.validate()
    results = runs.run_local("ocr", run, tmp_path / "root")
    assert results == f"{bucket}/ocr/results"
    # A record per line, an error record for the corrupt file, and text that matches the transcripts.
    summary = demo.check_results(results, expected)
    assert summary["line_records"] == sum(expected.values()) == 58 + len(locked.lines)  # seeded documents
    assert set(summary["error_records"]) == {"corrupt.png"}
    log = capfd.readouterr()
    assert "s3cret" not in log.out + log.err, "the PDF password is not in the kfp.local run log"
    (run_folder,) = (tmp_path / "root").glob("inkbooth-ocr-*")
    task_logs = sorted(p.stem for p in (run_folder / "logs").glob("*.log"))
    assert task_logs == ["export-trocr", "finish-run", "merge-ocr", "pin-model", "plan-ocr", "recognize-shard-0",
                         "recognize-shard-1", "recognize-shard-2"]
    for task_log in (run_folder / "logs").glob("*.log"):
        assert "s3cret" not in task_log.read_text(), f"the PDF password is not in {task_log.name}"
    # Quiet: a line per task (two where another task's line came between its start and end: parallel
    # shards), the run's log folder, each warning once; the executor's output is in the task logs.
    printed = (log.out + log.err).splitlines()
    for task in task_logs:
        assert sum(bool(re.fullmatch(rf"  {task} +ok +\d+\.\d s", line)) for line in printed) == 1, task
    warnings = [line for line in printed if line.startswith("  warning")]
    corrupt = [w for w in warnings if re.fullmatch(r"  warning \(recognize-shard-\d\): corrupt\.png: page 1 cannot be "
                                                   r"decoded \(truncated or corrupt\?\): image file is truncated", w)]
    assert len(corrupt) == 1 and len(set(warnings)) == len(warnings) <= 2, warnings  # (the report: locked.pdf)
    assert len(printed) <= 1 + 2 * len(task_logs) + len(warnings), "\n".join(printed)
    assert "KFP Executor" not in log.out + log.err
    assert "Got executor_input" in (run_folder / "logs" / "plan-ocr.log").read_text()
    from inkbooth import artifacts

    report = json.loads(artifacts.read_text(results, "report.json"))
    assert report["documents"] == 6 and report["documents_failed"] == 1 and report["pages_with_text"] == 7
    assert report["lines_per_second"] > 0 and report["cer"] is not None
    assert len(report["shards"]) == 3
    assert sorted(f.path for f in artifacts.read_manifest(results).files if f.path.startswith("text/")) == [
        "text/letter.png.txt", "text/locked.pdf.txt", "text/receipt.jpg.txt", "text/scan.tiff.txt",
        "text/statement.pdf.txt"]
    assert artifacts.read_text(results, "text/scan.tiff.txt").count("\f") == 1
    assert artifacts.read_manifest(results).kind == "ocr-results"
    # The export reaches the shards as a pointer: on a cluster KFP's launcher copies every input artifact
    # into each pod's unbounded scratch, so each shard would get every variant; it fetches one instead.
    (pointer,) = (tmp_path / "root").glob("inkbooth-ocr-*/export-trocr/onnx_model")
    assert pointer.is_file() and pointer.stat().st_size < 4096
    target = json.loads(pointer.read_text())["uri"]
    assert target == f"{pointer}-export" and artifacts.read_manifest(target).kind == "trocr-onnx"


@pytest.mark.parametrize("path", sorted((runs.Path(__file__).parent.parent / "examples").glob("*-run.yaml")))
def test_example_run_configs_load(path):
    from inkbooth import config

    name = path.name.removesuffix("-run.yaml")
    config.load(runs.get(name).run_config, path).validate()


def test_dreambooth_pipeline_end_to_end_and_retrain(s3_server, bucket, tmp_path):
    """Base model, subject images, class images and registry on S3; then a retrain with one more image.

    The run follows examples/dreambooth-run.yaml: a fixed checkpoints prefix, ``resume: latest`` and
    checkpoints more often than the run is long, so the first run leaves a checkpoint behind.
    """
    from inkbooth import artifacts
    from inkbooth.demo import subject_images

    base = tiny.build_tiny_sd(tmp_path / "sd")
    storage.upload_dir(base, f"{bucket}/base")
    clip, dino = tiny.build_tiny_judges(tmp_path / "judges")
    storage.upload_dir(clip, f"{bucket}/judges/clip")
    storage.upload_dir(dino, f"{bucket}/judges/dino")
    subject_images(tmp_path / "subject", 3)
    storage.upload_dir(tmp_path / "subject", f"{bucket}/subject")
    run = runs.DreamBoothRun(
        base_model=f"{bucket}/base", instance_images=f"{bucket}/subject", prior_output=f"{bucket}/priors",
        registry=f"{bucket}/registry", checkpoints=f"{bucket}/checkpoints/ball", prior_shards=2,
        prior={"num_images": 2, "steps": 3},
        train={"max_train_steps": 2, "checkpoint_every": 1, "resume": "latest", "snapshot_every": 1},
        evaluate={"clip_model": f"{bucket}/judges/clip", "dino_model": f"{bucket}/judges/dino", "prompt_set": "custom",
                  "prompts": ["a photo of {identifier} {cls}"], "images_per_prompt": 2, "class_images": 2, "steps": 2,
                  "select": "best", "floors": {"clip_t": -1.0}},
        export={"name": "ball"},
        sample={"prompts": ["a photo of sks dog"], "steps": 2, "images_per_prompt": 1},
    )
    run.validate()
    v1 = runs.run_local("dreambooth", run, tmp_path / "root")
    assert v1 == f"{bucket}/registry/ball/v1"
    m1 = artifacts.read_manifest(v1)
    assert {"diffusers/model_index.json", "ball.safetensors", "training.json", "evaluation/evaluation.json",
            "evaluation/grids/base.png"} <= {f.path for f in m1.files}
    # The evaluation judged the base model, the snapshot at step 1 and the last step, and the version
    # is the step it selected, said with its reason; its figures are the version's metrics.
    record = json.loads(artifacts.read_text(v1, "evaluation/evaluation.json"))
    assert [(r["step"], r["source"]) for r in record["rows"]] == [(0, "base"), (1, "snapshots/step-00000001"),
                                                                   (2, "model")]
    assert m1.lineage["selected_step"] == record["selected"]["step"] and "among 2 of 2 steps" in m1.lineage["selection"]
    assert m1.metrics["dino"] == next(r["dino"] for r in record["rows"][1:] if r["step"] == m1.lineage["selected_step"])
    assert m1.lineage["base_model"] == f"{bucket}/base" and m1.lineage["class_images"].startswith(f"{bucket}/priors/")
    priors = [k for k in storage.list_files(f"{bucket}/priors") if k.endswith(".png")]
    assert len(priors) == 2
    (samples,) = (tmp_path / "root").glob("inkbooth-dreambooth-*/sample-model/samples")
    assert artifacts.read_bytes(str(samples), "grid.png").startswith(b"\x89PNG")
    (outcome,) = (tmp_path / "root").glob("inkbooth-dreambooth-*/finish-run/outcome")
    report = json.loads(outcome.read_text())
    # The exit task ran; checkpoints under a prefix the run was given stay (only torn ones would go).
    assert report["state"] == "SUCCEEDED" and report["checkpoints"] == f"{bucket}/checkpoints/ball"
    assert report["removed"] == [] and storage.list_files(f"{bucket}/checkpoints/ball")

    storage.write_bytes(f"{bucket}/subject/extra.png", _another_subject_png(tmp_path))
    v2 = runs.run_local("dreambooth", run, tmp_path / "root")
    assert v2 == f"{bucket}/registry/ball/v2", "a retrain with a new subject image is a new version"
    assert artifacts.Registry(f"{bucket}/registry").resolve("ball", "latest") == "v2"
    assert [k for k in storage.list_files(f"{bucket}/priors") if k.endswith(".png")] == priors, "class images reused"
    m2 = artifacts.read_manifest(v2)
    assert m2.lineage["instance_images_hash"] != m1.lineage["instance_images_hash"]
    assert m2.lineage["class_images"] == m1.lineage["class_images"]
    # The retrain trained every step on the new images: the first run's checkpoint was not resumed.
    assert m2.metrics["steps_this_run"] == 2 and m2.metrics["resumed_from_step"] == 0
    assert m2.lineage["resumed_from"] == "" and m2.lineage["run"] != m1.lineage["run"]


def _another_subject_png(tmp_path) -> bytes:
    from inkbooth.demo import subject_images

    subject_images(tmp_path / "more", 1, seed=42)
    return (tmp_path / "more" / "subject-00.png").read_bytes()
