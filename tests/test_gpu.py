"""CUDA smoke tests: one fp16 training step and one onnxruntime CUDA OCR batch, from this package.

Run on a GPU machine with `pytest -m gpu tests/test_gpu.py` (the default command deselects them).
Besides checking, they print timings and memory for the record.
"""

from __future__ import annotations

import time

import pytest

from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)"),
]


def test_fp16_training_step_on_cuda(tiny_sd, subject_dir, class_set, tmp_path):
    from inkbooth.dreambooth import train

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    m = train.train_dreambooth(str(tiny_sd), str(subject_dir), str(tmp_path / "out"),
                               train.TrainConfig(max_train_steps=2, mixed_precision="fp16", train_text_encoder=True),
                               class_images=class_set)
    seconds = time.perf_counter() - start
    assert m.metrics["steps"] == 2 and m.metrics["loss"] == m.metrics["loss"]  # finite, not NaN
    print(f"\nfp16 DreamBooth: 2 steps in {seconds:.2f}s (with load and save), "
          f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, {torch.cuda.get_device_name()}")


def test_onnxruntime_cuda_ocr_batch(tiny_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install the ocr-cuda extra)")
    out, _ = tiny_onnx
    images = [img for img, _ in synthetic.line_images(16, seed=2)]
    results = {}
    for variant in ("fp32", "fp16"):
        rec = Recognizer(out, RecognizeConfig(variant=variant, device="cuda", num_beams=4,
                                              max_new_tokens=24))
        assert rec.device == "cuda"
        rec.read(images[:8])
        start = time.perf_counter()
        results[variant] = rec.read(images, min_new_tokens=24)
        print(f"\nORT CUDA {variant}: {len(images) / (time.perf_counter() - start):.1f} lines/s")
    same = sum(a.text == b.text for a, b in zip(results["fp32"], results["fp16"])) / len(images)
    print(f"fp16 text equal to fp32 on {same:.0%} of lines")
