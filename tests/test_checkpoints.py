"""Checkpoints bound to their run (inkbooth.checkpoints): kept apart, verified, never resumed across runs."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest

from inkbooth import artifacts, checkpoints, storage

RUN_A = {"trainer": "t", "base_model": "b" * 64, "instance_images": "1" * 64, "config": "c" * 64, "processes": 1}
RUN_B = {**RUN_A, "instance_images": "2" * 64}  # the same run with one more subject image


@pytest.fixture(params=["local", "s3"])
def prefix(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "checkpoints")
    return f"{request.getfixturevalue('bucket')}/checkpoints/my-dog"


def state(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(f"weights at {step}".encode() * 100)
    (folder / "scheduler.bin").write_bytes(f"scheduler {step}".encode())
    return folder


def test_runs_sharing_a_prefix_keep_their_checkpoints_apart(prefix, tmp_path, caplog):
    a = checkpoints.RunCheckpoints(prefix, RUN_A, keep=2)
    for step in (1, 2):
        a.save(state(tmp_path / f"a{step}", step), step)
    b = checkpoints.RunCheckpoints(prefix, RUN_B, keep=2)
    assert a.key != b.key
    with caplog.at_level(logging.INFO):
        assert b.resume("latest") is None, "another run's checkpoint is never resumed"
    assert "ignoring the checkpoints of other runs" in caplog.text and "instance_images" in caplog.text
    b.save(state(tmp_path / "b1", 1), 1)
    assert [c.step for c in a.list()] == [1, 2] and [c.step for c in b.list()] == [1]
    point = a.resume("latest")
    assert point.step == 2 and (point.path / "model.safetensors").read_bytes() == b"weights at 2" * 100
    assert b.resume("latest").step == 1
    listed = checkpoints.list_checkpoints(prefix)
    assert sorted((c.run, c.step) for c in listed) == sorted([(a.key, 1), (a.key, 2), (b.key, 1)])
    manifest = artifacts.read_manifest(point.uri)
    assert manifest.lineage["run_identity"] == RUN_A and manifest.metrics["step"] == 2


def test_an_explicit_step_of_another_run_is_refused(prefix, tmp_path):
    a = checkpoints.RunCheckpoints(prefix, RUN_A)
    a.save(state(tmp_path / "a", 2), 2)
    b = checkpoints.RunCheckpoints(prefix, RUN_B)
    with pytest.raises(ValueError, match=r"step 2 belongs to another run .*instance_images.*refusing"):
        b.resume("2")
    with pytest.raises(ValueError, match="this run has no checkpoint at step 3"):
        a.resume(3)
    assert a.resume("2").step == 2 and a.resume("") is None


def test_a_truncated_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog):
    prefix = str(tmp_path / "ckpt")
    run = checkpoints.RunCheckpoints(prefix, RUN_A, keep=3)
    for step in (1, 2, 3):
        run.save(state(tmp_path / f"s{step}", step), step)
    newest = artifacts.fetch(run.list()[-1].uri)
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated (a disk filled up, say)
    with caplog.at_level(logging.WARNING):
        point = run.resume("latest")
    assert point.step == 2
    assert "checkpoint damaged" in caplog.text and "newest intact checkpoint (damaged: step 3)" in caplog.text
    with pytest.raises(ValueError, match="step 3 is damaged"):
        run.resume("3")
    # A manifest cut short is damage too; with every checkpoint damaged the run starts fresh.
    for c in run.list()[:2]:
        path = Path(storage.join(c.uri, artifacts.MANIFEST))
        path.write_text(path.read_text()[:50])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run.resume("latest") is None
    assert "every checkpoint of this run is damaged" in caplog.text


def test_saving_prunes_the_oldest_and_a_timeline_that_was_abandoned(tmp_path):
    run = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"), RUN_A, keep=2)
    for step in (1, 2, 3, 4):
        run.save(state(tmp_path / f"s{step}", step), step)
    assert [c.step for c in run.list()] == [3, 4]
    assert sorted(p.name for p in Path(run.uri).iterdir()) == ["run.json", "step-00000003", "step-00000004"]
    # Resumed from 3 (4 was damaged, say): saving 4 again replaces it; saving 3 drops the later 4.
    run.save(state(tmp_path / "again", 3), 3)
    assert [c.step for c in run.list()] == [3]


def test_checkpoints_without_a_run_are_ignored(tmp_path, caplog):
    prefix = str(tmp_path / "ckpt")
    artifacts.publish(state(tmp_path / "old", 5), f"{prefix}/step-00000005", kind="checkpoint")  # older layout
    run = checkpoints.RunCheckpoints(prefix, RUN_A)
    with caplog.at_level(logging.WARNING):
        assert run.resume("latest") is None
    assert "(no run) at step(s) 5" in caplog.text
    with pytest.raises(ValueError, match="belongs to another run"):
        run.resume("5")


def test_a_copied_checkpoint_with_another_identity_is_not_used(tmp_path, caplog):
    prefix = str(tmp_path / "ckpt")
    b = checkpoints.RunCheckpoints(prefix, RUN_B)
    b.save(state(tmp_path / "b", 1), 1)
    a = checkpoints.RunCheckpoints(prefix, RUN_A)
    Path(a.uri).mkdir(parents=True)
    (Path(b.uri) / "step-00000001").rename(Path(a.uri) / "step-00000001")  # moved under A's folder by hand
    with caplog.at_level(logging.WARNING):
        assert a.resume("latest") is None
    assert "recorded run identity differs" in caplog.text


def test_staging_is_outside_every_output():
    root = checkpoints.new_staging_root()
    try:
        assert root.is_dir() and root.parent == Path(tempfile.gettempdir())
    finally:
        root.rmdir()


def test_identity_must_be_plain_data():
    with pytest.raises(ValueError, match="JSON-able"):
        checkpoints.RunCheckpoints("/tmp/x", {"config": object()})
    assert checkpoints.run_key({"a": 1, "b": 2}) == checkpoints.run_key({"b": 2, "a": 1})


def test_a_checkpoint_of_another_run_is_said_to_be_so_not_damaged(tmp_path, caplog):
    """A checkpoint under this run's folder whose manifest records another run (copied, or moved by
    hand): was reported as damaged ("damaged: step 3", "every checkpoint of this run is damaged",
    "step 3 is damaged"); now each message says it belongs to another run and how the runs differ."""
    prefix = str(tmp_path / "ckpt")
    a = checkpoints.RunCheckpoints(prefix, RUN_A, keep=3)
    a.save(state(tmp_path / "a2", 2), 2)
    b = checkpoints.RunCheckpoints(prefix, RUN_B)
    b.save(state(tmp_path / "b3", 3), 3)
    (Path(b.uri) / "step-00000003").rename(Path(a.uri) / "step-00000003")
    with caplog.at_level(logging.WARNING):
        assert a.resume("latest").step == 2
    assert "damaged" not in caplog.text
    assert "step 3 belongs to another run" in caplog.text and "instance_images" in caplog.text
    with pytest.raises(ValueError, match=r"step 3 belongs to another run .*instance_images") as refused:
        a.resume(3)
    assert "damaged" not in str(refused.value)
    (Path(a.uri) / "step-00000002" / artifacts.MANIFEST).unlink()  # only the other run's is left
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert a.resume("latest") is None
    assert "damaged" not in caplog.text and "belongs to another run" in caplog.text
