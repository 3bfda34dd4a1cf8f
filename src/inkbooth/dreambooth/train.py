"""train_dreambooth: fine-tune Stable Diffusion on a few subject images, with prior preservation.

One typed config (``TrainConfig``), one loop, run by accelerate: single process here, or many with
``accelerate launch -m inkbooth.dreambooth.train ...`` without code changes.

What it does differently from a plain per-step loop:
* the VAE is frozen; the latent distributions of the (few) subject and class images are encoded once
  and sampled every step; prompt embeddings are cached while the text encoder is frozen;
* trainable weights are always fp32 ("masters"); fp16/bf16 is autocast only, so there is no
  "Attempting to unscale FP16 gradients"; a trainable fp16 weight is refused with a clear error;
* a trained text encoder is inside ``accumulate()`` with the UNet, so its gradients accumulate too;
* full-state checkpoints (weights, optimizer, LR schedule, RNG states, step) go to the artifact store
  every N steps, the oldest pruned past a limit; every random draw comes from the RNGs in that state,
  so ``resume: latest`` ends with the weights an uninterrupted run ends with;
* the fused AdamW kernel (CPU and CUDA) and a channels-last UNet;
* options: gradient checkpointing, min-SNR weighting, offset noise, 8-bit Adam (CUDA + bitsandbytes),
  LoRA (peft); validation images and TensorBoard scalars and images every N steps.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from inkbooth import artifacts, models, storage
from inkbooth import checkpoints as ckpt
from inkbooth.config import option, to_dict

log = logging.getLogger(__name__)

KIND = "dreambooth-model"
CHECKPOINT_KIND = "dreambooth-checkpoint"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Larger subject images are refused: a few-KB file can decode to gigabytes (8192 x 8192 is plenty).
MAX_IMAGE_PIXELS = 8192 * 8192


@dataclasses.dataclass
class TrainConfig:
    """A DreamBooth run."""

    instance_prompt: str = option("a photo of sks dog", "prompt of the subject images, with the identifier")
    identifier: str = option("sks", "the rare token that names the subject; must appear in instance_prompt")
    class_prompt: str = option("a photo of dog", "prompt of the class images (prior preservation)")
    with_prior_preservation: bool = option(True, "add the class-image loss")
    prior_loss_weight: float = option(1.0, "weight of the class-image loss", min=0.0)
    resolution: int = option(0, "training size in pixels (0: the model's native size)", min=0, max=8192)
    center_crop: bool = option(True, "center crop (else random crop)")
    random_flip: bool = option(False, "random horizontal flips of subject images")
    train_text_encoder: bool = option(False, "train the text encoder too")
    max_train_steps: int = option(400, "optimizer steps", min=1, max=10_000_000)
    train_batch_size: int = option(1, "subject images per step and process (as many class images are added)", min=1, max=4096)
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", min=1, max=4096)
    learning_rate: float = option(5e-6, "UNet learning rate (1e-4 is typical for LoRA)", min=0.0, max=1.0)
    text_encoder_lr: float = option(0.0, "text encoder learning rate (0: same as learning_rate)", min=0.0, max=1.0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = option("constant", "LR schedule")
    lr_warmup_steps: int = option(0, "warm-up steps", min=0)
    adam_beta1: float = option(0.9, "Adam beta1")
    adam_beta2: float = option(0.999, "Adam beta2")
    adam_weight_decay: float = option(1e-2, "AdamW weight decay")
    adam_epsilon: float = option(1e-8, "Adam epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm", min=0.0)
    use_8bit_adam: bool = option(False, "bitsandbytes 8-bit AdamW (CUDA only)")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", "autocast precision; weights stay fp32")
    gradient_checkpointing: bool = option(False, "trade compute for memory")
    channels_last: bool = option(True, "UNet in channels-last memory format (faster convolutions on CPU and GPU)")
    snr_gamma: float = option(0.0, "min-SNR weighting gamma (0: off; 5.0 is the usual choice)", min=0.0)
    offset_noise: float = option(0.0, "offset noise strength (0: off; 0.1 is typical)", min=0.0, max=10.0)
    lora_rank: int = option(0, "LoRA rank (0: full fine-tuning)", min=0, max=4096)
    cache_latents: bool = option(True, "encode the images once instead of every step")
    checkpoint_every: int = option(0, "full-state checkpoint every N steps (0: none)", min=0)
    checkpoints_total_limit: int = option(2, "checkpoints kept (older ones are deleted)", min=0)
    resume: str = option("", "'latest' or a step number to resume from a checkpoint; empty: start fresh")
    log_every: int = option(10, "TensorBoard scalars every N steps (the tracker flushes to disk on each)", min=1)
    validation_every: int = option(0, "validation images every N steps (0: none)", min=0)
    validation_prompts: list[str] = option(["a photo of sks dog on the beach"], "validation prompts")
    validation_steps: int = option(20, "sampling steps for validation images", min=1, max=1000)
    seed: int = option(0, "seed of every random draw")
    allow_pickle: bool = option(False, "accept pickle-based base weights")

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "train")
        if not re.search(rf"(^|\W){re.escape(self.identifier)}(\W|$)", self.instance_prompt):
            raise ValueError(f"instance_prompt {self.instance_prompt!r} does not contain the identifier "
                             f"{self.identifier!r}: the model would have no token to learn the subject by")
        for prompt in self.validation_prompts:
            if self.identifier not in prompt:
                log.warning("validation prompt %r does not use the identifier %r", prompt, self.identifier)
        if self.max_train_steps < 1 or self.train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("max_train_steps, train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.lora_rank and self.train_text_encoder:
            raise ValueError("lora_rank with train_text_encoder is not supported yet: train the UNet's LoRA only, "
                             "or fine-tune the text encoder fully (lora_rank: 0)")
        if self.resume not in ("", "latest") and not self.resume.isdigit():
            raise ValueError(f"resume must be '', 'latest' or a step number, got {self.resume!r}")


# ---------------------------------------------------------------------------------------------
# Pieces that are tested on their own
# ---------------------------------------------------------------------------------------------


def dreambooth_loss(pred: Any, target: Any, *, with_prior: bool, prior_weight: float,
                    weights: Any = None) -> tuple[Any, Any, Any]:
    """(loss, instance loss, prior loss). With prior preservation the batch is [instance; class].

    ``weights`` (per sample, e.g. min-SNR) scale each sample's mean squared error.
    """
    import torch

    def mse(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        per_sample = ((p.float() - t.float()) ** 2).mean(dim=tuple(range(1, p.ndim)))
        return (per_sample * w).mean() if w is not None else per_sample.mean()

    if not with_prior:
        loss = mse(pred, target, weights)
        return loss, loss, torch.zeros_like(loss)
    p_inst, p_prior = pred.chunk(2)
    t_inst, t_prior = target.chunk(2)
    w_inst, w_prior = weights.chunk(2) if weights is not None else (None, None)
    inst = mse(p_inst, t_inst, w_inst)
    prior = mse(p_prior, t_prior, w_prior)
    return inst + prior_weight * prior, inst, prior


def min_snr_weights(scheduler: Any, timesteps: Any, gamma: float) -> Any:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for epsilon or v prediction."""
    import torch

    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def image_names(uri: str) -> list[str]:
    return [k for k in storage.list_files(uri) if k.lower().endswith(IMAGE_SUFFIXES)]


