"""Process settings a stage applies before heavy work: CPU threads from the pod's quota, allocator.

Thread pools (ONNX Runtime's intra-op pool, torch's) size themselves from the cores they see, which
in a container are the node's cores, not the CPUs the pod may use: a pod limited to 2 CPUs on a
64-core node would start 64 threads and spend its quota being throttled. ``cpu_limit`` reads the
cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, the tightest along
the cgroup's path) and the CPU affinity mask; ``threads`` turns that into a thread count.

GPUs: ``require_usable_gpus`` stops a stage within seconds when the pod was given GPUs (or
``device: cuda`` was asked for) that this process cannot use, rather than let ``device: auto``
run for hours on the CPU of a billed GPU node (a driver too old for the image's CUDA, devices not
injected, a CPU-only build).

Nothing here reads the environment at import time; every function looks when it is called.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import math
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
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


# --- GPUs -----------------------------------------------------------------------------------------

DEV = Path("/dev")
NVIDIA_DRIVER_VERSION = Path("/proc/driver/nvidia/version")

# The oldest NVIDIA driver branch each CUDA major release runs on (minor version compatibility: any
# 13.x on R580+, any 12.x on R525+), from NVIDIA's "CUDA Compatibility" guide, Minor Version
# Compatibility, Table 1: https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html
# (the CUDA Toolkit Release Notes list the driver each toolkit release shipped with, e.g. 570.26 for 12.8).
MIN_DRIVER = {13: 580, 12: 525, 11: 450}


class HardwareError(RuntimeError):
    """The pod was given GPUs (or ``device: cuda`` asked for one) that this process cannot use."""


def _nvidia_device_files(dev: Path) -> list[str]:
    """``/dev/nvidia0``, ``/dev/nvidia1``...: one per GPU the container runtime put in this container."""
    try:
        return sorted((p.name for p in dev.iterdir() if re.fullmatch(r"nvidia\d+", p.name)),
                      key=lambda name: int(name[6:]))
    except OSError:
        return []


def gpus_given() -> tuple[int, str]:
    """How many GPUs this container was given, and where that was read (``(0, "")`` for none).

    ``NVIDIA_VISIBLE_DEVICES`` is what the NVIDIA device plugin sets for a pod that requested
    ``nvidia.com/gpu`` (GPU UUIDs or indices; the NVIDIA container toolkit's own values ``all``,
    ``none``, ``void`` and a volume-mounts folder name no count). With CDI injection it is ``void`` and
    only the device files say it, so without a list those are counted. MIG instances count as one:
    CUDA enumerates a single MIG instance per process. ``CUDA_VISIBLE_DEVICES``, when set, narrows
    what this process means to use.
    """
    listed = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if listed and listed.lower() not in ("all", "none", "void") and not listed.startswith("/"):
        ids = [i.strip() for i in listed.split(",") if i.strip()]
        count, source = (1 if any(i.startswith("MIG-") for i in ids) else len(ids)), f"NVIDIA_VISIBLE_DEVICES={listed}"
    else:
        files = _nvidia_device_files(DEV)
        count, source = len(files), ",".join(f"/dev/{f}" for f in files)
    narrowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if count and narrowed is not None:
        count = min(count, len([i for i in narrowed.split(",") if i.strip()]))
    return count, source


def nvidia_driver_version() -> str | None:
    """The node's NVIDIA driver version (e.g. "535.104.05"): the kernel module's, else nvidia-smi's."""
    try:
        text = NVIDIA_DRIVER_VERSION.read_text()
    except OSError:
        text = ""
    found = re.search(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    if found:
        return found.group(1)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out and re.fullmatch(r"\d+\.\d+(?:\.\d+)?", out[0]):
            return out[0]
    return None


def _why_unusable(given: int, cuda: str | None) -> str:
    """Why a CUDA build (its CUDA version ``cuda``) cannot use the GPUs; "" when nothing explains it."""
    if given and not _nvidia_device_files(DEV):
        return ("there are no /dev/nvidiaN device files in the container, so the container runtime did not inject "
                "the GPUs; run the pod with runtimeClassName: nvidia (or make nvidia the node's default runtime, "
                "or use the device plugin's CDI mode)")
    driver = nvidia_driver_version()
    needed = MIN_DRIVER.get(int(cuda.split(".")[0])) if cuda and cuda.split(".")[0].isdigit() else None
    if driver and needed and int(driver.split(".")[0]) < needed:
        return (f"the node's NVIDIA driver {driver} is older than {needed}, the oldest that CUDA {cuda} runs on; "
                f"run the step on a node with driver {needed} or newer (or upgrade this node's driver)")
    return ""


def require_usable_gpus(device: str, backend: str = "torch") -> None:
    """Raise ``HardwareError`` when GPUs were given or asked for but ``backend`` cannot use them.

    Called at the start of each stage that can use a GPU, before any model loads. ``device`` is the
    stage's setting: "cpu" never checks; "auto" checks when the pod was given GPUs (``gpus_given``);
    "cuda" always. ``backend`` is "torch" (``torch.cuda`` must be available and see every GPU given)
    or "onnxruntime" (its CUDAExecutionProvider must be installed; it cannot count devices). With no
    GPU given and no GPU asked for (CPU nodes, CI) it returns at once and imports nothing.
    """
    if device == "cpu":
        return
    given, source = gpus_given()
    if not given and device != "cuda":
        return
    asked = f"device={device} with {given} GPU(s) given ({source})" if given else \
        f"device={device} but no GPU given to the pod (no NVIDIA_VISIBLE_DEVICES list, no /dev/nvidiaN)"
    if backend == "onnxruntime":
        import onnxruntime as ort
        from onnxruntime.capi import build_and_package_info as ort_build

        what = f"onnxruntime {ort.__version__}"
        cuda = getattr(ort_build, "cuda_version", None)
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise HardwareError(f"{asked}: {what} has no CUDAExecutionProvider (a CPU-only build); run the step in "
                                "the ocr-cuda image (onnxruntime-gpu), or set device: cpu")
        why = _why_unusable(given, cuda) if given else ""
        if why:  # ONNX Runtime would fall back to the CPU when its session starts
            raise HardwareError(f"{asked}: {what} cannot use them: {why}, or set device: cpu")
        return
    import torch

    what = f"torch {torch.__version__}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = torch.cuda.is_available()
    if not usable:
        if torch.version.cuda is None:
            raise HardwareError(f"{asked}: {what} is a CPU-only build; run the step in a CUDA image (train-cuda, "
                                "ocr-cuda), or set device: cpu" + (" and drop the GPU request" if given else ""))
        if not given:
            raise HardwareError(f"{asked}: {what} sees no CUDA device; request nvidia.com/gpu in the step's "
                                "resources, or set device: auto or cpu")
        why = _why_unusable(given, torch.version.cuda) or " ".join(
            " ".join(str(w.message) for w in caught).split()) or "CUDA did not initialise (see nvidia-smi in the pod)"
        raise HardwareError(f"{asked}: {what} (CUDA {torch.version.cuda}) cannot use them: {why}, "
                            "or set device: cpu")
    seen = torch.cuda.device_count()
    if seen < given:
        raise HardwareError(f"{asked}: {what} sees only {seen} of them; check the GPUs' health on the node "
                            f"(nvidia-smi) and CUDA_VISIBLE_DEVICES, or request {seen} GPU(s)")


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (restored after)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
