"""Process settings a stage applies before heavy work: CPU threads from the pod's quota, allocator.

Thread pools (ONNX Runtime's intra-op pool, torch's) size themselves from the cores they see, which
in a container are the node's cores, not the CPUs the pod may use: a pod limited to 2 CPUs on a
64-core node would start 64 threads and spend its quota being throttled. ``cpu_limit`` reads the
cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, the tightest along
the cgroup's path) and the CPU affinity mask; ``threads`` turns that into a thread count.

Nothing here reads the environment at import time; every function looks when it is called.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(root: Path, rel: str) -> list[Path]:
    """``root/rel`` and every folder above it up to ``root`` (a limit anywhere on the path applies)."""
    parts = [p for p in rel.strip("/").split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and cgroup v1 cpu-controller path, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """CPUs the cgroup quota allows (e.g. 1.5), or None when there is no quota.

    In a container the cgroup namespace usually makes the pod's own cgroup the mount's root, so the
    files at ``root`` are read too, not only those under the path /proc/self/cgroup names.
    """
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2, v1 = _cgroup_paths(proc_cgroup)
    quotas: list[float] = []
    for folder in _ancestors(root, v2 or ""):
        text = _read(folder / "cpu.max")
        if text:
            fields = text.split()
            if len(fields) == 2 and fields[0] != "max" and float(fields[1]) > 0:
                quotas.append(float(fields[0]) / float(fields[1]))
    for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        for folder in _ancestors(base, v1 or "") if base.is_dir() else []:
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def visible_cpus() -> int:
    """CPUs this process may be scheduled on (the affinity mask; all the machine's where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int:
    """Whole CPUs this process can use: the affinity mask, capped by the cgroup quota (rounded down, at least 1).

    Rounding down keeps a 1.5-CPU pod at one busy thread instead of two that the quota throttles.
    """
    cpus = visible_cpus()
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota + 1e-9)))
    return max(1, cpus)


def omp_thread_limit() -> int | None:
    """``OMP_THREAD_LIMIT`` from the environment (a positive integer), or None when unset or invalid.

    OpenMP never runs more threads than this in a process, but torch does not know it: torch sizes
    its pool from the cores, oneDNN plans a convolution's work for that many threads, OpenMP hands
    it fewer, and the kernel waits at its own barrier for threads that never come (training hung
    in its first backward pass with OMP_THREAD_LIMIT=1 and 2 torch threads). Every thread count
    here is capped by it.
    """
    raw = os.environ.get("OMP_THREAD_LIMIT", "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        log.warning("OMP_THREAD_LIMIT=%r is not a whole number; ignored", raw)
        return None
    return value if value > 0 else None


def threads(requested: int = 0) -> int:
    """The intra-op thread count to use: ``requested`` when positive, else ``cpu_limit()``; never
    above ``OMP_THREAD_LIMIT``."""
    wanted = requested if requested > 0 else cpu_limit()
    limit = omp_thread_limit()
    if limit is not None and wanted > limit:
        if requested > 0:
            log.warning("threads: %d asked for, OMP_THREAD_LIMIT=%d allows %d", requested, limit, limit)
        wanted = limit
    return wanted


def limit_torch_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads to ``threads(requested)``; never raise torch's own count without a request.

    torch sizes its pool from the node's cores; under a quota that is too many. With no request and no
    quota below torch's default, the count stays as torch chose it. Every stage that runs torch calls
    this first: it is also what keeps torch within ``OMP_THREAD_LIMIT`` (see ``omp_thread_limit``).
    """
    import torch

    wanted = threads(requested)
    if requested <= 0:
        wanted = min(wanted, torch.get_num_threads())
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    return wanted


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_kept = False


def keep_freed_memory(mmap_threshold: int = 32 << 20) -> bool:
    """Let glibc reuse freed blocks up to ``mmap_threshold`` bytes instead of returning them to the kernel.

    A training or sampling step allocates the same large tensors every time; by default glibc maps
    each one fresh (mmap) and unmaps it when freed, so every step pays thousands of page faults (on
    the benchmark's UNet step about 4,000, 4% of its CPU time). Kept in the heap, the memory is reused;
    the process's peak memory stays the same, it is only not handed back between steps. Returns
    whether the setting took (False off glibc). Process-wide, applied once.
    """
    global _kept
    if _kept:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    _kept = ok
    if not ok:
        log.debug("mallopt refused: freed memory goes back to the kernel as usual")
    return ok
