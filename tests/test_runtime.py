"""CPU threads from the cgroup quota, and the allocator setting (inkbooth.runtime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inkbooth import runtime
from inkbooth.ocr.recognition.exported import _session_options
from tests.conftest import REPO


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_in_a_container_namespace(tmp_path):
    # A pod limited to 1.5 CPUs: its own cgroup is the mount's root ("0::/").
    _write(tmp_path / "cpu.max", "150000 100000\n")
    assert runtime.cgroup_cpu_quota(tmp_path, "0::/\n") == pytest.approx(1.5)


def test_cgroup_v2_tightest_limit_along_the_path(tmp_path):
    _write(tmp_path / "kubepods" / "cpu.max", "800000 100000")
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "max 100000")
    _write(tmp_path / "kubepods" / "pod1" / "ctr" / "cpu.max", "300000 100000")
    assert runtime.cgroup_cpu_quota(tmp_path, "0::/kubepods/pod1/ctr") == pytest.approx(3.0)
    _write(tmp_path / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000")
    assert runtime.cgroup_cpu_quota(tmp_path, "0::/kubepods/pod1/ctr") == pytest.approx(8.0)


def test_no_quota_anywhere_is_none(tmp_path):
    _write(tmp_path / "cpu.max", "max 100000")
    assert runtime.cgroup_cpu_quota(tmp_path, "0::/") is None
    assert runtime.cgroup_cpu_quota(tmp_path / "absent", "") is None


def test_cgroup_v1_cfs_quota(tmp_path):
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "200000")
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    assert runtime.cgroup_cpu_quota(tmp_path, "4:cpu,cpuacct:/\n0::/\n") == pytest.approx(2.0)
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    assert runtime.cgroup_cpu_quota(tmp_path, "4:cpu,cpuacct:/\n") is None


def test_cpu_limit_rounds_the_quota_down_and_never_exceeds_the_visible_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "visible_cpus", lambda: 64)
    _write(tmp_path / "cpu.max", "150000 100000")
    assert runtime.cpu_limit(tmp_path, "0::/") == 1  # 1.5 CPUs: one thread, not two the quota throttles
    _write(tmp_path / "cpu.max", "50000 100000")
    assert runtime.cpu_limit(tmp_path, "0::/") == 1  # half a CPU: still one
    _write(tmp_path / "cpu.max", "400000 100000")
    assert runtime.cpu_limit(tmp_path, "0::/") == 4
    monkeypatch.setattr(runtime, "visible_cpus", lambda: 2)
    assert runtime.cpu_limit(tmp_path, "0::/") == 2
    _write(tmp_path / "cpu.max", "max 100000")
    assert runtime.cpu_limit(tmp_path, "0::/") == 2


def test_threads_takes_a_request_or_the_limit(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_limit", lambda *a: 3)
    assert runtime.threads(0) == 3
    assert runtime.threads(5) == 5


def test_torch_threads_are_capped_by_the_quota_but_never_raised_unasked(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        monkeypatch.setattr(runtime, "cpu_limit", lambda *a: 2)
        assert runtime.limit_torch_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(runtime, "cpu_limit", lambda *a: 16)
        assert runtime.limit_torch_threads() == 2 and torch.get_num_threads() == 2
        assert runtime.limit_torch_threads(3) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_ort_sessions_take_threads_from_the_quota(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_limit", lambda *a: 3)
    so = _session_options(0)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert _session_options(2).intra_op_num_threads == 2


def test_keep_freed_memory_takes_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert runtime.keep_freed_memory() is True
    assert runtime.keep_freed_memory() is True  # idempotent


# OMP_THREAD_LIMIT and torch's thread count (the hang behind the CI timeout of 2026-11-26)
def test_thread_counts_never_exceed_omp_thread_limit(monkeypatch):
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")
    assert runtime.omp_thread_limit() == 1
    assert runtime.threads() == 1
    assert runtime.threads(4) == 1, "an explicit request is capped too"
    monkeypatch.setenv("OMP_THREAD_LIMIT", "many")
    assert runtime.omp_thread_limit() is None, "an unreadable value is ignored (with a warning)"
    monkeypatch.delenv("OMP_THREAD_LIMIT")
    assert runtime.threads(3) == 3


def test_importing_the_page_benchmark_leaves_the_environment_alone():
    """bench/pages.py set OMP_THREAD_LIMIT=1 on import; test_evalset imports it, and every training
    process the suite started afterwards hung in its first backward pass. In a fresh interpreter:
    in this one, another test may have imported it already, and a second import does nothing."""
    code = ("import os, json; before = dict(os.environ); import bench.pages; "
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], "importing it changed the environment"


_BACKWARD = """
import torch
from diffusers import UNet2DConditionModel
from inkbooth import runtime
torch.set_num_threads(2)  # what torch picks on a 2-core machine, more on bigger ones
runtime.limit_torch_threads()
unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                            cross_attention_dim=32, layers_per_block=1, attention_head_dim=8)
out = unet(torch.randn(2, 4, 16, 16), torch.tensor([1, 500]), torch.randn(2, 77, 32)).sample
out.pow(2).mean().backward()
print("threads", torch.get_num_threads())
"""


def test_a_unet_backward_under_omp_thread_limit_finishes():
    """With OMP_THREAD_LIMIT=1 and torch at 2 threads, oneDNN's backward-weights convolution waited
    forever for a second thread; every torch stage goes through runtime.limit_torch_threads first."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", _BACKWARD], env=env, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("a UNet backward pass under OMP_THREAD_LIMIT=1 hung (torch threads above the limit)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "threads 1" in done.stdout


# GPUs given to the pod but unusable (issue 17: fail fast on hardware) -------------------------------

OLD_DRIVER = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
              "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A fake node: an empty /dev, no driver file, no nvidia-smi, no NVIDIA or CUDA variables."""
    dev, proc = tmp_path / "dev", tmp_path / "proc-driver-nvidia-version"
    dev.mkdir()
    monkeypatch.setattr(runtime, "DEV", dev)
    monkeypatch.setattr(runtime, "NVIDIA_DRIVER_VERSION", proc)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    for name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)

    def give(gpus: int, *, files: bool = True, driver: str | None = None) -> None:
        monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", ",".join(f"GPU-{i:08x}-0000" for i in range(gpus)))
        for name in ["nvidiactl", "nvidia-uvm", *(f"nvidia{i}" for i in range(gpus))] if files else []:
            (dev / name).touch()
        if driver:
            proc.write_text(driver)
    return give


