"""Which exported variant ``variant: auto`` runs on CPU, measured at export.

``measure_variants`` times each CPU variant of an export reading the parity lines the way the
recognizer reads by default, on the machine the export runs on, takes each one's CER, and
``pick_variant`` chooses: the fastest within the CER budget whose speed-up over fp32 is real, else
fp32. ``export.export_trocr`` records the result in the export's manifest (``metrics["variants"]``);
``exported.auto_variant`` reads it back when a worker settles ``variant: auto``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from inkbooth.ocr.recognition.text import corpus_cer

ExportConfig = Any  # an ``export.ExportConfig`` (its variant_* options and threads; not imported: export imports this)


def measure_variants(folder: Path, variants: list[str], images: list[Any], texts: list[str] | None,
                     config: ExportConfig) -> dict[str, Any]:
    """Each CPU variant's reading speed and CER on the parity lines, and the one ``variant: auto`` runs.

    The variants of the export at ``folder`` read the lines as the recognizer reads by default (its
    beams, or ``variant_num_beams``; its batch size, token boxes and long lines in chunks) on ONNX
    Runtime's CPU provider with ``config.threads``: one warm-up batch each, then ``variant_rounds``
    rounds (one when after the first no variant but fp32 is within the CER budget: reading is
    deterministic), each batch read by every variant in turn (the order rotating), timed in this process's
    CPU seconds per line. Each variant's CER is taken against the lines' true ``texts`` (and against
    fp32's text).

    The choice: the fastest variant whose CER is at most fp32's + ``variant_cer_margin`` (against the
    true texts; where there are none, its CER against fp32's text at most the margin) and whose median
    per-round speed-up over fp32 is at least ``variant_min_speedup``; else fp32. fp16 runs on CUDA
    only: not measured here. The record names the CPU's vector features and ONNX Runtime's version,
    because the choice holds on a like machine (``exported.auto_variant`` says when a worker's CPU
    differs).
    """
    import statistics

    import onnxruntime as ort

    from inkbooth import runtime
    from inkbooth.ocr.recognition.exported import cpu_features, cpu_model
    from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer

    defaults = RecognizeConfig()
    beams = config.variant_num_beams or defaults.num_beams
    batch = defaults.batch_size
    against = "labels" if texts is not None else "fp32"
    record: dict[str, Any] = {
        "device": "cpu", "choice": "fp32", "why": "", "cpu": cpu_model(), "cpu_features": cpu_features(),
        "onnxruntime": ort.__version__, "threads": runtime.threads(config.threads), "num_beams": beams,
        "batch_size": batch, "lines": len(images), "rounds": config.variant_rounds, "cer_against": against,
        "cer_margin": config.variant_cer_margin, "min_speedup": config.variant_min_speedup, "measured": {},
    }
    if "fp16" in variants:
        record["measured"]["fp16"] = {"measured": False, "why": "fp16 runs on CUDA; this record is for CPU"}
    on_cpu = [v for v in ("fp32", "int8") if v in variants]
    if len(on_cpu) == 1:
        record["why"] = "fp32 is the only variant exported for CPU (not timed)"
        return record
    readers = {v: Recognizer(folder, RecognizeConfig(variant=v, device="cpu", num_beams=beams, batch_size=batch,
                                                     threads=config.threads)) for v in on_cpu}

    for v in on_cpu:
        readers[v].read(images[:batch])  # sessions' and allocators' start-up is not reading speed
    cpu: dict[str, list[float]] = {v: [] for v in on_cpu}
    wall: dict[str, list[float]] = {v: [] for v in on_cpu}
    read_texts: dict[str, list[str]] = {}
    for r in range(config.variant_rounds):
        spent = {v: [0.0, 0.0] for v in on_cpu}
        texts_now: dict[str, list[str]] = {v: [] for v in on_cpu}
        # Batch by batch, the variants in turn (the order rotating): on a shared machine the load
        # drifts within seconds, so each batch's variants are timed under the same load.
        for b, i in enumerate(range(0, len(images), batch)):
            k = (r + b) % len(on_cpu)
            for v in on_cpu[k:] + on_cpu[:k]:
                c0, w0 = time.process_time(), time.perf_counter()
                texts_now[v] += [x.text for x in readers[v].read(images[i:i + batch])]
                spent[v][0] += time.process_time() - c0
                spent[v][1] += time.perf_counter() - w0
        for v in on_cpu:
            cpu[v].append(spent[v][0] / len(images))
            wall[v].append(spent[v][1] / len(images))
        read_texts = texts_now
        if r == 0 and not _within_budget(read_texts, texts, on_cpu, config):
            # Reading is deterministic: no round changes a CER, and a variant over the CER budget is
            # never chosen however fast, so one round says enough (and costs a third).
            record["rounds"] = 1
            break
    for v in on_cpu:
        m: dict[str, Any] = {
            "cpu_s_per_line": round(statistics.median(cpu[v]), 5),
            "cpu_s_per_line_range": [round(min(cpu[v]), 5), round(max(cpu[v]), 5)],
            "wall_s_per_line": round(statistics.median(wall[v]), 5),
            # per round: within a round the variants alternate batch by batch, so they share its load
            "speedup": round(statistics.median(f / x for f, x in zip(cpu["fp32"], cpu[v])), 3),
            "cer_vs_fp32": round(corpus_cer(read_texts[v], read_texts["fp32"]), 5),
        }
        if texts is not None:
            m["cer"] = round(corpus_cer(read_texts[v], texts), 5)
        record["measured"][v] = m
    record["choice"], record["why"] = pick_variant(record["measured"], on_cpu, config, against)
    return record


def _within_budget(read: dict[str, list[str]], texts: list[str] | None, on_cpu: list[str],
                   config: ExportConfig) -> bool:
    """Whether a variant other than fp32 reads within the CER budget (as ``pick_variant`` judges it)."""
    if texts is None:
        return any(round(corpus_cer(read[v], read["fp32"]), 5) <= config.variant_cer_margin + 1e-9 for v in on_cpu[1:])
    base = round(corpus_cer(read["fp32"], texts), 5)
    return any(round(corpus_cer(read[v], texts), 5) <= base + config.variant_cer_margin + 1e-9 for v in on_cpu[1:])


def pick_variant(measured: dict[str, dict[str, Any]], on_cpu: list[str], config: ExportConfig,
                 against: str) -> tuple[str, str]:
    """The variant ``measure_variants`` records for ``variant: auto``, and why (a sentence): the
    fastest of ``on_cpu`` (fp32 first) within the CER budget and the least speed-up, else fp32.
    ``against``: "labels" (CER on the lines' true text) or "fp32" (CER against fp32's text)."""
    key = "cer" if against == "labels" else "cer_vs_fp32"
    base = measured["fp32"][key]
    margin, need = config.variant_cer_margin, config.variant_min_speedup
    of_what = "CER" if against == "labels" else "CER against fp32's text"
    budget = f"fp32's {base:.4f} + {margin:g}" if against == "labels" else f"{margin:g}"
    fine, reasons = [], []
    for v in on_cpu[1:]:
        m = measured[v]
        if m[key] > base + margin + 1e-9:
            reasons.append(f"{v}'s {of_what} {m[key]:.4f} is over the budget ({budget}) for {m['speedup']:.2f}x "
                           "fp32's speed")
        elif m["speedup"] < need:
            reasons.append(f"{v} is within the {of_what} budget ({m[key]:.4f}; {budget}) but only "
                           f"{m['speedup']:.2f}x fp32's speed, under the {need:g}x a switch needs")
        else:
            fine.append(v)
    if not fine:
        return "fp32", "fp32: " + "; ".join(reasons)
    best = min(fine, key=lambda v: measured[v]["cpu_s_per_line"])
    m = measured[best]
    return best, (f"{best}: {m['speedup']:.2f}x fp32's speed ({m['cpu_s_per_line']:.4f} against "
                  f"{measured['fp32']['cpu_s_per_line']:.4f} CPU s/line), {of_what} {m[key]:.4f} within the "
                  f"budget ({budget})")
