"""export_checkpoint: a trained DreamBooth model as a registry version in the formats people load.

* ``diffusers/``: the pipeline in diffusers layout, safetensors, in fp32, fp16 or bf16;
* ``<name>.safetensors``: one file in the original Stable Diffusion layout (AUTOMATIC1111, ComfyUI);
* ``lora/``: the LoRA weights alone, when the run trained LoRA;
* ``training.json`` (metrics, lineage, config, logged loss history) and ``validation/``: what the
  training showed, for the version's report.

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


def export_checkpoint(trained: str, registry: str, config: ExportCheckpointConfig,
                      work_dir: str | None = None, *, sinks: list[Any] | None = None) -> tuple[str, artifacts.Manifest]:
    """Export the training artifact at ``trained`` and register it, in the registry and in every one of
    ``sinks`` (``inkbooth.sinks.SinkConfig`` or its fields); returns (version URI, manifest).

    A sink that fails raises ``inkbooth.sinks.SinkError`` once the version is in the registry: a rerun
    finds the same version (same content) and registers it where it is missing.
    """
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from inkbooth.dreambooth.singlefile import pipeline_to_original

    config.validate()
    sink_configs = registry_sinks.reachable(sinks, registry)  # refused before anything is exported
    source = artifacts.fetch(trained)
    training = artifacts.read_manifest(trained)
    with storage.temp_dir("inkbooth-export-") as tmp:
        out = Path(work_dir) if work_dir else Path(tmp) / "export"
        out.mkdir(parents=True, exist_ok=True)
        pipe = StableDiffusionPipeline.from_pretrained(source / "model", safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=True)
        pipe.to(_dtype(config.dtype)).save_pretrained(out / "diffusers", safe_serialization=True)
        if config.single_file:
            pipe.to(_dtype(config.single_file_dtype))
            # One metadata key only: safetensors writes the metadata map in hash order, so more keys
            # would make identical exports differ byte for byte (lineage is in the manifest anyway).
            save_file(pipeline_to_original(pipe), str(out / f"{config.name}.safetensors"), metadata={"format": "pt"})
        if (source / "lora").is_dir():
            shutil.copytree(source / "lora", out / "lora", dirs_exist_ok=True)
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
            metrics=training.metrics, lineage={**training.lineage, "trained": training.content_hash},
            inputs={"trained": training.content_hash, **training.inputs},
        )
    registry_sinks.register_version(sink_configs, reg.uri(config.name, version), manifest)
    return reg.uri(config.name, version), manifest
