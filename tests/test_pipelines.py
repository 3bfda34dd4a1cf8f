"""The pipelines: compiled IR kept in the repo, and whole runs through kfp.local on SeaweedFS."""

from __future__ import annotations

import json

import pytest
import yaml

from inkbooth import demo, runs, storage, tiny
from inkbooth.config import ConfigError


@pytest.mark.parametrize("name", sorted(runs.PIPELINES))
def test_compiled_yaml_matches_the_code(name, tmp_path):
    fresh = runs.compile_pipeline(name, tmp_path / "fresh.yaml").read_text()
    kept = runs.packaged_yaml(name).read_text()
    assert fresh == kept, f"pipelines/{runs.get(name).yaml} is stale: run `make compile` and commit it"


def test_ocr_ir_shape():
    ir = yaml.safe_load(runs.packaged_yaml("ocr").read_text())
    tasks = ir["root"]["dag"]["tasks"]
    assert {"export-trocr", "plan-ocr", "for-loop-1", "merge-ocr"} <= set(tasks)
    loop = tasks["for-loop-1"]
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


def test_ocr_pipeline_end_to_end_on_s3(s3_server, bucket, tmp_path):
    """Model, documents and results on the real S3 server; every step a kfp.local subprocess."""
    model_dir = tiny.build_tiny_trocr(tmp_path / "tiny")
    storage.upload_dir(model_dir, f"{bucket}/models/tiny-trocr")
    expected = demo.make_documents(tmp_path / "local")
    storage.upload_dir(tmp_path / "local" / "documents", f"{bucket}/documents")
    storage.upload_dir(tmp_path / "local" / "ground-truth", f"{bucket}/gt")
    run = runs.OCRRun(
        model=f"{bucket}/models/tiny-trocr", documents=f"{bucket}/documents", output=f"{bucket}/ocr",
        num_shards=3, ground_truth=f"{bucket}/gt",
        export={"max_int8_cer": 0.6, "parity_images": 16, "variants": ["fp32", "int8"]},
        recognize={"num_beams": 1, "max_new_tokens": 16},
    )
    run.validate()
    results = runs.run_local("ocr", run, tmp_path / "root")
    assert results == f"{bucket}/ocr/results"
    summary = demo.check_results(results, expected)  # a record per line, an error record for the corrupt file
    assert summary["line_records"] == sum(expected.values()) == 58  # seeded documents
    assert set(summary["error_records"]) == {"corrupt.png"}
    report = json.loads(storage.read_text(f"{results}/report.json"))
    assert report["documents"] == 5 and report["documents_failed"] == 1 and report["pages_with_text"] == 6
    assert report["lines_per_second"] > 0 and report["cer"] is not None
    assert len(report["shards"]) == 3
    assert sorted(storage.list_files(f"{results}/text")) == ["letter.png.txt", "receipt.jpg.txt", "scan.tiff.txt",
                                                           "statement.pdf.txt"]
    assert storage.read_text(f"{results}/text/scan.tiff.txt").count("\f") == 1
    from inkbooth import artifacts

    assert artifacts.read_manifest(results).kind == "ocr-results"


@pytest.mark.parametrize("path", sorted((runs.Path(__file__).parent.parent / "examples").glob("*-run.yaml")))
def test_example_run_configs_load(path):
    from inkbooth import config

    name = path.name.split("-")[0]
    config.load(runs.get(name).run_config, path).validate()