def fake_torch(monkeypatch, *, available: bool, count: int = 0, cuda: str | None = "13.0") -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.version, "cuda", cuda)


def test_a_driver_too_old_for_the_images_cuda_is_named_with_the_minimum(node, monkeypatch):
    node(1, driver=OLD_DRIVER)
    fake_torch(monkeypatch, available=False, cuda="13.0")
    with pytest.raises(runtime.HardwareError) as err:
        runtime.require_usable_gpus("auto")
    message = str(err.value)
    assert "535.104.05" in message and "580" in message and "CUDA 13.0" in message, message
    assert "NVIDIA_VISIBLE_DEVICES=GPU-" in message and "\n" not in message
    # nvidia-smi answers where the kernel module's file is not readable
    runtime.NVIDIA_DRIVER_VERSION.unlink()
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(runtime.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "535.104.05\n"))
    assert runtime.nvidia_driver_version() == "535.104.05"
    with pytest.raises(runtime.HardwareError, match=r"535\.104\.05 is older than 580"):
        runtime.require_usable_gpus("cuda")


def test_driver_versions_are_read_from_either_kernel_module(node):
    runtime.NVIDIA_DRIVER_VERSION.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.65.06  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Tue Jul 15 2025\nGCC version:  gcc version 13.3.0\n")
    assert runtime.nvidia_driver_version() == "580.65.06"
    runtime.NVIDIA_DRIVER_VERSION.write_text(OLD_DRIVER)
    assert runtime.nvidia_driver_version() == "535.104.05"


