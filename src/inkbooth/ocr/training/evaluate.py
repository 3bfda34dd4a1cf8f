"""evaluate_trocr: how well an exported model reads the lines its training held out.

The held-out sets are the ones fine-tuning evaluated on (the labelled held-out split of the prepared
lines, and the run's fixed set of synthetic lines), read here the way OCR reads: with ONNX Runtime,
beam search, each exported variant. The result says what the INT8 model
costs against fp32 on real text (``int8_cer_delta``), next to the export's parity numbers, which
compare INT8 with fp32 output rather than with the truth.

May import ``inkbooth.ocr.recognition`` and the other training modules.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.config import from_dict, option, to_dict
from inkbooth.ocr.recognition.exported import auto_variant
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer
from inkbooth.ocr.recognition.text import error_rates
from inkbooth.ocr.training import finetune
from inkbooth.ocr.training import lines as linedata
from inkbooth.ocr.training.scoring import EvalLine
from inkbooth.ocr.training.synth import LineSynth

log = logging.getLogger(__name__)


KIND = "ocr-evaluation"


@dataclasses.dataclass
class EvaluateConfig:
    """How the held-out lines are read."""

    variants: list[str] = option(["fp32", "int8"], "exported variants to read with (fp16 needs CUDA)")
    num_beams: int = option(4, "beam search width, as OCR runs")
    batch_size: int = option(16, "lines per forward pass")
    threads: int = option(0, "intra-op threads (0: library default)")

    def validate(self) -> None:
        bad = sorted(set(self.variants) - {"fp32", "int8", "fp16"})
        if bad or not self.variants:
            raise ValueError(f"variants: expected some of fp32, int8, fp16, got {self.variants}")
        if self.num_beams < 1 or self.batch_size < 1:
            raise ValueError("num_beams and batch_size must be at least 1")


def run_heldout_sets(trained: str, lines: str | None = None) -> dict[str, list[EvalLine]]:
    """The evaluation sets of the fine-tuning run at ``trained`` (with its prepared ``lines``)."""
    training = json.loads(artifacts.read_text(trained, "training.json"))  # its current version
    config = from_dict(finetune.FinetuneConfig, training["config"], source=f"{trained}/training.json")
    lineset = linedata.load_lines(lines) if lines else None
    synth = LineSynth(config.synthetic) if config.synthetic is not None else None
    return finetune.heldout_sets(lineset, synth, config)


def evaluate_trocr(onnx_model: str, trained: str, output: str, config: EvaluateConfig | None = None, *,
                   lines: str | None = None) -> artifacts.Manifest:
    """Read the held-out lines of ``trained`` with each variant of the export ``onnx_model``.

    Publishes ``evaluation.json`` (CER and WER per variant and set, the INT8 - fp32 CER delta) and
    ``predictions.jsonl`` at ``output``. ``cer`` in the metrics is the headline set's CER of the
    variant OCR runs on CPU by default (``variant: auto``: the export's measured choice, see
    ``exported.auto_variant``), among those evaluated.
    """
    config = config or EvaluateConfig()
    config.validate()
    started = time.perf_counter()
    sets = run_heldout_sets(trained, lines)
    if not sets:
        raise ValueError(f"{trained}: the run held nothing out (no labelled held-out lines, no synthetic set)")
    model_dir = artifacts.fetch(onnx_model)
    metrics: dict[str, Any] = {}
    predictions = []
    for variant in config.variants:
        rec = Recognizer(model_dir, RecognizeConfig(variant=variant, num_beams=config.num_beams, token_boxes=False,
                                                    batch_size=config.batch_size, threads=config.threads))
        for name, items in sets.items():
            texts = []
            for i in range(0, len(items), config.batch_size):
                texts.extend(r.text for r in rec.read([item[0] for item in items[i:i + config.batch_size]]))
            pairs = [(h, item[1]) for h, item in zip(texts, items)]
            rates = error_rates(pairs)
            metrics[f"{variant}_{name}_cer"], metrics[f"{variant}_{name}_wer"] = rates["cer"], rates["wer"]
            predictions.extend({"variant": variant, "set": name, "font": f, "kind": k, "text": t, "read": h}
                               for h, (_, t, f, k) in zip(texts, items))
    headline = "heldout" if "heldout" in sets else "synthetic"
    for variant in config.variants:
        metrics[f"{variant}_cer"] = metrics[f"{variant}_{headline}_cer"]
        metrics[f"{variant}_wer"] = metrics[f"{variant}_{headline}_wer"]
    if "int8" in config.variants and "fp32" in config.variants:
        metrics["int8_cer_delta"] = round(metrics["int8_cer"] - metrics["fp32_cer"], 5)
    onnx_manifest = artifacts.read_manifest(onnx_model)
    # The headline is the variant OCR runs on CPU by default: the export's measured choice.
    default, why = auto_variant(set(config.variants), "cpu", onnx_manifest.metrics.get("variants"))
    metrics.update({"cer": metrics[f"{default}_cer"], "wer": metrics[f"{default}_wer"], "variant": default,
                    "variant_why": why, "headline_set": headline, "lines": {k: len(v) for k, v in sets.items()},
                    "seconds": round(time.perf_counter() - started, 2)})
    with storage.temp_dir("inkbooth-eval-") as tmp:
        work = Path(tmp)
        (work / "evaluation.json").write_text(json.dumps({"metrics": metrics, "config": to_dict(config)}, indent=2))
        (work / "predictions.jsonl").write_text(
            "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8")
        inputs = {"onnx_model": onnx_manifest.content_hash, "trained": artifacts.read_manifest(trained).content_hash}
        if lines:
            inputs["lines"] = artifacts.read_manifest(lines).content_hash
        return artifacts.publish(work, output, kind=KIND, inputs=inputs, config=to_dict(config), metrics=metrics,
                                 lineage={"onnx_model": onnx_model, "trained": trained, "lines": lines or ""},
                                 overwrite=True)
