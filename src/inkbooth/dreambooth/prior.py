"""generate_prior_images: class images for prior preservation, content-keyed and resumable.

The images for one request live under ``<output>/<key>/`` where the key hashes everything that
decides their pixels: the base model's content hash, prompt, negative prompt, scheduler, timestep
spacing, steps, guidance, size and seed. Image ``i`` is drawn from its own generator seeded from (seed, i), so any
image can be regenerated alone and a rerun (or another shard) makes only the missing ones. When
the set is complete a manifest is published there; until then readers see no finished artifact.

Classifier-free guidance runs conditional and unconditional in one batched UNet pass (diffusers'
pipeline concatenates them), with DPM-Solver++ at 20 steps on "trailing" timesteps by default
instead of the 50 PNDM steps (51 UNet calls) of the pipeline's default. Trailing timesteps start at
the noisiest training step; "leading" ones (what SD 1.x's PNDM gets, and DPM-Solver++ on a config
that names it) start below it and leave DPM-Solver++ short of the solution it converges to.

The default is chosen by measured error (``bench/sampler.py``, result in ``bench/sampler-choice.json``,
which tests check these defaults against): the fewest UNet calls whose error against a converged
solution (200 trailing DPM-Solver++ steps), in pixels and in latents, is at or below PNDM-50's in at
least 90% of 48 and 32 (prompt, seed) cases (16 prompts, 16 seeds) on each of two tiny model shapes.
On the benchmark model 20 steps meet it (100% of cases; 15 steps: 29%). On the UNet-heavy shape (32²
latents) no setting of 10-25 steps does in pixels (20 steps: 31% of cases, 4% above PNDM-50 on
average), and 20 is the closest there, so the rule is applied over the shape where it can be met.
On CUDA out-of-memory the batch is halved and the batch retried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from typing import Any, Literal

from inkbooth import artifacts, models, shards, storage
from inkbooth.config import option

log = logging.getLogger(__name__)

KIND = "prior-images"
SPEC = "spec.json"
SCHEDULERS = ("dpmsolver++", "pndm", "ddim", "euler")


@dataclasses.dataclass
class PriorConfig:
    """What class images to make, and how."""

    class_prompt: str = option(help="prompt for the class, e.g. 'a photo of dog'")
    num_images: int = option(100, "class images wanted")
    negative_prompt: str = option("", "negative prompt")
    scheduler: Literal["dpmsolver++", "pndm", "ddim", "euler"] = option("dpmsolver++", "sampler")
    timestep_spacing: Literal["trailing", "leading", "linspace", "model"] = option(
        "trailing", "how sampling timesteps are spread: trailing starts at the noisiest step (best for few "
                    "steps); model: the base model's scheduler setting")
    # 20: the fewest steps at or below PNDM-50's error in >= 90% of cases, by bench/sampler.py (see above).
    steps: int = option(20, "sampling steps (DPM-Solver++ on trailing timesteps: 20; PNDM wants 50)")
    guidance_scale: float = option(7.5, "classifier-free guidance scale")
    size: int = option(0, "image size in pixels (0: the model's native size)")
    seed: int = option(0, "base seed; image i uses a seed derived from (seed, i)")
    batch_size: int = option(8, "images per batch (halved automatically on CUDA out-of-memory)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where to run")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = option("auto", "weights dtype (auto: fp16 on CUDA, fp32 on CPU)")
    allow_pickle: bool = option(False, "accept pickle-based base weights")

    def validate(self) -> None:
        if not self.class_prompt.strip():
            raise ValueError("class_prompt is empty")
        if self.num_images < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("num_images, steps and batch_size must be at least 1")


def make_scheduler(name: str, base_config: dict[str, Any], timestep_spacing: str = "model") -> Any:
    """A sampler from the base model's scheduler config; ``timestep_spacing`` other than "model" overrides it."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    extra = {} if timestep_spacing == "model" else {"timestep_spacing": timestep_spacing}
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++", **extra)
    classes = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
    return classes[name].from_config(base_config, **extra)


def image_seed(seed: int, index: int) -> int:
    """A well-spread seed for image ``index`` of a set."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big") >> 1


def prior_spec(model_hash: str, config: PriorConfig, size: int, dtype: str) -> dict[str, Any]:
    """Everything that decides the pixels of the set (and nothing that does not, like batch size)."""
    return {"model_hash": model_hash, "prompt": config.class_prompt, "negative_prompt": config.negative_prompt,
            "scheduler": config.scheduler, "timestep_spacing": config.timestep_spacing, "steps": config.steps,
            "guidance_scale": config.guidance_scale,
            "size": size, "seed": config.seed, "dtype": dtype, "num_images": config.num_images}


def prior_key(spec: dict[str, Any]) -> str:
    """The set's name: a change to any field of the spec means a new set, and nothing else does."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def native_size(folder: Any) -> int:
    """The pixel size a Stable Diffusion folder was trained at (UNet sample size x VAE factor)."""
    from pathlib import Path

    unet = json.loads((Path(folder) / "unet" / "config.json").read_text())
    vae = json.loads((Path(folder) / "vae" / "config.json").read_text())
    return unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)