def test_gpus_given_without_device_files_were_not_injected(node, monkeypatch):
    node(2, files=False, driver=OLD_DRIVER)
    fake_torch(monkeypatch, available=False, cuda="13.0")
    with pytest.raises(runtime.HardwareError, match=r"no /dev/nvidiaN device files.*runtimeClassName: nvidia"):
        runtime.require_usable_gpus("auto")


def test_a_cpu_only_torch_in_a_pod_given_gpus(node, monkeypatch):
    node(1, driver=OLD_DRIVER.replace("535.104.05", "580.82.07"))
    fake_torch(monkeypatch, available=False, cuda=None)
    with pytest.raises(runtime.HardwareError, match=r"CPU-only build; run the step in a CUDA image"):
        runtime.require_usable_gpus("auto")


def test_torch_seeing_fewer_gpus_than_the_pod_was_given(node, monkeypatch):
    node(4)
    fake_torch(monkeypatch, available=True, count=2)
    with pytest.raises(runtime.HardwareError, match=r"4 GPU\(s\) given .* sees only 2 of them"):
        runtime.require_usable_gpus("auto")
    fake_torch(monkeypatch, available=True, count=4)
    runtime.require_usable_gpus("auto")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the process chose two of them itself
    fake_torch(monkeypatch, available=True, count=2)
    runtime.require_usable_gpus("auto")


def test_device_files_alone_count_as_given_and_mig_as_one(node, monkeypatch):
    """Under CDI the toolkit sets NVIDIA_VISIBLE_DEVICES=void: only /dev/nvidiaN says GPUs are there."""
    node(0)
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (runtime.DEV / name).touch()
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")
    assert runtime.gpus_given() == (2, "/dev/nvidia0,/dev/nvidia1")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "MIG-1a2b3c4d-0000-0000-0000-000000000000")
    assert runtime.gpus_given()[0] == 1


def test_device_cpu_never_checks_and_nothing_given_does_nothing(node, monkeypatch):
    node(2, driver=OLD_DRIVER)
    fake_torch(monkeypatch, available=False)
    runtime.require_usable_gpus("cpu")
    runtime.require_usable_gpus("cpu", "onnxruntime")
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES")
    for f in runtime.DEV.iterdir():
        f.unlink()
    assert runtime.gpus_given() == (0, "")
    runtime.require_usable_gpus("auto")
    runtime.require_usable_gpus("auto", "onnxruntime")
    with pytest.raises(runtime.HardwareError, match=r"device=cuda but no GPU given.*request nvidia.com/gpu"):
        runtime.require_usable_gpus("cuda")


def test_nothing_given_returns_without_importing_torch(tmp_path):
    code = ("import sys, pathlib; from inkbooth import runtime; runtime.DEV = pathlib.Path(sys.argv[1]); "
            "runtime.require_usable_gpus('auto'); print('torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_onnxruntime_without_its_cuda_provider_in_a_pod_given_gpus(node, monkeypatch):
    import onnxruntime

    node(1)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(runtime.HardwareError, match=r"no CUDAExecutionProvider.*onnxruntime-gpu"):
        runtime.require_usable_gpus("auto", "onnxruntime")


def test_a_stage_fails_within_seconds_before_loading_the_model(node, monkeypatch, tmp_path):
    """finetune_trocr in a pod given a GPU on a node whose driver is too old: the step fails with
    the reason at once instead of training for hours on the CPU."""
    import time

    from inkbooth.ocr.training import finetune

    node(1, driver=OLD_DRIVER)
    fake_torch(monkeypatch, available=False, cuda="13.0")

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the GPU check")

    monkeypatch.setattr(finetune.models, "resolve", no_load)
    started = time.perf_counter()
    with pytest.raises(runtime.HardwareError, match=r"driver 535\.104\.05 is older than 580"):
        finetune.finetune_trocr(str(tmp_path / "base"), str(tmp_path / "out"),
                                finetune.FinetuneConfig(max_steps=1, threads=1), data=str(tmp_path / "lines"))
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "out").exists()