def set_hash(digests: set[str]) -> str:
    """The identity of an image set: its distinct SHA-256 digests, sorted and hashed."""
    import hashlib

    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def image_set_hash(uri: str) -> str:
    """The content hash ``load_images`` gives the images under ``uri``, from recorded checksums
    where objects carry one (nothing is downloaded then)."""
    import hashlib

    digests = set()
    for name in image_names(uri):
        target = storage.join(uri, name)
        digests.add(storage.stat(target).sha256 or hashlib.sha256(storage.read_bytes(target)).hexdigest())
    return set_hash(digests)


def load_images(uri: str, what: str, *, published: bool = False) -> tuple[list[Any], str]:
    """RGB images under a prefix (subject or class images), and a content hash of the set.

    ``published``: ``uri`` is an artifact (a class-image set); its images are the ones its manifest
    lists, each verified, so a missing or replaced file is an error rather than a silent change.
    """
    import hashlib

    from PIL import Image, UnidentifiedImageError

    from inkbooth.imaging import to_8bit, upright

    manifest = None
    if published:
        try:
            manifest = artifacts.read_manifest(uri)
            names = [f.path for f in manifest.files if f.path.lower().endswith(IMAGE_SUFFIXES)]
        except artifacts.NotPublishedError:
            raise ValueError(f"{uri}: not a finished {what}-image set (no {artifacts.MANIFEST}); "
                             "make it with `inkbooth prior`") from None
    else:
        names = image_names(uri)
    if not names:
        raise ValueError(f"{uri}: no {what} images found ({', '.join(IMAGE_SUFFIXES)})")
    images, digests, seen = [], [], set()
    for name in names:
        if published:
            try:
                data = artifacts.read_bytes(uri, name, manifest)
            except storage.StorageError as e:
                raise ValueError(f"{uri}: the {what}-image set does not match its manifest ({e}); "
                                 "regenerate it (`inkbooth prior`) or restore the file") from None
        else:
            data = storage.read_bytes(storage.join(uri, name))
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            log.warning("%s: %s is a duplicate of another image; used once", uri, name)
            continue
        seen.add(digest)
        try:
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{storage.join(uri, name)}: {img.width}x{img.height} pixels, over the limit of "
                                 f"{MAX_IMAGE_PIXELS}; refused as a possible decompression bomb")
            img.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"{storage.join(uri, name)}: not a readable image: {e}") from None
        # Turned as a viewer shows it; 16-bit, 32-bit and float pixels by their range, not clipped.
        img = to_8bit(upright(img), stretch=False)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img.convert("RGBA"))
        images.append(img.convert("RGB"))
        digests.append(digest)
    return images, set_hash(set(digests))


