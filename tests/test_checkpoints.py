"""Checkpoints bound to their run (inkbooth.checkpoints): kept apart, verified, never resumed across runs."""

from __future__ import annotations

import json
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
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(f"weights at {step}".encode() * 100)
    torch.save({"last_epoch": step, "base_lrs": [1e-3]}, folder / "scheduler.bin")  # what resume unpickles
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


# ---- the identity bound to the content (issue 23, item 4) ------------------------------------------


def edit_manifest(uri: str, change) -> None:
    """Rewrite a published checkpoint's manifest by hand, as someone with write access to the store could."""
    path = Path(uri) / artifacts.MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rehash(uri: str, data: dict, name: str) -> None:
    """Make the manifest's entry for ``name`` match the file now there (and the content hash follow)."""
    file = Path(uri) / data["root"] / name
    data["files"] = [f for f in data["files"] if f["path"] != name]
    if file.exists():
        data["files"].append({"path": name, "size": file.stat().st_size, "sha256": storage.sha256_file(file)})
    data["content_hash"] = artifacts.content_hash([artifacts.FileEntry(**f) for f in data["files"]])


def test_a_forged_manifest_that_claims_this_run_is_refused_by_the_content(tmp_path):
    """Another run's checkpoint moved into this run's folder, its manifest edited to record this run's
    identity: the manifest's own checks all pass (every file hash matches), so before the binding it
    was resumed; the content says which run wrote it."""
    prefix = str(tmp_path / "ckpt")
    b = checkpoints.RunCheckpoints(prefix, RUN_B)
    b.save(state(tmp_path / "b", 1), 1)
    a = checkpoints.RunCheckpoints(prefix, RUN_A)
    Path(a.uri).mkdir(parents=True)
    forged = Path(a.uri) / "step-00000001"
    (Path(b.uri) / "step-00000001").rename(forged)

    def claim_a(data):
        data["lineage"] = {"run_identity": RUN_A, "run": a.key}

    edit_manifest(str(forged), claim_a)
    assert artifacts.read_manifest(str(forged)).lineage["run_identity"] == RUN_A
    assert artifacts.fetch(str(forged)), "the forged checkpoint is intact as far as its manifest can tell"
    for which in ("latest", 1):
        with pytest.raises(checkpoints.CheckpointRefused,
                           match=r"manifest claims this run, but its content was written by another run "
                                 r"\(differing in: instance_images\)"):
            a.resume(which)


def test_files_swapped_under_a_manifest_made_to_match_are_refused(tmp_path):
    """This run's own checkpoint with one file replaced and the manifest rehashed to match it."""
    a = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"), RUN_A, keep=3)
    a.save(state(tmp_path / "a1", 1), 1)
    point = a.resume("latest")
    (point.path / "model.safetensors").write_bytes(b"someone else's weights" * 100)
    edit_manifest(point.uri, lambda data: rehash(point.uri, data, "model.safetensors"))
    assert artifacts.fetch(point.uri), "the manifest matches the swapped file"
    with pytest.raises(checkpoints.CheckpointRefused, match="its files are not the ones this run wrote at step 1"):
        a.resume("latest")


def test_a_checkpoint_replayed_at_a_later_step_is_refused(tmp_path):
    """An old state of this run copied to a later step's name (the run would skip the steps between)."""
    import shutil

    a = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"), RUN_A, keep=3)
    a.save(state(tmp_path / "a2", 2), 2)
    shutil.copytree(Path(a.uri) / "step-00000002", Path(a.uri) / "step-00000004")
    with pytest.raises(checkpoints.CheckpointRefused, match="its content was written at step 2, not 4"):
        a.resume("latest")


def test_a_checkpoint_without_its_binding_is_not_used(tmp_path, caplog):
    """Written before checkpoints were bound (or the binding removed, manifest rehashed): not used,
    an older bound checkpoint is, and an explicit step says why."""
    a = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"), RUN_A, keep=3)
    a.save(state(tmp_path / "a1", 1), 1)
    a.save(state(tmp_path / "a2", 2), 2)
    newest = a.list()[-1].uri

    def unbind(data):
        (Path(newest) / data["root"] / checkpoints.BINDING).unlink()
        rehash(newest, data, checkpoints.BINDING)

    edit_manifest(newest, unbind)
    with caplog.at_level(logging.WARNING):
        assert a.resume("latest").step == 1
    assert "does not hold checkpoint-run.json" in caplog.text
    with pytest.raises(ValueError, match="step 2 is not bound to its run"):
        a.resume(2)


def test_every_saved_checkpoint_holds_its_binding(tmp_path):
    a = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"), RUN_A)
    a.save(state(tmp_path / "a", 3), 3)
    point = a.resume("latest")
    bound = json.loads((point.path / checkpoints.BINDING).read_text())
    files = [f for f in artifacts.read_manifest(point.uri).files if f.path != checkpoints.BINDING]
    assert bound == {"run": a.key, "identity": RUN_A, "step": 3, "content": artifacts.content_hash(files)}
