"""The scalar metrics each stage logs to KFP (``Output[dsl.Metrics]``), with keys fixed across runs.

The KFP UI's run comparison lines metrics up by key, so every stage logs the same keys in every
run. A key whose value does not exist in a run (CER without ground truth, seconds per image when
every class image was reused) is left out rather than logged as a made-up number. Values are
floats (KFP stores metrics as numbers).
"""

from __future__ import annotations

import math
from typing import Any

MB = 1_000_000

EXPORT_KEYS = ("fp32_greedy_exact", "fp32_beam_exact", "int8_greedy_exact", "int8_cer_vs_fp32",
               "fp16_greedy_exact", "fp16_cer_vs_fp32", "fp32_mb", "int8_mb", "fp16_mb", "int8_size_ratio",
               "fp32_cer", "int8_cer", "int8_cer_delta", "gate_passed")
PRIOR_KEYS = ("images_made", "images_reused", "seconds_per_image")
TRAIN_KEYS = ("final_loss", "mean_loss", "steps", "steps_per_second", "peak_memory_mb")
MERGE_KEYS = ("documents_ok", "documents_failed", "lines", "cer", "lines_per_second_wall",
              "lines_per_second_per_worker", "workers", "documents_flagged", "documents_flagged_share",
              "pages_flagged", "pages_flagged_share")
SAMPLE_KEYS = ("images",)
DB_EVALUATE_KEYS = ("selected_step", "steps_judged", "dino", "clip_i", "clip_t", "class_similarity", "class_diversity",
                    "class_subject_dino", "base_dino", "base_clip_i", "base_clip_t", "base_class_diversity",
                    "base_class_subject_dino", "seconds_per_step_judged")
FINETUNE_KEYS = ("steps", "first_loss", "last_loss", "heldout_cer", "heldout_wer", "synthetic_cer", "synthetic_wer",
                 "train_lines", "heldout_lines", "train_seconds", "resumed_from_step")
EVALUATE_KEYS = ("cer", "wer", "fp32_cer", "int8_cer", "fp16_cer", "int8_cer_delta", "fp32_wer", "int8_wer", "seconds")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pick(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key in keys:
        number = _number(values.get(key))
        if number is not None:
            out[key] = round(number, 6)
    return out


def export_metrics(metrics: dict[str, Any], failed_checks: list[str] | None = None) -> dict[str, float]:
    """Parity, sizes and the gate's verdict of an OCR export (from its manifest's metrics)."""
    values = dict(metrics)
    for variant in ("fp32", "int8", "fp16"):
        if f"{variant}_bytes" in values:
            values[f"{variant}_mb"] = values[f"{variant}_bytes"] / MB
    values["gate_passed"] = 0.0 if failed_checks else 1.0
    return _pick(values, EXPORT_KEYS)


def prior_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Class images made and reused by one prior shard, and seconds per image made."""
    values = {"images_made": result.get("made"), "images_reused": result.get("reused")}
    if result.get("made"):
        values["seconds_per_image"] = result["seconds"] / result["made"]
    return _pick(values, PRIOR_KEYS)


def train_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Loss, steps, speed and peak memory of a training run (from its manifest's metrics)."""
    values = dict(metrics)
    values.setdefault("final_loss", metrics.get("loss"))
    return _pick(values, TRAIN_KEYS)


def merge_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Documents, lines, CER (with ground truth) and throughput of an OCR run (its report.json), and the
    documents and pages read with low confidence (the model may not fit them: ``inkbooth.ocr.batch.fit``),
    as counts and as shares of those judged."""
    return _pick(report, MERGE_KEYS)


def sample_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return _pick(metrics, SAMPLE_KEYS)


def dreambooth_evaluate_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Subject fidelity (DINO, CLIP-I, CLIP-T) and class preservation of the selected step, the base
    model's figures beside them, and the step chosen."""
    return _pick(metrics, DB_EVALUATE_KEYS)


def finetune_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Losses, held-out CER/WER (labelled and synthetic sets) and size of a TrOCR fine-tuning run."""
    return _pick(metrics, FINETUNE_KEYS)


def evaluate_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """CER/WER of the exported variants on the held-out lines, and the INT8 - fp32 CER delta."""
    return _pick(metrics, EVALUATE_KEYS)


def throughput(shard_summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Wall-clock and per-worker lines/s of the lines read in this run, from the shards' summaries.

    Wall clock runs from the first shard's start to the last shard's end; per worker divides by the
    seconds the shards spent reading. Shards that read nothing (all skipped) count as workers but
    add no lines.
    """
    out: dict[str, float] = {"workers": float(len(shard_summaries))}
    lines = sum(s.get("lines", 0) for s in shard_summaries)
    busy = sum(s.get("seconds", 0.0) for s in shard_summaries)
    starts = [s["started"] for s in shard_summaries if "started" in s]
    ends = [s["finished"] for s in shard_summaries if "finished" in s]
    if lines and busy > 0:
        out["lines_per_second_per_worker"] = round(lines / busy, 3)
    if lines and starts and ends and max(ends) > min(starts):
        out["lines_per_second_wall"] = round(lines / (max(ends) - min(starts)), 3)
    return out


def log(metrics_artifact: Any, values: dict[str, float]) -> None:
    """Log ``values`` on a ``dsl.Metrics`` output (one call per key)."""
    for key, value in values.items():
        metrics_artifact.log_metric(key, value)


def peak_memory_mb(device: Any = None) -> float:
    """Peak memory of this process in MB: allocated CUDA memory on a GPU, else the peak resident set."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        return round(torch.cuda.max_memory_allocated(device) / MB, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB, 1)  # ru_maxrss is KiB on Linux
