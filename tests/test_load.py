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

from inkbooth import artifacts
from inkbooth.ocr.documents import synthetic

pytestmark = pytest.mark.slow

# The peak RSS of the CLI process itself: VmHWM of its address space, which starts afresh at exec.
# (getrusage's ru_maxrss keeps the parent's RSS at the fork: a test process that has just rendered
# 600 pages would be measured, not the CLI.)
RUNNER = ("import re, sys; from inkbooth.cli import main; rc = main(sys.argv[1:]); "
          "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
          "print('PEAK_RSS_MB', hwm // 1024); sys.exit(rc)")


def make_pages(folder, count: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    lines = 0
    for i in range(count):
        page = synthetic.render_page(seed=10_000 + i, max_lines=25, width=1240, height=1754, size=20)
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
    records = artifacts.read_text(str(tmp_path / "out4" / "results"), "results.jsonl").count("\n")
    assert records == big_lines
    assert rss4 <= rss1 * 1.15, "peak memory must not grow with the input"


def test_republishing_while_a_reader_fetches_fails_no_read(bucket, tmp_path):
    """40 fetches of an S3 artifact (3 files of 4 MB) while it is republished 4 times, old versions
    collected at once (no grace): every fetch returns one whole version."""
    import os
    import threading

    versions = []
    for i in range(5):
        folder = tmp_path / f"v{i}"
        folder.mkdir()
        for j in range(3):
            (folder / f"part-{j}.bin").write_bytes(bytes([i]) + os.urandom(4 << 20))
        versions.append(folder)
    uri = f"{bucket}/hot/results"
    artifacts.publish(versions[0], uri, kind="r", overwrite=True, gc_grace=0)
    failures, seen, reads = [], [], 40

    def reader():
        for n in range(reads):
            try:
                folder = artifacts.fetch(uri, tmp_path / "reads" / str(n))
                tags = {(folder / f"part-{j}.bin").read_bytes()[0] for j in range(3)}
                seen.append(tags.pop() if len(tags) == 1 else None)
                if None in seen:
                    failures.append(f"read {n}: files of different versions")
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(f"read {n}: {type(e).__name__}: {e}")

    thread = threading.Thread(target=reader)
    start = time.perf_counter()
    thread.start()
    publishes = 0
    while thread.is_alive() and publishes < 4:
        if len(seen) + len(failures) >= 8 * (publishes + 1):  # spread over the reads, each overlapping one
            publishes += 1
            artifacts.publish(versions[publishes], uri, kind="r", overwrite=True, gc_grace=0)
        time.sleep(0.01)
    thread.join()
    print(f"\n{reads} fetches during {publishes} republishes in {time.perf_counter() - start:.1f}s: "
          f"{len(failures)} failed; versions seen {sorted(set(s for s in seen if s is not None))}")
    assert publishes == 4 and failures == []
    assert len(set(seen)) >= 2, "the reader did read while versions changed"


def long_tiff(path, pages: int) -> None:
    """One TIFF of ``pages`` pages, one line of text each (LZW: a few KB a page)."""
    def frames():
        for i in range(1, pages):
            yield synthetic.render_page(seed=20_000 + i, max_lines=1, width=1240, height=1754, size=24).image

    first = synthetic.render_page(seed=20_000, max_lines=1, width=1240, height=1754, size=24).image
    first.save(path, save_all=True, append_images=frames(), compression="tiff_lzw")


def test_memory_is_flat_in_the_pages_of_one_document(tiny_onnx, tmp_path):
    """20 vs 600 pages in one document: pages are read, cut and let go one at a time, records are
    written as they come, so peak RSS must not grow with the page count (before: ~7.4 MB a page)."""
    model, _ = tiny_onnx
    figures = {}
    for pages in (20, 600):
        docs = tmp_path / f"docs-{pages}"
        docs.mkdir()
        long_tiff(docs / "long.tiff", pages)
        summary, peak, seconds = run_ocr(docs, model, tmp_path / f"out-{pages}")
        assert summary["errors"] == 0 and summary["lines"] == pages, summary
        figures[pages] = (peak, seconds, (docs / "long.tiff").stat().st_size)
    (small, t_small, b_small), (big, t_big, b_big) = figures[20], figures[600]
    print(f"\none document of 20 pages ({b_small >> 10} KB): peak RSS {small} MB, {t_small:.0f}s; "
          f"600 pages ({b_big >> 10} KB): peak RSS {big} MB, {t_big:.0f}s ({big / small:.2f}x)")
    assert big <= small * 1.2, "peak memory must not grow with the pages of a document"
