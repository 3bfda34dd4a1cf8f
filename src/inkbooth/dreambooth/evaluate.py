"""evaluate_dreambooth: how well each kept step of a DreamBooth run learned its subject, against the
base model, and which step to register.

The candidates are the base model (the baseline), every snapshot the run kept
(``snapshots/step-N/``, see ``TrainConfig.snapshot_every``) and its last step (``model/``). Each
draws ``images_per_prompt`` pictures for every evaluation prompt (the paper's list for objects or
live subjects, or the user's, with the identifier and class filled in) and ``class_images``
pictures of the class prompt, with the same noise for every candidate, so that figures differ by
the weights alone. The figures (``inkbooth.dreambooth.fidelity``: DINO, CLIP-I, CLIP-T, class
similarity, diversity and drift) and the chosen step (``select``) are published as an artifact:

* ``evaluation.json``: the config, the prompts, one row per candidate, the selection and its reason;
* ``grids/step-N.png`` and ``grids/class-step-N.png`` (``grids/base.png``...): a row per prompt
  (the first ``GRID_PROMPTS``), one column per picture; the class pictures in one row.

The base model, the subject pictures and the class prompt come from the training artifact's lineage
and config; models load from a hub id, a folder or ``s3://`` like every other model here.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.config import to_dict
from inkbooth.dreambooth.fidelity import (
    METRICS,
    EvaluateConfig,
    class_figures,
    class_noun,
    fill,
    select_step,
    subject_figures,
)

log = logging.getLogger(__name__)

KIND = "dreambooth-evaluation"
EVALUATION = "evaluation.json"
GRID_PROMPTS = 8
CLASS_SEED_OFFSET = 1_000_000

__all__ = ["EVALUATION", "KIND", "EvaluateConfig", "candidates", "evaluate_dreambooth", "load_candidate",
           "read_evaluation"]


def candidates(folder: Path, training: dict[str, Any]) -> list[tuple[int, str]]:
    """(step, path in the training artifact) of every trained step that can be judged, oldest first."""
    last = int(training["metrics"]["steps"])
    found = [(int(p.name.rsplit("-", 1)[-1]), f"snapshots/{p.name}")
             for p in sorted((folder / "snapshots").glob("step-*")) if p.is_dir()]
    return sorted([(s, rel) for s, rel in found if s < last] + [(last, "model")])


def load_candidate(folder: Path, rel: str, base: Path, device: str, dtype: Any) -> Any:
    """The pipeline of one candidate: ``model`` (the last step), a snapshot (the last step's pipeline
    with the snapshot's UNet and text encoder, or the base with a LoRA snapshot fused), or the base."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from inkbooth.dreambooth.prior import load_pipeline

    if rel == "base":
        return load_pipeline(base, device, dtype)
    if rel == "model":
        return load_pipeline(folder / "model", device, dtype)
    snap = folder / rel
    if (snap / "lora").is_dir():
        pipe = load_pipeline(base, device, dtype)
        pipe.load_lora_weights(str(snap / "lora"))
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    else:
        pipe = load_pipeline(folder / "model", device, dtype)
        pipe.unet = UNet2DConditionModel.from_pretrained(snap / "unet", torch_dtype=dtype).to(
            device, memory_format=torch.channels_last)
    if (snap / "text_encoder").is_dir():
        pipe.text_encoder = CLIPTextModel.from_pretrained(snap / "text_encoder", torch_dtype=dtype).to(device)
    return pipe


def _draw(pipe: Any, prompts: list[str], seeds: list[int], config: EvaluateConfig, batch: int = 8) -> list[Any]:
    import torch

    from inkbooth.dreambooth.prior import image_seed, make_scheduler

    pipe.scheduler = make_scheduler(config.scheduler, pipe.scheduler.config, config.timestep_spacing)
    out: list[Any] = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(image_seed(config.seed, s)) for s in seeds[i:i + batch]]
        with torch.no_grad():
            out += pipe(prompts[i:i + batch], num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
                        generator=gens).images
    return out


def _grid(pictures: list[Any], columns: int, rows: int) -> Any:
    from inkbooth.imaging import grid

    return grid(pictures[: columns * rows], columns)


