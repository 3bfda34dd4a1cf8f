"""OCR throughput at the defaults users get: ONNX Runtime against PyTorch's ``generate`` alone.

Every variant reads the same line images through ``inkbooth.ocr.recognition.recognizer.Recognizer`` with
the defaults (beam 4, batch 8, confidences and token boxes), except ``torch-plain``, the baseline:
PyTorch's ``model.generate`` alone (no confidences, no boxes). Every variant decodes exactly
``--tokens`` tokens per line (min_new_tokens = max_new_tokens), so a variant whose text differs
cannot look faster by stopping earlier.

Variants (each in its own fresh process, so peak memory is its own):
  torch-plain       model.generate only (the baseline; ratios are against it)
  torch             Recognizer, PyTorch backend: generate, then the teacher-forced pass for confidences
                    and boxes (that pass's CPU time is reported apart, in its own column)
  ort-fp32          Recognizer, ONNX Runtime fp32, the decoding engine (inkbooth.ocr.recognition.decoding)
  ort-int8          Recognizer, ONNX Runtime INT8 (weight products), the decoding engine
  ort-int8-before   Recognizer, ONNX Runtime INT8 as exported before: optimum's decoders under
                    transformers.generate, attention products quantised too, plus the attention pass

Shapes: random weights in the shape of microsoft/trocr-small-printed and trocr-base-printed
(vocabularies padded to the real sizes, ids never chosen; see inkbooth.tiny), or the tiny test model.
Rounds are interleaved; medians and min-max spread; ratios against ``torch-plain`` in the same round
(against ``torch`` when torch-plain is not run). The output names the CPU and its vector features
(``inkbooth.ocr.recognition.exported.cpu_features``), which decide INT8's and fp32's kernels.

    python bench/ocr.py [--sizes small,base] [--rounds 3] [--lines 8] [--tokens 24] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import machine, peak_rss_mb, run_child, summary

from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.recognition import export
from inkbooth.ocr.recognition.exported import CPU_FEATURES, cpu_features
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer

VARIANTS = ("torch-plain", "torch", "ort-fp32", "ort-int8", "ort-int8-before")
# What the ratios are against: the first of these that is run.
BASELINES = {"torch-plain": "torch-plain, generate alone",
             "torch": "torch, the Recognizer's PyTorch backend (generate and the teacher-forced pass)"}


def shape(size: str):
    from inkbooth import tiny

    return {"tiny": tiny.TinyTrOCRConfig(), "small": tiny.TROCR_SMALL_SHAPE, "base": tiny.TROCR_BASE_SHAPE}[size]


def setup(work: Path, size: str, threads: int, before: bool) -> dict[str, str]:
    """Source checkpoint and the exports (engine; the earlier layout when ``before``), made once."""
    marker = work / f"setup-{size}.json"
    if marker.exists():
        paths = json.loads(marker.read_text())
        if paths.get("before") or not before:
            return paths
    from inkbooth import tiny
    src = work / f"{size}-src"
    if not (src / "config.json").is_file():
        tiny.build_tiny_trocr(src, shape(size))
    # Parity is tested elsewhere; random weights at real sizes have near-ties, so no gates here.
    # This benchmark times the variants itself: the export's own timing (variant_rounds) is skipped.
    common = {"parity_images": 2, "parity_num_beams": 2, "parity_max_new_tokens": 6, "max_int8_cer": 1.0,
              "min_fp32_exact": 0.0, "threads": threads, "variant_rounds": 0}
    export.export_trocr(str(src), str(work / f"{size}-onnx"), export.ExportConfig(variants=["fp32", "int8"], **common))
    paths = {"src": str(src), "onnx": str(work / f"{size}-onnx"), "before": ""}
    if before:
        export.export_trocr(str(src), str(work / f"{size}-onnx-before"), export.ExportConfig(
            variants=["fp32", "int8"], decoder="generate", int8_attention=True, **common))
        paths["before"] = str(work / f"{size}-onnx-before")
    marker.write_text(json.dumps(paths))
    return paths


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    paths = json.loads(Path(args.paths).read_text())
    images = [img for img, _ in synthetic.line_images(args.lines + args.batch, seed=11)]
    warm, timed = images[:args.batch], images[args.batch:]
    # chunk_long_lines off: every variant does the same work per line as the plain PyTorch baseline.
    base = {"num_beams": args.beams, "batch_size": args.batch, "threads": args.threads, "token_boxes": True,
            "chunk_long_lines": False}
    if args.only == "torch-plain":
        from transformers import TrOCRProcessor, VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(paths["src"], attn_implementation="eager").eval()
        processor = TrOCRProcessor.from_pretrained(paths["src"])

        def read(imgs):
            with torch.inference_mode():
                pv = processor(images=imgs, return_tensors="pt").pixel_values
                return model.generate(pixel_values=pv, num_beams=args.beams, max_new_tokens=args.tokens,
                                      min_new_tokens=args.tokens, early_stopping=args.beams > 1)
    else:
        folder, cfg = {
            "torch": (paths["src"], {"backend": "torch"}),
            "ort-fp32": (paths["onnx"], {"variant": "fp32"}),
            "ort-int8": (paths["onnx"], {"variant": "int8"}),
            "ort-int8-before": (paths["before"], {"variant": "int8"}),
        }[args.only]
        rec = Recognizer(folder, RecognizeConfig(max_new_tokens=args.tokens, **base, **cfg))
        if args.only == "torch":  # the teacher-forced pass, timed apart from generate
            attn_decoder = rec.attn_decoder

            def timed_pass(*a, **k):
                c = time.process_time()
                try:
                    return attn_decoder(*a, **k)
                finally:
                    teacher_forced[0] += time.process_time() - c

            rec.attn_decoder = timed_pass

        def read(imgs):
            return rec.read(imgs, min_new_tokens=args.tokens)

    teacher_forced = [0.0]
    read(warm)  # session and allocator start-up are not throughput
    teacher_forced[0] = 0.0
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(timed), args.batch):
        read(timed[i:i + args.batch])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    result = {"lines_per_s": len(timed) / wall, "cpu_s_per_line": cpu / len(timed), "peak_rss_mb": peak_rss_mb()}
    if args.only == "torch":
        result["teacher_forced_cpu_s_per_line"] = teacher_forced[0] / len(timed)
    print("RESULT " + json.dumps(result))


def spawn(name: str, args: argparse.Namespace, paths_file: Path) -> dict:
    cmd = [sys.executable, __file__, "--only", name, "--paths", str(paths_file), "--lines", str(args.lines),
           "--tokens", str(args.tokens), "--beams", str(args.beams), "--batch", str(args.batch),
           "--threads", str(args.threads)]
    return run_child(name, cmd, args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,base")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=8, help="timed lines per run (after one warm-up batch)")
    parser.add_argument("--tokens", type=int, default=24, help="tokens decoded per line, for every variant")
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", help="keep models and exports here (reused by later runs)")
    parser.add_argument("--out", default="bench/results/ocr.json")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        child(args)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    variants = args.variants.split(",")
    started, load_before = time.time(), os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for size in args.sizes.split(","):
            paths_file = work / f"paths-{size}.json"
            paths_file.write_text(json.dumps(setup(work, size, args.threads, "ort-int8-before" in variants)))
            runs[size] = {v: [] for v in variants}
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for v in order:
                    runs[size][v].append(spawn(v, args, paths_file))
                    print(f"{size} round {r + 1}/{args.rounds} {v}: {runs[size][v][-1]}", file=sys.stderr)
    m = machine()
    flags = cpu_features()
    lacks = [f for f in CPU_FEATURES if f not in flags]
    baseline = next((b for b in BASELINES if b in variants), None)
    report = {"args": {k: v for k, v in vars(args).items() if k not in ("only", "paths")},
              "cpu": f"{m['cpu']}, {m['cores']} cores; {', '.join(flags) or 'no AVX2'}"
                     + (f"; no {', '.join(lacks)}" if lacks else ""),
              "cpu_features": flags, "baseline": baseline,
              "load": [" ".join(f"{x:.2f}" for x in load_before), " ".join(f"{x:.2f}" for x in os.getloadavg())],
              "minutes": round((time.time() - started) / 60, 1), "runs": runs, "rows": []}
    print(f"\nOCR at beam {args.beams}, batch {args.batch}, {args.tokens} tokens per line, {args.lines} timed lines, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds; CPU {report['cpu']}; "
          f"load {report['load'][0]} -> {report['load'][1]}; baseline: {BASELINES.get(baseline, 'none')}\n")
    print(f"| shape | variant | lines/s (wall) median (min-max) | CPU s/line median (min-max) | "
          f"of which the teacher-forced pass | peak RSS MB | speed-up vs {baseline}, CPU time: per-round median "
          "(min-max) | speed-up, wall |")
    print("|---|---|---|---|---|---|---|---|")
    for size, by_variant in runs.items():
        for v, rs in by_variant.items():
            lps = [r["lines_per_s"] for r in rs]
            cpu = [r["cpu_s_per_line"] for r in rs]
            row = {"shape": size, "variant": v, "lines_per_s": summary(lps), "cpu_s_per_line": summary(cpu),
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
            tf = ""
            if all("teacher_forced_cpu_s_per_line" in r for r in rs):
                row["teacher_forced_cpu_s_per_line"] = t = summary([r["teacher_forced_cpu_s_per_line"] for r in rs])
                tf = f"{t['median']:.3f} ({t['min']:.3f}-{t['max']:.3f})"
            vs = vs_wall = ""
            if baseline:
                base = by_variant[baseline]
                row["speedup_cpu"] = summary([b["cpu_s_per_line"] / a["cpu_s_per_line"] for a, b in zip(rs, base)])
                row["speedup_wall"] = summary([a["lines_per_s"] / b["lines_per_s"] for a, b in zip(rs, base)])
                c, w = row["speedup_cpu"], row["speedup_wall"]
                vs = f"{c['median']:.2f}x ({c['min']:.2f}-{c['max']:.2f})"
                vs_wall = f"{w['median']:.2f}x ({w['min']:.2f}-{w['max']:.2f})"
            report["rows"].append(row)
            lp, cp = row["lines_per_s"], row["cpu_s_per_line"]
            print(f"| {size} | {v} | {lp['median']:.3f} ({lp['min']:.3f}-{lp['max']:.3f}) | {cp['median']:.3f} "
                  f"({cp['min']:.3f}-{cp['max']:.3f}) | {tf} | {row['peak_rss_mb']} | {vs} | {vs_wall} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
