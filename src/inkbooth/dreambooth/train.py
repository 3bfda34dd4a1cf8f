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

This module is the loop: the loss, train_dreambooth, the launcher and the command line. It imports
downward only: the settings and run identity from ``inkbooth.dreambooth.settings``, the images from
``inkbooth.dreambooth.images``, and the checkpoints, validation and publishing from
``inkbooth.dreambooth.publish``; none of them imports it.
``train_dreambooth`` is one long function on purpose: its stages share the models, the accelerator
and the cached latents through local closures, and it reads better whole than split.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from inkbooth import artifacts, models
from inkbooth import checkpoints as ckpt
from inkbooth.config import to_dict
from inkbooth.dreambooth.images import image_set_hash as image_set_hash
from inkbooth.dreambooth.images import load_images as load_images
from inkbooth.dreambooth.images import to_tensor
from inkbooth.dreambooth.publish import (
    _collect_snapshots,
    _save_checkpoint,
    _save_pipeline,
    _save_snapshot,
    _shared_staging,
    _tensorboard_or_none,
    _validate,
)
from inkbooth.dreambooth.settings import KIND as KIND
from inkbooth.dreambooth.settings import TrainConfig as TrainConfig
from inkbooth.dreambooth.settings import run_identity as run_identity

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "dreambooth-checkpoint"


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
    runtime.require_usable_gpus("auto")  # GPUs given but unusable: fail now, not hours later on the CPU
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
        # resume() has refused pickles that would do more than rebuild tensors; weights_only is the
        # loader's own second line (accelerate's default today, said here so a new default cannot drop it).
        accelerator.load_state(str(resumed.path), load_kwargs={"weights_only": True})
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
        if config.snapshot_every and global_step % config.snapshot_every == 0 and global_step < config.max_train_steps:
            _save_snapshot(accelerator, run, unet, text_encoder, config, global_step)
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
        snapshots = _collect_snapshots(run, work, global_step) if config.snapshot_every else []
        manifest = _save_pipeline(accelerator, folder, unet, text_encoder, config, work, out, metrics, history, lineage={
            "base_model": model, "base_model_hash": base_hash, "instance_images": instance_images,
            "instance_images_hash": instance_hash, "class_images": class_images or "", "class_images_hash": class_hash,
            "run": run.key, "resumed_from": resumed.uri if resumed is not None else "", "snapshot_steps": snapshots,
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

    from inkbooth import runtime

    runtime.require_usable_gpus("auto")  # before counting: an unusable GPU would count as none
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

