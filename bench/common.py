"""Helpers the benchmarks share: child processes, spread, the machine they ran on."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path


def run_child(name: str, cmd: list[str], threads: int, extra_env: dict[str, str] | None = None,
              timeout: float = 3600) -> dict:
    """Run one measured variant in a fresh process; its result is the JSON after ``RESULT `` on stdout.

    A child that runs past ``timeout`` seconds is killed and the benchmark stops, naming it.
    """
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads), **(extra_env or {})}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"{name} ran past {timeout:.0f} s and was killed") from e
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        raise SystemExit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(line[0][7:])


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread (min-max) of a measure over rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def machine() -> dict[str, str]:
    """CPU model, core count, the vector features that decide INT8/fp32 kernels, and the load now."""
    info = {"cpu": "unknown", "cores": str(os.cpu_count()), "features": "unknown",
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
        flags = set(next(ln for ln in lines if ln.startswith("flags")).split())
    except (OSError, StopIteration):
        return info
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    missing = [f for f in ("avx512f", "avx512_vnni", "avx_vnni") if f not in flags]
    info["features"] = (", ".join(have) or "no AVX2") + (f"; no {', '.join(missing)}" if missing else "")
    return info


def peak_rss_mb() -> int:
    """This process's peak resident memory (VmHWM). Unlike getrusage's ru_maxrss, it is not inherited
    from the parent across fork and exec, so a child reports its own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
