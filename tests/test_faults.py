"""Faults with real processes and servers: SIGKILL mid-training and mid-OCR, the object store killed
during an upload, a full disk. Nothing may be lost, doubled, or visible half-written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from inkbooth import artifacts, checkpoints, objectstore, storage
from inkbooth.ocr import batch as ocr_batch
from inkbooth.ocr.documents import synthetic
from tests.faultproxy import FaultProxy


def _wait_for(condition, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before the condition held")
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def _train_cmd(tiny_sd, subject_dir, class_set, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "inkbooth.dreambooth.train", str(tiny_sd), str(subject_dir), str(out),
            "--class-images", class_set, "--checkpoints", str(out) + "-ckpt", "--max-train-steps", "6",
            "--checkpoint-every", "1", "--checkpoints-total-limit", "3", "--learning-rate", "1e-3",
            "--train-text-encoder", "true", *extra]


def test_training_killed_at_a_random_step_resumes_to_the_same_weights(tiny_sd, subject_dir, class_set, tmp_path):
    subprocess.run(_train_cmd(tiny_sd, subject_dir, class_set, tmp_path / "straight"), check=True,
                   capture_output=True, timeout=300)
    kill_after = random.Random().randint(1, 4)  # the step whose checkpoint must exist before the kill
    print(f"killing after the checkpoint of step {kill_after}")
    proc = subprocess.Popen(_train_cmd(tiny_sd, subject_dir, class_set, tmp_path / "killed"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = str(tmp_path / "killed") + "-ckpt"
    _wait_for(lambda: any(c.step >= kill_after for c in checkpoints.list_checkpoints(ckpts)), 300, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    listed = checkpoints.list_checkpoints(ckpts)
    assert listed, "at least the checkpoint we waited for"
    for c in listed:
        artifacts.fetch(c.uri)  # every listed checkpoint is complete: all files present, checksums match
    assert not (tmp_path / "killed").exists(), "the killed run published no model and left no staging in its output"
    subprocess.run(_train_cmd(tiny_sd, subject_dir, class_set, tmp_path / "killed", "--resume", "latest"),
                   check=True, capture_output=True, timeout=300)
    straight, killed = (artifacts.fetch(str(tmp_path / name)) / "model" for name in ("straight", "killed"))
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a = load_file(straight / part)
        b = load_file(killed / part)
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6, part


def write_pages(folder: Path, count: int, seed: int, lines: int) -> int:
    """``count`` one-page documents of up to ``lines`` lines; returns how many lines they hold."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        page = synthetic.render_page(seed=seed + i, max_lines=lines, width=700, height=500)
        page.image.save(folder / f"doc-{i:02d}.png")
        total += len(page.lines)
    return total


