"""export_checkpoint: a trained DreamBooth model as a registry version in the formats people load.

* ``diffusers/``: the pipeline in diffusers layout, safetensors, in fp32, fp16 or bf16;
* ``<name>.safetensors``: one file in the original Stable Diffusion layout (AUTOMATIC1111, ComfyUI);
* ``lora/``: the LoRA weights alone, when the run trained LoRA;
* ``training.json`` (metrics, lineage, config, logged loss history) and ``validation/``: what the
  training showed, for the version's report;
* ``evaluation/`` (with an ``evaluation``): the figures of every step judged and their grids.

With an ``evaluation`` of the run (``inkbooth.dreambooth.evaluate``), the step it selected is
exported, a kept snapshot instead of the last step when ``select: best`` chose one, and the version's
lineage says which step won and why (``selected_step``, ``selection``); its metrics carry that
step's figures beside the training's.

The result is registered as the next version of ``models/<name>/`` with the training lineage (base
model, subject images, class images, config, metrics); identical content maps to its old version.
Then the version is registered in each model registry ``sinks`` names (``inkbooth.sinks``: MLflow,
Kubeflow Model Registry) under the same name and version.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Literal

from inkbooth import artifacts, storage
from inkbooth import sinks as registry_sinks
from inkbooth.config import option, to_dict
from inkbooth.dreambooth.fidelity import METRICS

KIND = "dreambooth-export"


@dataclasses.dataclass
class ExportCheckpointConfig:
    """Formats and precision of an exported DreamBooth model."""

    name: str = option("dreambooth", "model name in the registry (a-z, 0-9, '.', '_', '-')")
    dtype: Literal["fp32", "fp16", "bf16"] = option("fp16", "precision of the diffusers folder")
    single_file: bool = option(True, "also write one .safetensors in the original SD layout")
    single_file_dtype: Literal["fp32", "fp16", "bf16"] = option("fp16", "precision of the single file")
    alias: str = option("latest", "registry alias moved to the new version ('' for none)")

    def validate(self) -> None:
        artifacts.Registry.check_name(self.name)
        if self.alias:  # checked before anything is exported or registered
            artifacts.Registry.check_alias(self.alias)


def _dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _selection(evaluation: str, training: artifacts.Manifest) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(the evaluation's record, the row of the step it selected, its content hash), checked to be of this training."""
    from inkbooth.dreambooth.evaluate import read_evaluation

    judged = artifacts.read_manifest(evaluation)
    if judged.inputs.get("trained") != training.content_hash:
        raise ValueError(f"evaluation {evaluation} judged another training artifact "
                         f"({judged.inputs.get('trained', '?')[:12]}, not {training.content_hash[:12]})")
    record = read_evaluation(evaluation)
    step = record["selected"]["step"]
    row = next(r for r in record["rows"] if r["step"] == step and r["source"] != "base")
    return record, row, judged.content_hash


def export_checkpoint(trained: str, registry: str, config: ExportCheckpointConfig,
                      work_dir: str | None = None, *, sinks: list[Any] | None = None,
                      evaluation: str = "") -> tuple[str, artifacts.Manifest]:
    """Export the training artifact at ``trained`` and register it, in the registry and in every one of
    ``sinks`` (``inkbooth.sinks.SinkConfig`` or its fields); returns (version URI, manifest).

    A sink that fails raises ``inkbooth.sinks.SinkError`` once the version is in the registry: a rerun
    finds the same version (same content) and registers it where it is missing. ``evaluation``: an
    evaluation artifact of ``trained``, whose selected step is exported.
    """
    import torch
    from safetensors.torch import save_file

    from inkbooth import models
    from inkbooth.dreambooth.evaluate import load_candidate
    from inkbooth.dreambooth.singlefile import pipeline_to_original

    config.validate()
    sink_configs = registry_sinks.reachable(sinks, registry)  # refused before anything is exported
    source = artifacts.fetch(trained)
    training = artifacts.read_manifest(trained)
    record, row, judged = _selection(evaluation, training) if evaluation else ({}, {"source": "model"}, "")
    chosen = source / row["source"]
    with storage.temp_dir("inkbooth-export-") as tmp:
        out = Path(work_dir) if work_dir else Path(tmp) / "export"
        out.mkdir(parents=True, exist_ok=True)
        base = models.resolve(training.lineage["base_model"]) if (chosen / "lora").is_dir() else source / "model"
        pipe = load_candidate(source, row["source"], base, "cpu", torch.float32)
        pipe.unet.to(memory_format=torch.contiguous_format)  # saved as trained, not as sampled fastest
        pipe.to(_dtype(config.dtype)).save_pretrained(out / "diffusers", safe_serialization=True)
        if config.single_file:
            pipe.to(_dtype(config.single_file_dtype))
            # One metadata key only: safetensors writes the metadata map in hash order, so more keys
            # would make identical exports differ byte for byte (lineage is in the manifest anyway).
            save_file(pipeline_to_original(pipe), str(out / f"{config.name}.safetensors"), metadata={"format": "pt"})
        lora = chosen / "lora" if row["source"] != "model" else source / "lora"
        if lora.is_dir():
            shutil.copytree(lora, out / "lora", dirs_exist_ok=True)
        if evaluation:
            shutil.copytree(artifacts.fetch(evaluation), out / "evaluation", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(artifacts.MANIFEST, ".*"))
        selected = {"selected_step": record["selected"]["step"], "selection": record["selected"]["reason"],
                    "evaluation": judged} if evaluation else {}
        figures = {k: row[k] for k in METRICS if k in row}
        # The version carries its training evidence (loss history, validation images) for its report.
        if (source / "validation").is_dir():
            shutil.copytree(source / "validation", out / "validation", dirs_exist_ok=True)
        history = json.loads((source / "training.json").read_text()).get("history", []) \
            if (source / "training.json").is_file() else []
        (out / "training.json").write_text(json.dumps({"metrics": training.metrics, "lineage": training.lineage,
                                                       "config": training.config, "history": history}, indent=2))
        reg = artifacts.Registry(registry)
        version, manifest = reg.register(
            config.name, out, kind=KIND, alias=config.alias or None, config={"export": to_dict(config),
                                                                            "train": training.config},
            metrics={**training.metrics, **figures, **({"selected_step": selected["selected_step"]} if selected else {})},
            lineage={**training.lineage, "trained": training.content_hash, **selected},
            inputs={"trained": training.content_hash, **training.inputs},
        )
    registry_sinks.register_version(sink_configs, reg.uri(config.name, version), manifest)
    return reg.uri(config.name, version), manifest
