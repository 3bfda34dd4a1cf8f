"""`make demo`'s command, run whole: its output stays short and still says where everything is."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# What the summaries print, a line each (the path or figure follows the label).
SUMMARY = ["object store: SeaweedFS at http://127.0.0.1:", "OCR pipeline finished in ", "  results         s3://",
           "  line records    s3://", "  text per doc    s3://", "  report          s3://", "  read            ",
           "  export parity   ", "  error record    corrupt.png: ", "  visual report   s3://",
           "DreamBooth pipeline finished (two runs) in ", "  model versions  s3://", "  single file     s3://",
           "  class images    s3://", "  sample grid     ", "  subject fidelity base model  DINO ",
           "                   registered  DINO ", "  class preservation (the class prompt, step ",
           "                   without it: similarity to the base's ", "  object store    data kept in "]


@pytest.mark.slow
def test_the_demo_prints_under_80_lines_with_every_summary(tmp_path):
    """About 2 minutes on 2 cores: both pipelines, the DreamBooth one twice."""
    inkbooth = Path(sys.executable).parent / "inkbooth"
    done = subprocess.run([str(inkbooth), "demo", "--workdir", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=850)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(lines[-60:])
    assert len(lines) < 80, "\n".join(lines)
    for label in SUMMARY:
        assert any(line.startswith(label) for line in lines), label
    assert sum(line.startswith("  report          s3://") for line in lines) == 2, "OCR's and DreamBooth's"
    # A line per task of the three runs (a log each), each run's log folder; no executor output.
    task_logs = list((tmp_path / "kfp-local").glob("*/logs/*.log"))
    assert len(task_logs) >= 7 + 2 * 9
    assert sum(bool(re.fullmatch(r"  \S+ +ok +\d+\.\d s", line)) for line in lines) == len(task_logs)
    assert sum(line.startswith(("ocr pipeline: each task's log in", "dreambooth pipeline: each task's log in"))
               for line in lines) == 3
    assert not any("KFP Executor" in line or "Found credentials" in line or "float32" in line for line in lines)
