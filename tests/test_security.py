"""Nobody in: no credentials in outputs, no code from checkpoints, no keys outside their prefix."""

from __future__ import annotations

import fnmatch
import json
import logging

import pytest

from inkbooth import artifacts, objectstore, storage
from inkbooth.ocr import batch
from inkbooth.ocr.batch.shard import recognize_documents
from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.recognition.recognizer import RecognizeConfig
from tests.conftest import REPO

PLANTED = "PLANTED-SECRET-0c7e5d9b"


def test_wrong_credentials_fail_without_echoing_them(s3_server, bucket, caplog):
    with objectstore.environment({"AWS_SECRET_ACCESS_KEY": PLANTED, "AWS_ACCESS_KEY_ID": "AKIAPLANTED"}), \
            caplog.at_level(logging.DEBUG):
        with pytest.raises(Exception) as err:
            storage.write_bytes(f"{bucket}/x", b"data")
    assert "SignatureDoesNotMatch" in str(err.value) or "InvalidAccessKeyId" in str(err.value)
    assert PLANTED not in str(err.value) and PLANTED not in repr(err.value)
    assert PLANTED not in caplog.text


def test_outputs_and_logs_of_a_run_hold_no_credentials(tiny_onnx, tmp_path, caplog, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED)
    (tmp_path / "docs").mkdir()
    synthetic.render_page(seed=1, max_lines=2, width=600, height=400).image.save(tmp_path / "docs" / "a.png")
    (tmp_path / "docs" / "bad.png").write_bytes(b"not an image")
    model, _ = tiny_onnx
    out = str(tmp_path / "out")
    with caplog.at_level(logging.DEBUG):
        recognize_documents(str(tmp_path / "docs"), str(model), out,
                            RecognizeConfig(num_beams=1, max_new_tokens=4))
        batch.merge_results(batch.plan_documents(str(tmp_path / "docs"), 1), out)
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "manifest.json" in "".join(str(p) for p in (tmp_path / "out").rglob("*"))
    for text in (written, caplog.text, capsys.readouterr().err):
        assert PLANTED not in text


def test_manifests_record_no_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    m = artifacts.publish(tmp_path / "src", str(tmp_path / "a"), kind="t", config={"lr": 1})
    assert PLANTED not in m.to_json() and PLANTED not in (tmp_path / "a" / "manifest.json").read_text()


def test_no_code_runs_from_checkpoints():
    sources = "".join(p.read_text() for p in (REPO / "src").rglob("*.py"))
    sources += "".join(p.read_text() for p in (REPO / "components").rglob("*.py"))
    assert "trust_remote_code=" not in sources, "remote code from a hub repository is never trusted"
    assert "weights_only=False" not in sources


def test_iam_policy_is_least_privilege():
    policy = json.loads((REPO / "k8s" / "iam" / "inkbooth-s3-policy.json").read_text())
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            assert "*" not in action, f"{action}: no wildcard actions"
            assert not action.startswith(("s3:PutBucket", "s3:DeleteBucket", "iam:")), action
        for resource in statement["Resource"]:
            assert resource.startswith("arn:aws:s3:::inkbooth-") and resource != "*"
    deletes = [r.removeprefix("arn:aws:s3:::") for s in policy["Statement"] if "s3:DeleteObject" in s["Action"]
               for r in s["Resource"]]
    # IAM's * matches across "/", as fnmatch's does: no delete pattern reaches a registry version's files.
    version_files = ["inkbooth-models/models/my-dog/v3/manifest.json",
                     "inkbooth-models/models/my-dog/v3/unet/diffusion_pytorch_model.safetensors",
                     "inkbooth-models/models/my-dog/v3/.inkbooth-versions/20261205T1-ab/model.safetensors",
                     "inkbooth-models/models/my-dog/aliases/latest.json", "inkbooth-models/base/sd15/model.safetensors"]
    assert not [(r, f) for r in deletes for f in version_files if fnmatch.fnmatchcase(f, r)], \
        "registry versions and base models cannot be deleted"
    # What the runs do delete: their claim tokens, replaced result versions, checkpoints.
    for deleted in ("inkbooth-models/models/my-dog/v3/.claim-0123abcd", "inkbooth-data/ocr/out/results/"
                    ".inkbooth-versions/20261205T1-ab/results.jsonl", "inkbooth-models/checkpoints/my-dog/x/step-2/a"):
        assert any(fnmatch.fnmatchcase(deleted, r) for r in deletes), deleted
