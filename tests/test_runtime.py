"""CPU threads from the cgroup quota, and the allocator setting (inkbooth.runtime)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inkbooth import runtime
from inkbooth.ocr.recognition.exported import _session_options


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


def test_importing_the_page_benchmark_leaves_the_environment_alone(monkeypatch):
    """bench/pages.py set OMP_THREAD_LIMIT=1 on import; test_evalset imports it, and every training
    process the suite started afterwards hung in its first backward pass."""
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    before = dict(os.environ)
    import bench.pages  # noqa: F401

    assert dict(os.environ) == before


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
