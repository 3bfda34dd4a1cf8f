"""CPU threads from the cgroup quota, and the allocator setting (inkbooth.runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inkbooth import runtime


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
    from inkbooth.ocr import recognize

    monkeypatch.setattr(runtime, "cpu_limit", lambda *a: 3)
    so = recognize._session_options(0)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert recognize._session_options(2).intra_op_num_threads == 2


def test_keep_freed_memory_takes_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert runtime.keep_freed_memory() is True
    assert runtime.keep_freed_memory() is True  # idempotent
