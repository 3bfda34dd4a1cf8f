"""sample: images from an exported model for prompts that use the identifier, with a grid."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from inkbooth import artifacts, storage
from inkbooth.config import option, to_dict
from inkbooth.dreambooth.prior import image_seed, make_scheduler, pick_device
from inkbooth.imaging import grid

KIND = "dreambooth-samples"


@dataclasses.dataclass
class SampleConfig:
    """What to draw."""

    prompts: list[str] = option(["a photo of sks dog on the beach", "a painting of sks dog in oil style"],
                                "prompts, normally using the identifier in new contexts")
    negative_prompt: str = option("", "negative prompt")
    images_per_prompt: int = option(2, "images per prompt")
    scheduler: Literal["dpmsolver++", "pndm", "ddim", "euler"] = option("dpmsolver++", "sampler")
    steps: int = option(25, "sampling steps")
    guidance_scale: float = option(7.5, "classifier-free guidance scale")
    seed: int = option(0, "seed; image j of prompt i uses a seed derived from (seed, i, j)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where to run")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = option("auto", "compute dtype")


def sample(model: str, output: str, config: SampleConfig) -> artifacts.Manifest:
    """Draw ``images_per_prompt`` images per prompt from the model at ``model`` (registry version or folder)."""
    import torch
    from diffusers import StableDiffusionPipeline

    device, dtype = pick_device(config.device, config.dtype)
    folder = artifacts.fetch(model) if artifacts.is_published(model) else Path(model)
    if (folder / "diffusers").is_dir():
        folder = folder / "diffusers"
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(config.scheduler, pipe.scheduler.config)
    images, index = [], []
    for i, prompt in enumerate(config.prompts):
        gens = [torch.Generator("cpu").manual_seed(image_seed(config.seed, i * 1000 + j))
                for j in range(config.images_per_prompt)]
        out = pipe([prompt] * config.images_per_prompt, negative_prompt=[config.negative_prompt] * config.images_per_prompt,
                   num_inference_steps=config.steps, guidance_scale=config.guidance_scale, generator=gens).images
        for j, img in enumerate(out):
            images.append(img)
            index.append({"file": f"images/{i:03d}-{j:02d}.png", "prompt": prompt, "image": j})
    with storage.temp_dir("inkbooth-sample-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        for img, entry in zip(images, index):
            img.save(work / entry["file"])
        grid(images, config.images_per_prompt).save(work / "grid.png")
        (work / "samples.json").write_text(json.dumps(index, indent=1))
        source = artifacts.read_manifest(model).content_hash if artifacts.is_published(model) else ""
        return artifacts.publish(work, output, kind=KIND, config=to_dict(config), inputs={"model": source},
                                 metrics={"images": len(images)}, overwrite=True)