def test_ocr_killed_mid_shard_then_rerun_loses_and_doubles_nothing(tiny_onnx, tmp_path):
    docs = tmp_path / "docs"
    expected = write_pages(docs, 14, seed=100, lines=3)
    model, _ = tiny_onnx
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "inkbooth.cli", "ocr", str(docs), str(model), str(out), "--num-beams", "1",
           "--max-new-tokens", "16", "--batch-size", "2"]
    proc = subprocess.Popen([*cmd, "--no-merge"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: len(storage.list_files(str(out / "work"))) >= 4, 300, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(storage.list_files(str(out / "work")))
    assert done_before < 14, "killed mid-shard"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(rerun.stdout.splitlines()[0])
    assert summary["skipped"] >= done_before - 1 and summary["done"] + summary["skipped"] == 14
    records = [json.loads(x) for x in artifacts.read_text(str(out / "results"), "results.jsonl").splitlines()]
    keys = [(r["document"], r["page"], r["line"]) for r in records]
    assert len(keys) == len(set(keys)) == expected, "every line exactly once"
    assert not [r for r in records if r.get("status") == "error"]


def test_object_store_killed_and_restarted_during_an_upload(tmp_path):
    """The store is killed the moment it has stored the first part of a 3-part upload (from the proxy
    between client and store, before the client hears back): the kill lands mid-upload by
    construction, and the proxy's record shows what the store had by then. Restarted on the same
    ports and data, the upload's retries finish it: the one outcome is the whole file, verified."""
    store = objectstore.EmbeddedS3(tmp_path / "store").start()
    ports = dict(store.ports)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(48 * 1024 * 1024))  # multipart: 3 parts of 16 MiB
    part = 16 * 1024 * 1024
    patient = storage.RetryPolicy(attempts=10, base_delay=0.5, max_delay=2.0, request_attempts=2)
    previous = storage.retries._retry_policy
    storage.set_retry_policy(patient)
    outcome: dict = {}
    killed = threading.Event()

    def kill_the_store():
        store.kill()
        killed.set()

    try:
        with FaultProxy(store.endpoint) as proxy, \
                objectstore.environment({**store.env(), "AWS_ENDPOINT_URL_S3": proxy.endpoint}):
            storage.ensure_bucket("s3://faults")
            proxy.cut_after("PUT", "partNumber=", kill_the_store)

            def upload():
                try:
                    outcome["info"] = storage.upload(big, "s3://faults/big.bin")
                except Exception as e:  # noqa: BLE001 - asserted below
                    outcome["error"] = e

            worker = threading.Thread(target=upload)
            worker.start()
            assert killed.wait(60), "the store was never killed: no part reached it"
            time.sleep(0.5)  # the upload's requests meet a dead store meanwhile
            store.start(ports)  # same ports, same data
            worker.join(120)
            assert not worker.is_alive()
            # Where the kill landed: the upload begun, one whole part stored, the upload not completed.
            (before,) = proxy.cut_at
            assert any(m == "POST" and "?uploads" in p and st == 200 for m, p, _, st in before), "upload begun"
            parts = [(p, n) for m, p, n, st in before if m == "PUT" and "partNumber=" in p and st == 200]
            assert parts and all(n == part for _, n in parts) and sum(n for _, n in parts) < big.stat().st_size
            assert not any(m == "POST" and "uploadId=" in p for m, p, _, _ in before), "not completed before the kill"
            after = proxy.forwarded[len(before):]
            assert [s for _, _, s in proxy.seen].count("cut") == 1
            assert any(s in ("upstream down", "cut") for _, _, s in proxy.seen), "requests met the dead store"
            assert any(m == "POST" and "uploadId=" in p and st == 200 for m, p, _, st in after), \
                "an upload completed after the restart"
            assert "error" not in outcome, f"the upload failed across the restart: {outcome.get('error')}"
            assert outcome["info"].sha256 == storage.sha256_file(big)
            assert storage.stat("s3://faults/big.bin").sha256 == storage.sha256_file(big)
            storage.download("s3://faults/big.bin", tmp_path / "back.bin")
            assert storage.sha256_file(tmp_path / "back.bin") == storage.sha256_file(big)
    finally:
        storage.set_retry_policy(previous)
        store.kill()  # its data is thrown away: a restarted server can take 15 s to stop on SIGTERM
        store.stop()


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_is_a_clear_error_and_corrupts_nothing(small_disk, tmp_path, monkeypatch):
    storage.write_bytes(str(small_disk / "keep.txt"), b"intact")
    with pytest.raises(storage.StorageError, match="no space left on device"):
        storage.write_bytes(str(small_disk / "big.bin"), os.urandom(2 * 1024 * 1024))
    assert sorted(p.name for p in small_disk.iterdir()) == ["keep.txt"], "no partial file left"
    assert (small_disk / "keep.txt").read_bytes() == b"intact"
    src = tmp_path / "art"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    artifacts.publish(src, str(tmp_path / "published"), kind="model")
    monkeypatch.setenv("INKBOOTH_CACHE", str(small_disk / "cache"))
    with pytest.raises(storage.StorageError, match="no space left on device"):
        artifacts.fetch(str(tmp_path / "published"), small_disk / "cache" / "x")
    assert not (small_disk / "cache" / "x" / "manifest.json").exists(), "a failed fetch is not a cached one"


def test_concurrent_shards_share_an_output_prefix_without_clobbering(tiny_onnx, bucket, tmp_path):
    local = tmp_path / "docs"
    expected = write_pages(local, 8, seed=300, lines=2)
    storage.upload_dir(local, f"{bucket}/docs")
    model, _ = tiny_onnx
    out = f"{bucket}/out"
    procs = [subprocess.Popen([sys.executable, "-m", "inkbooth.cli", "ocr", f"{bucket}/docs", str(model), out,
                               "--shard", f"{i}/4", "--no-merge", "--num-beams", "1", "--max-new-tokens", "8"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(4)]
    summaries = [json.loads(p.communicate(timeout=300)[0].splitlines()[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(s["documents"] for s in summaries) == 8 and sum(s["done"] for s in summaries) == 8
    ocr_batch.merge_results(ocr_batch.plan_documents(f"{bucket}/docs", 1), out)
    records = [json.loads(x) for x in artifacts.read_text(f"{out}/results", "results.jsonl").splitlines()]
    keys = [(r["document"], r["page"], r["line"]) for r in records]
    assert len(keys) == len(set(keys)) == expected