def evaluate_dreambooth(trained: str, output: str, config: EvaluateConfig, *, base_model: str = "",
                        instance_images: str = "") -> artifacts.Manifest:
    """Judge the base model and every kept step of the training artifact at ``trained``; publish the
    figures and the chosen step at ``output``. ``base_model`` and ``instance_images`` default to the
    ones the run trained from (its lineage)."""
    from inkbooth import judges, models, runtime
    from inkbooth.dreambooth.images import load_images
    from inkbooth.dreambooth.prior import pick_device

    config.validate()
    runtime.limit_torch_threads()
    started = time.perf_counter()
    folder = artifacts.fetch(trained)
    manifest = artifacts.read_manifest(trained)
    training = {"metrics": manifest.metrics, "config": manifest.config, "lineage": manifest.lineage}
    base_model = base_model or training["lineage"].get("base_model", "")
    instance_images = instance_images or training["lineage"].get("instance_images", "")
    if not base_model or not instance_images:
        raise ValueError(f"{trained}: its lineage names no base model or subject images; pass them")
    identifier = training["config"].get("identifier", "sks")
    class_prompt = training["config"].get("class_prompt", "")
    cls = class_noun(class_prompt, config.class_noun)
    templates = config.prompt_templates()
    prompts = [fill(t, identifier, cls) for t in templates for _ in range(config.images_per_prompt)]
    texts = [fill(t, "", cls) for t in templates for _ in range(config.images_per_prompt)]
    seeds = [i * 1000 + j for i in range(len(templates)) for j in range(config.images_per_prompt)]
    class_seeds = [CLASS_SEED_OFFSET + j for j in range(config.class_images)]

    todo = candidates(folder, training)
    if config.only_steps:
        missing = sorted(set(config.only_steps) - {s for s, _ in todo})
        if missing:
            raise ValueError(f"evaluate only_steps: step(s) {missing} were not kept by the run "
                             f"(kept: {[s for s, _ in todo]}; set snapshot_every in the train config)")
        todo = [(s, rel) for s, rel in todo if s in config.only_steps]
    device, dtype = pick_device(config.device, config.dtype)
    base = models.resolve(base_model)
    dino = judges.Dino(config.dino_model, device=device)
    clip = judges.Clip(config.clip_model, device=device)
    refs, _ = load_images(instance_images, "subject images")
    references = (dino.images(refs), clip.images(refs))

    rows: list[dict[str, Any]] = []
    base_class = None
    with storage.temp_dir("inkbooth-evaluate-") as tmp:
        work = Path(tmp)
        (work / "grids").mkdir()
        for step, rel in [(0, "base")] + todo:
            t0 = time.perf_counter()
            pipe = load_candidate(folder, rel, base, device, dtype)
            pictures = _draw(pipe, prompts, seeds, config)
            class_pictures = _draw(pipe, [class_prompt] * len(class_seeds), class_seeds, config)
            del pipe
            class_dino = dino.images(class_pictures)
            base_class = class_dino if rel == "base" else base_class
            row = {"step": step, "source": rel, **subject_figures(dino, clip, pictures, texts, references),
                   **class_figures(class_dino, base_class, references[0])}
            row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            row["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            name = "base" if rel == "base" else f"step-{step:08d}"
            _grid(pictures, config.images_per_prompt, GRID_PROMPTS).save(work / "grids" / f"{name}.png")
            _grid(class_pictures, len(class_pictures), 1).save(work / "grids" / f"class-{name}.png")
            log.info("evaluated %s in %.1f s: %s", name, row["seconds"],
                     ", ".join(f"{m} {row[m]:.4f}" for m in METRICS))
        chosen = select_step([r for r in rows if r["source"] != "base"], config)
        record = {"config": to_dict(config), "identifier": identifier, "class_prompt": class_prompt,
                  "prompts": [fill(t, identifier, cls) for t in templates], "rows": rows, "selected": chosen}
        (work / EVALUATION).write_text(json.dumps(record, indent=1), encoding="utf-8")
        won = next(r for r in rows if r["step"] == chosen["step"] and r["source"] != "base")
        metrics = {"selected_step": chosen["step"], "steps_judged": len(rows) - 1,
                   **{m: won[m] for m in METRICS}, **{f"base_{m}": rows[0][m] for m in METRICS if m != "class_similarity"},
                   "seconds_per_step_judged": round(sum(r["seconds"] for r in rows) / len(rows), 2),
                   "evaluate_seconds": round(time.perf_counter() - started, 2)}
        return artifacts.publish(work, output, kind=KIND, config=to_dict(config), metrics=metrics,
                                 inputs={"trained": manifest.content_hash},
                                 lineage={"trained": trained, "base_model": base_model, "instance_images": instance_images,
                                          "selected_step": chosen["step"], "selection": chosen["reason"]},
                                 overwrite=True)


def read_evaluation(uri: str) -> dict[str, Any]:
    """``evaluation.json`` of an evaluation artifact (or of a model version that carries one)."""
    for path in (EVALUATION, f"evaluation/{EVALUATION}"):
        try:
            return json.loads(artifacts.read_text(uri, path))
        except (storage.NotFoundError, artifacts.NotPublishedError, FileNotFoundError):
            continue
    raise ValueError(f"{uri}: no {EVALUATION}; not a DreamBooth evaluation or an evaluated model version")
