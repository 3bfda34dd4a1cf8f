"""Nobody in: no credentials in outputs, no code from checkpoints, no keys outside their prefix."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import logging
import os
from pathlib import Path

import pytest

from inkbooth import artifacts, checkpoints, objectstore, storage
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


class Payload:
    """Unpickled, it creates the folder ``marker``: the proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def db_checkpoint(tiny_sd, subject_dir, class_set, tmp_path_factory):
    """A real DreamBooth checkpoint (step 1 of 2) and the config that wrote it."""
    from inkbooth.dreambooth import train

    root = tmp_path_factory.mktemp("db-ckpt")
    cfg = train.TrainConfig(max_train_steps=2, learning_rate=1e-3, checkpoint_every=1)
    train.train_dreambooth(str(tiny_sd), str(subject_dir), str(root / "out"), cfg, class_images=class_set,
                           checkpoints=str(root / "ckpt"))
    (c,) = checkpoints.list_checkpoints(str(root / "ckpt"))
    return c, cfg


def _plant(folder: Path, name: str, how: str, marker: Path) -> Path:
    """Replace (or add) ``name`` in a checkpoint's files with a payload: a torch archive, or a raw pickle."""
    import pickle

    import torch

    target = folder / name
    if name == "pytorch_model.bin":  # accelerate loads it when model.safetensors is missing
        (folder / "model.safetensors").unlink()
    if how == "torch":
        torch.save(Payload(marker), target)
    else:
        target.write_bytes(pickle.dumps(Payload(marker), protocol=4))
    return target


# Each file accelerate.load_state unpickles for this trainer (and the model file it falls back to).
PLANTED_FILES = [("optimizer.bin", "torch"), ("scheduler.bin", "torch"), ("random_states_0.pkl", "torch"),
                 ("random_states_0.pkl", "raw"), ("pytorch_model.bin", "torch")]


@pytest.mark.parametrize(("name", "how"), PLANTED_FILES)
def test_a_pickle_payload_in_a_dreambooth_checkpoint_is_refused_and_never_runs(db_checkpoint, tiny_sd, subject_dir,
                                                                                class_set, tmp_path, monkeypatch,
                                                                                name, how):
    """The payload is written by someone who can write the store and publishes it as this run's
    checkpoint the way the trainer does (manifest, hashes and binding all valid), so only the check of
    the pickles stands in the way. The loader is made to trust pickles (weights_only=False, as
    accelerate and torch did before 2025), so the refusal cannot come from their defaults."""
    import shutil

    import torch

    from inkbooth.dreambooth import train

    c, cfg = db_checkpoint
    marker = tmp_path / "payload-ran"
    staged = tmp_path / "staged"
    shutil.copytree(artifacts.fetch(c.uri), staged)
    (staged / checkpoints.BINDING).unlink()
    planted = _plant(staged, name, how, marker)
    # The control: loaded the way a trusting loader loads it, the payload does run (torch reads a raw
    # pickle as the legacy format's magic number: the payload runs, then torch finds the number wrong).
    with contextlib.suppress(RuntimeError):
        torch.load(planted, weights_only=False)
    assert marker.is_dir(), "the planted payload is live"
    marker.rmdir()
    identity = artifacts.read_manifest(c.uri).lineage["run_identity"]
    prefix = str(tmp_path / "ckpt")
    checkpoints.RunCheckpoints(prefix, identity, kind=train.CHECKPOINT_KIND).save(staged, 1)

    trusting = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: trusting(*a, **{**kw, "weights_only": False}))
    expected = (rf"{name}.*unpickling it would call posix\.mkdir, which is not tensor data" if how == "torch"
                else rf"{name}: not a torch zip archive")
    with pytest.raises(checkpoints.CheckpointRefused, match=r"checkpoint refused, nothing was loaded from it: "
                                                              + expected):
        train.train_dreambooth(str(tiny_sd), str(subject_dir), str(tmp_path / "out"),
                               dataclasses.replace(cfg, resume="latest"), class_images=class_set, checkpoints=prefix)
    assert not marker.exists(), "code from the checkpoint ran"
    assert not (tmp_path / "out").exists()