def to_tensor(img: Any, size: int, center_crop: bool) -> Any:
    """Resize the short side to ``size``, crop a square, scale to [-1, 1] (C, H, W)."""
    import numpy as np
    import torch
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    if center_crop:
        left, top = (w - size) // 2, (h - size) // 2
    else:
        left = int(torch.randint(0, w - size + 1, (1,)).item())
        top = int(torch.randint(0, h - size + 1, (1,)).item())
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


# Config fields that cannot change the training trajectory: a resumed run may differ in these.
NOT_TRAJECTORY = ("resume", "checkpoint_every", "checkpoints_total_limit", "log_every")


def run_identity(config: TrainConfig, *, base_model_hash: str, instance_images_hash: str, class_images_hash: str,
                 processes: int) -> dict[str, Any]:
    """What a training run is: its checkpoints resume only into a run with the same identity."""
    from inkbooth.config import config_hash

    trajectory = {k: v for k, v in to_dict(config).items() if k not in NOT_TRAJECTORY}
    return {"trainer": KIND, "base_model": base_model_hash, "instance_images": instance_images_hash,
            "class_images": class_images_hash, "config": config_hash(trajectory), "processes": processes}


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def train_dreambooth(model: str, instance_images: str, output: str, config: TrainConfig, *,
                     class_images: str | None = None, checkpoints: str | None = None,
                     logging_dir: str | None = None, _on_step: Any = None) -> artifacts.Manifest:
    """Fine-tune ``model`` on the subject images; write the trained pipeline to ``output``.

    ``class_images`` is a published prior set (generate_prior_images); ``checkpoints`` a prefix for
    full-state checkpoints (default ``<output>/../checkpoints``), kept apart per run identity
    (``inkbooth.checkpoints``). The artifact (model, logs, validation images) is assembled in a
    temporary folder and published into ``output`` at the end, so it holds only what this run wrote.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from inkbooth import runtime
    from inkbooth.dreambooth.prior import native_size

    config.validate()
    runtime.limit_torch_threads()
    runtime.keep_freed_memory()  # every step allocates the same large tensors: reuse them (see runtime)
    if config.with_prior_preservation and not class_images:
        raise ValueError("with_prior_preservation needs class_images (a generate_prior_images output)")
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision=fp16 needs CUDA; use bf16 or no on CPU")
    started = time.perf_counter()
    out = Path(output)
    checkpoints = checkpoints or str(out.parent / "checkpoints")
    # Removed when this function is left (or its frame collected after an error); never inside `out`.
    work_dir = tempfile.TemporaryDirectory(prefix="inkbooth-train-")
    work = Path(work_dir.name)
    logging_dir = logging_dir or str(work / "logs")
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=_tensorboard_or_none(),
        project_config=ProjectConfiguration(project_dir=str(work), logging_dir=logging_dir),
    )
    set_seed(config.seed, device_specific=True)

    folder = models.resolve(model, allow_pickle=config.allow_pickle)
    base_hash = models.folder_hash(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
    # Trainable weights load in fp32 whatever the checkpoint holds; frozen ones in the compute dtype.
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(
        folder, subfolder="text_encoder", dtype=torch.float32 if config.train_text_encoder else weight_dtype)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=weight_dtype)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder and config.lora_rank == 0)
    if config.lora_rank:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_rank, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    if config.channels_last:
        unet.to(memory_format=torch.channels_last)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    te_trainable = [p for p in text_encoder.parameters() if p.requires_grad] if config.train_text_encoder else []
    bad = [p.dtype for p in trainable + te_trainable if p.dtype != torch.float32]
    if bad:
        raise ValueError(f"trainable weights must be fp32 (found {bad[0]}): fp16 masters cannot be unscaled; "
                         "mixed_precision autocasts the compute instead")

    # ---- data: decoded and (optionally) encoded once -------------------------------------------
    size = config.resolution or native_size(folder)
    instance, instance_hash = load_images(instance_images, "subject")
    if len(instance) < 3:
        log.warning("%d subject image(s): DreamBooth usually needs 3 to 20 for a subject to generalise", len(instance))
    classes, class_hash = (load_images(class_images, "class", published=True) if config.with_prior_preservation
                           else ([], ""))
    device = accelerator.device
    vae.to(device)
    text_encoder.to(device)

    def pixels(imgs: list[Any]) -> Any:
        return torch.stack([to_tensor(im, size, config.center_crop) for im in imgs]).to(device, weight_dtype)

    def token_ids(prompt: str) -> Any:
        return tokenizer(prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                         return_tensors="pt").input_ids.to(device)

    inst_pixels = pixels(instance) if config.center_crop else None
    class_pixels = pixels(classes) if classes and config.center_crop else None
    inst_ids, class_ids = token_ids(config.instance_prompt), token_ids(config.class_prompt)
    cached_dist = {}
    if config.cache_latents and config.center_crop and not config.random_flip:
        with torch.no_grad():
            for name, px in (("instance", inst_pixels), ("class", class_pixels)):
                if px is not None:
                    parts = [vae.encode(px[i:i + 8]).latent_dist for i in range(0, len(px), 8)]
                    cached_dist[name] = (torch.cat([d.mean for d in parts]), torch.cat([d.std for d in parts]))
    cached_states = {}
    if not config.train_text_encoder:
        with torch.no_grad():
            cached_states = {"instance": text_encoder(inst_ids)[0], "class": text_encoder(class_ids)[0]}

    # ---- optimisation ----------------------------------------------------------------------------
    groups = [{"params": trainable, "lr": config.learning_rate}]
    if te_trainable:
        groups.append({"params": te_trainable, "lr": config.text_encoder_lr or config.learning_rate})
    optimizer = _optimizer(groups, config)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.max_train_steps * accelerator.num_processes)
    if config.train_text_encoder:
        unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    # ---- checkpoints of this run (and of no other) ----------------------------------------------
    run = ckpt.RunCheckpoints(checkpoints, run_identity(
        config, base_model_hash=base_hash, instance_images_hash=instance_hash, class_images_hash=class_hash,
        processes=accelerator.num_processes), kind=CHECKPOINT_KIND, keep=config.checkpoints_total_limit)
    staging = _shared_staging(accelerator) if config.checkpoint_every else None
    global_step = 0
    resumed = run.resume(config.resume)
    if resumed is not None:
        accelerator.load_state(str(resumed.path))
        global_step = resumed.step
        log.info("resumed from %s (step %d)", resumed.uri, resumed.step)
    first_step = global_step

    if accelerator.is_main_process:
        accelerator.init_trackers("dreambooth", config={k: v for k, v in to_dict(config).items()
                                                        if isinstance(v, (int, float, str, bool))})

    def latents_for(name: str, idx: Any, px_source: Any, imgs: list[Any]) -> Any:
        if name in cached_dist:
            mean, std = cached_dist[name]
            sample = mean[idx] + std[idx] * torch.randn(mean[idx].shape, device=device, dtype=mean.dtype)
        else:
            px = px_source[idx] if px_source is not None else pixels([imgs[i] for i in idx.tolist()])
            if config.random_flip:
                flip = torch.rand(len(idx)) < 0.5
                px = torch.where(flip[:, None, None, None].to(device), px.flip(-1), px)
            with torch.no_grad():
                sample = vae.encode(px).latent_dist.sample()
        return sample.to(torch.float32) * vae.config.scaling_factor

    unet.train()
    # A trained text encoder accumulates with the UNet (skipping it here is diffusers bug #7600).
    accumulated = [unet, text_encoder] if config.train_text_encoder else [unet]
    if config.train_text_encoder:
        text_encoder.train()
    last = {}
    # For the report and the run's metrics: the logged points, and every step's loss for the mean.
    history: list[dict[str, Any]] = []
    loss_total, loop_started = 0.0, time.perf_counter()
    micro_steps = (config.max_train_steps - global_step) * config.gradient_accumulation_steps
    bar = _progress(accelerator, global_step, config.max_train_steps)
    for _ in range(micro_steps):
        with accelerator.accumulate(*accumulated):
            bs = config.train_batch_size
            idx = torch.randint(0, len(instance), (bs,))
            latents = latents_for("instance", idx, inst_pixels, instance)
            if config.with_prior_preservation:
                cidx = torch.randint(0, len(classes), (bs,))
                latents = torch.cat([latents, latents_for("class", cidx, class_pixels, classes)])
            noise = torch.randn_like(latents)
            if config.offset_noise:
                noise = noise + config.offset_noise * torch.randn(latents.shape[0], latents.shape[1], 1, 1,
                                                                  device=device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      device=device).long()
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            if config.channels_last:
                noisy = noisy.contiguous(memory_format=torch.channels_last)
            if cached_states:
                states = torch.cat([cached_states["instance"].expand(bs, -1, -1)]
                                   + ([cached_states["class"].expand(bs, -1, -1)] if config.with_prior_preservation else []))
            else:
                ids = torch.cat([inst_ids.expand(bs, -1)]
                                + ([class_ids.expand(bs, -1)] if config.with_prior_preservation else []))
                states = text_encoder(ids)[0]
            with accelerator.autocast():
                pred = unet(noisy, timesteps, states.to(torch.float32)).sample
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            weights = min_snr_weights(noise_scheduler, timesteps, config.snr_gamma) if config.snr_gamma else None
            loss, inst_loss, prior_loss = dreambooth_loss(
                pred, target, with_prior=config.with_prior_preservation, prior_weight=config.prior_loss_weight,
                weights=weights)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(trainable + te_trainable, config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        global_step += 1
        last = {"loss": float(loss.detach()), "instance_loss": float(inst_loss.detach()),
                "prior_loss": float(prior_loss.detach()), "lr": lr_scheduler.get_last_lr()[0]}
        loss_total += last["loss"]
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
        if global_step % config.log_every == 0 or global_step == config.max_train_steps:
            accelerator.log(last, step=global_step)
            history.append({"step": global_step, **{k: round(v, 6) for k, v in last.items()}})
        paused = time.perf_counter()  # checkpoints and validation do not count in steps/s
        if config.checkpoint_every and global_step % config.checkpoint_every == 0 and global_step < config.max_train_steps:
            _save_checkpoint(accelerator, run, staging[1], global_step, config)
        if config.validation_every and global_step % config.validation_every == 0 and accelerator.is_main_process:
            _validate(accelerator, folder, unet, text_encoder, config, global_step, work, weight_dtype)
        loop_started += time.perf_counter() - paused
        if _on_step is not None:
            _on_step(global_step)

    bar.close()
    accelerator.wait_for_everyone()
    from inkbooth.reports.metrics import peak_memory_mb

    ran, loop_seconds = global_step - first_step, time.perf_counter() - loop_started
    metrics = {"steps": global_step, "steps_this_run": ran, "resumed_from_step": first_step,
               **{k: round(v, 6) for k, v in last.items()},
               "train_seconds": round(time.perf_counter() - started, 2), "processes": accelerator.num_processes,
               "mean_loss": round(loss_total / ran, 6) if ran else None,
               "steps_per_second": round(ran / loop_seconds, 4) if ran and loop_seconds > 0 else None,
               "peak_memory_mb": peak_memory_mb(device)}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    manifest = None
    if accelerator.is_main_process:
        for tracker in accelerator.trackers:
            tracker.finish()  # the event files are complete before they are published
        manifest = _save_pipeline(accelerator, folder, unet, text_encoder, config, work, out, metrics, history, lineage={
            "base_model": model, "base_model_hash": base_hash, "instance_images": instance_images,
            "instance_images_hash": instance_hash, "class_images": class_images or "", "class_images_hash": class_hash,
            "run": run.key, "resumed_from": resumed.uri if resumed is not None else "",
        })
    accelerator.end_training()
    work_dir.cleanup()
    if staging is not None and staging[0] is not None:
        staging[0].cleanup()
    return manifest


def _progress(accelerator: Any, done: int, total: int) -> Any:
    """A progress bar on stderr (main process only): steps, steps/s, time left and the loss."""
    import sys

    from tqdm import tqdm

    # Where stderr is a log (a pipeline step), a line every 30 s rather than a redraw per step.
    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=done, desc="train", unit="step", file=sys.stderr, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else 30.0, disable=not accelerator.is_main_process)


def _tensorboard_or_none() -> str | None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        log.warning("tensorboard is not installed: no training logs (pip install 'inkbooth[train-cpu]')")
        return None
    return "tensorboard"


def _optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> Any:
    import torch

    kwargs = {"betas": (config.adam_beta1, config.adam_beta2), "weight_decay": config.adam_weight_decay,
              "eps": config.adam_epsilon}
    if config.use_8bit_adam:
        if not torch.cuda.is_available():
            raise ValueError("use_8bit_adam needs CUDA (bitsandbytes)")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from None
        return bnb.optim.AdamW8bit(groups, **kwargs)
    # The fused kernel, on CUDA and CPU alike: on 2 CPU threads it steps a UNet 3.4x faster than the
    # single-tensor loop (the multi-tensor "foreach" path was no faster there). Devices without a
    # fused kernel get foreach.
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


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


def launch_training(model: str, instance_images: str, output: str, config: TrainConfig, *,
                    class_images: str | None = None, checkpoints: str | None = None,
                    processes: int | None = None) -> artifacts.Manifest:
    """Train with one process per GPU of this node (or ``processes``), else in this process.

    Several processes run the same entry point (``python -m inkbooth.dreambooth.train``) under
    torchrun, which is what ``accelerate launch --multi_gpu`` does; accelerate picks the
    distributed setup up from the environment, so the training code is the same either way.
    """
    import os
    import subprocess
    import sys

    import torch

    count = processes if processes is not None else torch.cuda.device_count()
    if count <= 1 or "WORLD_SIZE" in os.environ:
        return train_dreambooth(model, instance_images, output, config, class_images=class_images,
                                checkpoints=checkpoints)
    config.validate()
    # The processes read the config from a file outside the output (nothing stray lands there).
    fd, name = tempfile.mkstemp(prefix="inkbooth-train-config-", suffix=".json")
    config_file = Path(name)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(to_dict(config)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(count),
           "-m", "inkbooth.dreambooth.train", model, instance_images, output, "--config", str(config_file)]
    if class_images:
        cmd += ["--class-images", class_images]
    if checkpoints:
        cmd += ["--checkpoints", checkpoints]
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # several processes on CPU (gloo), as the tests run it
    log.info("training with %d processes: %s", count, " ".join(cmd))
    try:
        subprocess.run(cmd, env=env, check=True)
    finally:
        config_file.unlink(missing_ok=True)
    return artifacts.read_manifest(output)


def build_parser() -> Any:
    """The command line of ``python -m inkbooth.dreambooth.train`` (under accelerate or torchrun)."""
    import argparse

    from inkbooth import config as cfg

    parser = argparse.ArgumentParser(prog="inkbooth.dreambooth.train", description="DreamBooth fine-tuning")
    parser.add_argument("model")
    parser.add_argument("instance_images")
    parser.add_argument("output")
    parser.add_argument("--class-images")
    parser.add_argument("--checkpoints")
    parser.add_argument("--config")
    cfg.add_arguments(parser, TrainConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``accelerate launch -m inkbooth.dreambooth.train MODEL INSTANCE OUTPUT --config train.yaml``."""
    from inkbooth import config as cfg

    args = build_parser().parse_args(argv)
    config = cfg.load(TrainConfig, args.config, cfg.overrides_from_args(args, TrainConfig))
    train_dreambooth(args.model, args.instance_images, args.output, config, class_images=args.class_images,
                     checkpoints=args.checkpoints)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

