"""Load: batch OCR over 200 pages and 5,000 lines in one local run, memory flat as the input grows.

Slow (a few minutes): `make test-load`. Each size runs in its own process, whose peak RSS is
read from the kernel; decoding is cut to 2 tokens a line so the test measures the batch machinery
(pages, segmentation, batching, results, merge), not the tiny model. Figures: docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from inkbooth.ocr import synth

pytestmark = pytest.mark.slow

RUNNER = ("import resource, sys; from inkbooth.cli import main; rc = main(sys.argv[1:]); "
          "print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024); sys.exit(rc)")


def make_pages(folder, count: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    lines = 0
    for i in range(count):
        page = synth.render_page(seed=10_000 + i, max_lines=25, width=1240, height=1754, size=20)
        page.image.save(folder / f"page-{i:04d}.png", optimize=False)
        lines += len(page.lines)
    return lines


def run_ocr(docs, model, out) -> tuple[dict, int, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, "ocr", str(docs), str(model), str(out), "--num-beams", "1",
                           "--max-new-tokens", "2", "--batch-size", "16", "--token-boxes", "false"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    peak = int(next(x for x in lines if x.startswith("PEAK_RSS_MB")).split()[1])
    return json.loads(lines[0]), peak, time.perf_counter() - start


def test_5000_lines_200_pages_with_flat_memory(tiny_onnx, tmp_path):
    model, _ = tiny_onnx
    small_lines = make_pages(tmp_path / "x1", 50)
    big_lines = make_pages(tmp_path / "x4", 200)
    assert big_lines >= 5000
    s1, rss1, t1 = run_ocr(tmp_path / "x1", model, tmp_path / "out1")
    s4, rss4, t4 = run_ocr(tmp_path / "x4", model, tmp_path / "out4")
    print(f"\n1x: {s1['documents']} pages, {s1['lines']} lines, {t1:.0f}s, peak RSS {rss1} MB")
    print(f"4x: {s4['documents']} pages, {s4['lines']} lines, {t4:.0f}s, peak RSS {rss4} MB "
          f"({rss4 / rss1:.2f}x of 1x)")
    assert s1["lines"] == small_lines and s4["lines"] == big_lines and s4["errors"] == 0
    records = (tmp_path / "out4" / "results" / "results.jsonl").read_text().count("\n")
    assert records == big_lines
    assert rss4 <= rss1 * 1.15, "peak memory must not grow with the input"
