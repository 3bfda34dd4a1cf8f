"""What a DreamBooth training run writes besides its weights in memory: full-state checkpoints,
snapshots of the weights, validation images, the TensorBoard tracker choice, and the trained
pipeline published as an artifact.

Holds _tensorboard_or_none, _shared_staging, _save_checkpoint, _save_snapshot, _collect_snapshots,
_inference_pipeline, _validate and _save_pipeline, which the loop in ``inkbooth.dreambooth.train`` calls.

A *snapshot* is the trainable weights alone at a step (``unet/`` and, with text-encoder training,
``text_encoder/``; ``lora/`` for a LoRA run), published beside the run's checkpoints
(``<run>/snapshots/step-N``) as it is taken, so that a resumed run still has the ones taken before
it was stopped; the finished artifact carries all of them under ``snapshots/step-N/``, for
``inkbooth.dreambooth.evaluate`` to judge and the export to register one of instead of the last. May import the ``inkbooth``
base modules (artifacts, checkpoints, config) and ``inkbooth.dreambooth.settings``. torch, diffusers, accelerate and peft are imported
inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from inkbooth import artifacts
from inkbooth import checkpoints as ckpt
from inkbooth.config import to_dict
from inkbooth.dreambooth.settings import KIND, TrainConfig

log = logging.getLogger(__name__)



def _tensorboard_or_none() -> str | None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        log.warning("tensorboard is not installed: no training logs (pip install 'inkbooth[train-cpu]')")
        return None
    return "tensorboard"


def _shared_staging(accelerator: Any) -> tuple[Any, Path]:
    """(owner, path) of a temporary staging folder shared by all processes; only the main one owns it."""
    from accelerate.utils import broadcast_object_list

    owner = tempfile.TemporaryDirectory(prefix="inkbooth-staging-") if accelerator.is_main_process else None
    path = [owner.name if owner is not None else None]
    broadcast_object_list(path)
    return owner, Path(path[0])


def _save_checkpoint(accelerator: Any, run: ckpt.RunCheckpoints, staging_root: Path, step: int,
                     config: TrainConfig) -> None:
    """Full state as this run's checkpoint at ``step`` (manifest last), then prune beyond the limit.

    Every process writes its part (RNG states are per process) into one staging folder outside the
    output that all of them share; the main process publishes it once all are done.
    """
    import shutil

    staging = staging_root / ckpt.step_name(step)
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.save(staging, step, metrics={"processes": accelerator.num_processes}, config=to_dict(config))
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()


SNAPSHOTS = "snapshots"
SNAPSHOT_KIND = "dreambooth-snapshot"


def _save_snapshot(accelerator: Any, run: ckpt.RunCheckpoints, unet: Any, text_encoder: Any, config: TrainConfig,
                   step: int) -> None:
    """The trainable weights at ``step``, published beside the run's checkpoints (main process only)."""
    from inkbooth import storage

    if not accelerator.is_main_process:
        return
    unet, text_encoder = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
    with storage.temp_dir("inkbooth-snapshot-") as tmp:
        work = Path(tmp)
        if config.lora_rank:
            from diffusers import StableDiffusionPipeline
            from peft.utils import get_peft_model_state_dict

            StableDiffusionPipeline.save_lora_weights(work / "lora", unet_lora_layers=get_peft_model_state_dict(unet),
                                                      safe_serialization=True)
        else:
            unet.save_pretrained(work / "unet", safe_serialization=True)
        if config.train_text_encoder:
            text_encoder.save_pretrained(work / "text_encoder", safe_serialization=True)
        artifacts.publish(work, storage.join(run.uri, SNAPSHOTS, ckpt.step_name(step)), kind=SNAPSHOT_KIND,
                          metrics={"step": step}, lineage={"run": run.key}, overwrite=True)


def _collect_snapshots(run: ckpt.RunCheckpoints, work: Path, last_step: int) -> list[int]:
    """Copy the run's snapshots (steps before ``last_step``) into ``work/snapshots/step-N``; their steps."""
    import shutil

    from inkbooth import storage

    root = storage.join(run.uri, SNAPSHOTS)
    names = sorted({key.split("/")[0] for key in storage.list_files(root) if key.endswith(artifacts.MANIFEST)})
    steps = []
    for name in names:
        step = int(name.rsplit("-", 1)[-1])
        if step >= last_step or not artifacts.is_published(storage.join(root, name)):
            continue  # a later step of an abandoned timeline, or one still being written
        shutil.copytree(artifacts.fetch(storage.join(root, name)), work / SNAPSHOTS / name,
                        ignore=shutil.ignore_patterns(artifacts.MANIFEST, ".*"))
        steps.append(step)
    return steps


def _inference_pipeline(folder: Path, unet: Any, text_encoder: Any, dtype: Any) -> Any:
    """The base pipeline with our UNet (and text encoder, when one was trained) swapped in."""
    from diffusers import StableDiffusionPipeline

    parts = {"unet": unet} if text_encoder is None else {"unet": unet, "text_encoder": text_encoder}
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True, torch_dtype=dtype, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _validate(accelerator: Any, folder: Path, unet: Any, text_encoder: Any, config: TrainConfig, step: int,
              out: Path, dtype: Any) -> None:
    """Validation images with their own generator (training's RNG streams are not touched)."""
    import numpy as np
    import torch

    pipe = _inference_pipeline(folder, accelerator.unwrap_model(unet),
                               accelerator.unwrap_model(text_encoder) if config.train_text_encoder else None, dtype)
    pipe.to(accelerator.device)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    with torch.no_grad():
        images = pipe(config.validation_prompts, num_inference_steps=config.validation_steps, generator=gen).images
    target = out / "validation" / f"step-{step:08d}"
    target.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(target / f"{i:02d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation", np.stack([np.asarray(im) for im in images]), step,
                                      dataformats="NHWC")


def _save_pipeline(accelerator: Any, folder: Path, unet: Any, text_encoder: Any, config: TrainConfig, work: Path,
                   out: Path, metrics: dict[str, Any], history: list[dict[str, Any]],
                   lineage: dict[str, Any]) -> artifacts.Manifest:
    """The trained pipeline (diffusers folder, safetensors) assembled in ``work`` with the logs, the
    logged loss history and validation images, and published to ``out`` with its lineage: only what
    this run wrote."""
    import torch

    unet = accelerator.unwrap_model(unet)
    text_encoder = accelerator.unwrap_model(text_encoder)
    model_dir = work / "model"
    if config.lora_rank:
        from diffusers import StableDiffusionPipeline
        from peft.utils import get_peft_model_state_dict

        StableDiffusionPipeline.save_lora_weights(work / "lora", unet_lora_layers=get_peft_model_state_dict(unet),
                                                  safe_serialization=True)
        unet.fuse_lora()  # the full pipeline carries the adapter merged into the weights
        unet.unload_lora()
    pipe = _inference_pipeline(folder, unet, text_encoder if config.train_text_encoder else None, torch.float32)
    pipe.save_pretrained(model_dir, safe_serialization=True)
    (work / "training.json").write_text(json.dumps({"config": to_dict(config), "metrics": metrics,
                                                    "lineage": lineage, "history": history}, indent=2))
    return artifacts.publish(work, str(out), kind=KIND, config=to_dict(config), metrics=metrics, lineage=lineage,
                             inputs={"base_model": lineage["base_model_hash"],
                                     "instance_images": lineage["instance_images_hash"],
                                     "class_images": lineage["class_images_hash"]}, overwrite=True)