def test_a_forged_dreambooth_checkpoint_that_claims_the_run_is_refused(db_checkpoint, tiny_sd, subject_dir,
                                                                       class_set, tmp_path):
    """Another training's checkpoint (other subject images) put in this run's place, its manifest edited
    to record this run's identity: the manifest checks pass, the content says whose it is."""
    import shutil

    from inkbooth.demo import subject_images
    from inkbooth.dreambooth import train

    c, cfg = db_checkpoint
    subject_images(tmp_path / "other", 3)
    train.train_dreambooth(str(tiny_sd), str(tmp_path / "other"), str(tmp_path / "other-out"), cfg,
                           class_images=class_set, checkpoints=str(tmp_path / "other-ckpt"))
    (theirs,) = checkpoints.list_checkpoints(str(tmp_path / "other-ckpt"))
    ours = artifacts.read_manifest(c.uri).lineage
    prefix = tmp_path / "ckpt"
    shutil.copytree(theirs.uri, prefix / ours["run"] / "step-00000001")
    manifest = prefix / ours["run"] / "step-00000001" / artifacts.MANIFEST
    data = json.loads(manifest.read_text())
    data["lineage"] = {"run_identity": ours["run_identity"], "run": ours["run"]}
    manifest.write_text(json.dumps(data))
    with pytest.raises(checkpoints.CheckpointRefused, match=r"content was written by another run "
                                                              r"\(differing in: instance_images\)"):
        train.train_dreambooth(str(tiny_sd), str(subject_dir), str(tmp_path / "out"),
                               dataclasses.replace(cfg, resume="latest"), class_images=class_set,
                               checkpoints=str(prefix))


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_the_pickle_check_reads_what_a_pickle_imports_without_running_it(tmp_path):
    """The scan behind the refusals above, on pickles built to slip past a naive one."""
    import pickle
    import random
    import zipfile

    import numpy as np
    import torch

    from inkbooth import pickles

    marker = tmp_path / "ran"
    for protocol in (0, 2, 4, 5):  # GLOBAL, and STACK_GLOBAL with its names through the memo
        with pytest.raises(pickles.UnsafePickleError, match=r"posix\.mkdir"):
            pickles.check_pickle(pickle.dumps(Payload(marker), protocol=protocol))
    # Push posix/mkdir, then two harmless names, pop those: a scan that takes the last two strings
    # pushed sees collections.OrderedDict; the unpickler imports posix.mkdir.
    s = lambda text: b"\x8c" + bytes([len(text)]) + text.encode()  # noqa: E731 (SHORT_BINUNICODE)
    sneaky = (b"\x80\x04" + s("posix") + s("mkdir") + s("collections") + s("OrderedDict") + b"00"
              + b"\x93" + s(str(marker)) + b"\x85R.")
    with pytest.raises(pickles.UnsafePickleError, match="computed"):
        pickles.check_pickle(sneaky)
    pickle.loads(sneaky)
    assert marker.is_dir(), "the control: the sneaky pickle does run posix.mkdir"
    with pytest.raises(pickles.UnsafePickleError, match="copyreg extension"):
        pickles.check_pickle(b"\x80\x02\x82\x01.")
    with pytest.raises(pickles.UnsafePickleError, match="bytes after the end"):
        pickles.check_pickle(pickle.dumps(1) + pickle.dumps(Payload(marker)))
    # What resuming really unpickles passes: tensors, an optimizer state, accelerate's RNG states.
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    opt.step()
    torch.save({"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state(), "opt": opt.state_dict(),
                "w": torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))}, tmp_path / "state.pkl")
    pickles.check_torch_file(tmp_path / "state.pkl")
    # A member named twice: zipfile and torch's reader need not pick the same one.
    with zipfile.ZipFile(tmp_path / "state.pkl") as src, zipfile.ZipFile(tmp_path / "twice.bin", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(src.namelist()[0], pickle.dumps(Payload(marker)))
    with pytest.raises(pickles.UnsafePickleError, match="names a member twice"):
        pickles.check_torch_file(tmp_path / "twice.bin")


def test_no_source_trusts_remote_code_or_pickles():
    """An extra to the tests above: no loader is told to trust a hub's code or a pickle."""
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
