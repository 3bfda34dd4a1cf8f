"""OCR throughput: PyTorch vs ONNX Runtime fp32 vs ONNX Runtime INT8, batch 1 and 8, in one run.

Same model, same line images, same code path (inkbooth.ocr.recognize.Recognizer: generate, then the
teacher-forced pass for confidences and token boxes); only the backend differs. Every backend
decodes exactly the same number of tokens per line (min_new_tokens = max_new_tokens), so a variant
whose text differs cannot look faster by stopping earlier. A plain ``model.generate`` row (no
confidences, no boxes) shows what the extra pass costs.

Two model shapes: the tiny test model (overhead-bound) and random weights in the shape of
microsoft/trocr-small-printed (384x384 input, 12-layer encoder, 6-layer decoder).

    python bench/ocr.py [--sizes tiny,small] [--lines 32] [--tokens 24] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def lines_per_second(fn, images, batch: int) -> float:
    fn(images[:batch])  # warm-up: session and allocator start-up are not throughput
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        fn(images[i:i + batch])
    return len(images) / (time.perf_counter() - start)


def bench_size(size: str, work: Path, n_lines: int, tokens: int, threads: int) -> list[dict]:
    import torch
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    from inkbooth import tiny
    from inkbooth.ocr import export, recognize, synth

    shape = tiny.TinyTrOCRConfig() if size == "tiny" else tiny.TROCR_SMALL_SHAPE
    src = tiny.build_tiny_trocr(work / f"{size}-src", shape)
    onnx_dir = work / f"{size}-onnx"
    # Parity is tested elsewhere; here a small set and no INT8 gate (random weights).
    export.export_trocr(str(src), str(onnx_dir), export.ExportConfig(
        variants=["fp32", "int8"], parity_images=4, parity_num_beams=2, max_int8_cer=1.0, threads=threads))
    images = [img for img, _ in synth.line_images(n_lines, seed=11)]
    model = VisionEncoderDecoderModel.from_pretrained(src, attn_implementation="eager").eval()
    processor = TrOCRProcessor.from_pretrained(src)

    def plain_generate(imgs):
        with torch.inference_mode():
            pv = processor(images=imgs, return_tensors="pt").pixel_values
            return model.generate(pixel_values=pv, max_new_tokens=tokens, min_new_tokens=tokens)

    rows = []
    for batch in (1, 8):
        base = dict(num_beams=1, max_new_tokens=tokens, batch_size=batch, threads=threads, token_boxes=True)
        runners = {
            "PyTorch (Recognizer)": recognize.Recognizer(src, recognize.RecognizeConfig(backend="torch", **base)),
            "ORT fp32": recognize.Recognizer(onnx_dir, recognize.RecognizeConfig(variant="fp32", **base)),
            "ORT INT8": recognize.Recognizer(onnx_dir, recognize.RecognizeConfig(variant="int8", **base)),
        }
        speeds = {"PyTorch generate (plain)": lines_per_second(plain_generate, images, batch)}
        for name, rec in runners.items():
            speeds[name] = lines_per_second(lambda imgs, r=rec: r.read(imgs, min_new_tokens=tokens), images, batch)
        reference = speeds["PyTorch (Recognizer)"]
        for name, lps in speeds.items():
            rows.append({"model": size, "batch": batch, "backend": name, "lines_per_s": round(lps, 2),
                         "vs_pytorch": round(lps / reference, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--lines", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=24, help="tokens decoded per line, for every backend")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/ocr.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            rows.extend(bench_size(size, Path(tmp), args.lines, args.tokens, args.threads))
    print(f"\nOCR lines/s, {args.lines} line images, {args.tokens} tokens per line, greedy, {args.threads} threads\n")
    print("| model | batch | backend | lines/s | vs PyTorch (Recognizer) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['backend']} | {r['lines_per_s']} | {r['vs_pytorch']}x |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of the whole run: {peak_mb:.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "peak_rss_mb": round(peak_mb)}, indent=2))


if __name__ == "__main__":
    main()
