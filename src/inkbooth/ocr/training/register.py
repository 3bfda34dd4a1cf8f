"""register_trocr: a fine-tuned checkpoint becomes the next version of a model in the registry.

May import the other training modules, and ``inkbooth.sinks`` (the model registries beside ours).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth import sinks as registry_sinks
from inkbooth.config import option
from inkbooth.ocr.training.finetune import KIND, LOGS


def copy_checkpoint(trained: str, dest: Path) -> artifacts.Manifest:
    """The checkpoint and training.json of a fine-tuning output, verified, into ``dest`` (logs left out)."""
    manifest = artifacts.read_manifest(trained)
    if manifest.kind != KIND:
        raise ValueError(f"{trained}: is a {manifest.kind!r} artifact, not a fine-tuned TrOCR ({KIND})")
    shutil.copytree(artifacts.fetch(trained), dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(LOGS, artifacts.MANIFEST))
    return manifest


@dataclasses.dataclass
class RegisterConfig:
    """Which model a fine-tuned checkpoint becomes a version of, and on what condition."""

    name: str = option("trocr", "model name in the registry (a-z, 0-9, '.', '_', '-')")
    alias: str = option("latest", "alias moved to the new version ('' for none)")
    max_cer: float = option(1.0, "refuse to register when the evaluated CER of the exported model exceeds this")

    def validate(self) -> None:
        artifacts.Registry.check_name(self.name)
        if not 0.0 <= self.max_cer <= 1.0:
            raise ValueError(f"max_cer must be between 0 and 1, got {self.max_cer}")


def register_trocr(trained: str, registry: str, config: RegisterConfig | None = None, *,
                   onnx_model: str | None = None, evaluation: str | None = None,
                   sinks: list[Any] | None = None) -> tuple[str, artifacts.Manifest]:
    """Make a fine-tuning output the next version of ``config.name``; returns (version URI, manifest).

    The version holds the Hugging Face checkpoint (so it is itself a model source for OCR and
    further fine-tuning) with training.json, and the evaluation and export parity where given. Its
    lineage names the base checkpoint, the data and their hashes; its metrics, the held-out error
    rates. Identical content maps to the existing version. The version is then registered in every
    model registry of ``sinks`` (``inkbooth.sinks``) too; one that fails raises ``SinkError``, and a
    rerun registers it where it is missing.
    """
    config = config or RegisterConfig()
    config.validate()
    sink_configs = registry_sinks.reachable(sinks, registry)
    ev = artifacts.read_manifest(evaluation) if evaluation else None
    worst = ev.metrics.get("cer") if ev else None
    if worst is not None and worst > config.max_cer:  # before anything is copied
        raise ValueError(f"{trained}: evaluated CER {worst:.4f} exceeds max_cer = {config.max_cer}; not registered")
    extra_inputs = {}
    reg = artifacts.Registry(registry)
    with storage.temp_dir("inkbooth-register-") as tmp:
        work = Path(tmp)
        trained_manifest = copy_checkpoint(trained, work)
        metrics = dict(trained_manifest.metrics)
        if ev is not None:
            metrics.update({f"eval_{k}": v for k, v in ev.metrics.items()})
            extra_inputs["evaluation"] = ev.content_hash
            shutil.copy2(artifacts.fetch(evaluation) / "evaluation.json", work / "evaluation.json")
        if onnx_model:
            onnx = artifacts.read_manifest(onnx_model)
            metrics.update({f"parity_{k}": v for k, v in onnx.metrics.items()})
            extra_inputs["onnx_model"] = onnx.content_hash
        version, manifest = reg.register(
            config.name, work, kind=KIND, alias=config.alias or None,
            inputs={**trained_manifest.inputs, "trained": trained_manifest.content_hash, **extra_inputs},
            config=trained_manifest.config, metrics=metrics,
            lineage={**trained_manifest.lineage, "trained": trained})
    registry_sinks.register_version(sink_configs, reg.uri(config.name, version), manifest)
    return reg.uri(config.name, version), manifest