def image_name(index: int) -> str:
    return f"{index:06d}.png"


def pick_device(device: str, dtype: str) -> tuple[str, Any]:
    import torch

    from inkbooth import runtime

    runtime.require_usable_gpus(device)  # GPUs given but unusable: fail now, not hours later on the CPU
    dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda, but torch sees no CUDA device")
    if dtype == "auto":
        dtype = "fp16" if dev == "cuda" else "fp32"
    return dev, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def load_pipeline(folder: Any, device: str, dtype: Any) -> Any:
    """A StableDiffusionPipeline from a local diffusers folder (see models.resolve).

    The UNet runs in channels-last memory format: on the benchmark's CPU its sampling calls took 6%
    less time (bench/dreambooth.py); pixels agree with the default format to rounding.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.to(memory_format=torch.channels_last)
    return pipe.to(device)


def generate_prior_images(model: str, output: str, config: PriorConfig, shard: str = "0/1") -> dict[str, Any]:
    """Make the missing class images of this shard under ``<output>/<key>/``; publish when complete."""
    import torch

    from inkbooth import runtime

    config.validate()
    device, dtype = pick_device(config.device, config.dtype)
    runtime.limit_torch_threads()
    runtime.keep_freed_memory()
    folder = models.resolve(model, allow_pickle=config.allow_pickle)
    model_hash = models.folder_hash(folder)
    spec = prior_spec(model_hash, config, config.size or native_size(folder), str(dtype).replace("torch.", ""))
    key = prior_key(spec)
    root = storage.join(output, key)
    existing = set(storage.list_files(root))
    if SPEC not in existing:
        try:
            storage.write_text(storage.join(root, SPEC), json.dumps(spec, indent=1, sort_keys=True), if_absent=True)
        except storage.AlreadyExistsError:
            pass  # another shard wrote the same spec
    mine = shards.select(range(config.num_images), shard)
    todo = [i for i in mine if image_name(i) not in existing]
    size = spec["size"]
    if todo:
        pipe = load_pipeline(folder, device, dtype)
        pipe.scheduler = make_scheduler(config.scheduler, pipe.scheduler.config, config.timestep_spacing)
    started, batch, made = time.perf_counter(), config.batch_size, 0
    while todo:
        chunk = todo[:batch]
        try:
            generators = [torch.Generator(device="cpu").manual_seed(image_seed(config.seed, i)) for i in chunk]
            images = pipe(
                [config.class_prompt] * len(chunk), negative_prompt=[config.negative_prompt] * len(chunk),
                num_inference_steps=config.steps, guidance_scale=config.guidance_scale, height=size, width=size,
                generator=generators,
            ).images
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch = max(1, batch // 2)
            torch.cuda.empty_cache()
            log.warning("out of memory: prior batch size lowered to %d", batch)
            continue
        for i, img in zip(chunk, images):
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            storage.write_bytes(storage.join(root, image_name(i)), buf.getvalue())
        made += len(chunk)
        todo = todo[len(chunk):]
    seconds = time.perf_counter() - started
    published = finish_prior(root, config.num_images, spec)
    return {"uri": root, "key": key, "made": made, "reused": len(mine) - made,
            "batch_size": batch, "seconds": round(seconds, 3), "complete": published}


def finish_prior(root: str, num_images: int, spec: dict[str, Any]) -> bool:
    """Publish the image set's manifest once all images exist (any shard may be the last)."""
    if artifacts.is_published(root):
        return True
    present = set(storage.list_files(root))
    names = [image_name(i) for i in range(num_images)]
    if any(n not in present for n in names):
        return False
    artifacts.seal(root, kind=KIND, files=[*names, SPEC], config=spec, inputs={"model": spec["model_hash"]},
                   metrics={"images": num_images})
    return True


def complete_set(uris: list[str]) -> str:
    """The one class-image set that all prior shards wrote to, checked to be complete and published."""
    distinct = sorted(set(uris))
    if len(distinct) != 1:
        raise ValueError(f"prior shards disagree on their class-image set: {distinct}")
    if not artifacts.is_published(distinct[0]):
        raise ValueError(f"{distinct[0]}: class-image set incomplete (a prior shard did not finish)")
    return distinct[0]
