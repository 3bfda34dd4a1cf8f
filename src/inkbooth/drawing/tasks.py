"""What each kind of drawing stage trains, its loss, its held-out figures and what it saves.

``vae``, ``diffusion`` and ``clip`` (see ``inkbooth.drawing.train``; ``dino`` is in
``inkbooth.drawing.dino``) each hold their models (``modules``: what is checkpointed, and optimised
where it requires grad), a loss for the pictures of a step, an evaluation and a save of the whole
model folder.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from inkbooth.drawing.data import Pool, heldout, to_tensor, torch_randn
from inkbooth.drawing.settings import StageConfig, seed_of

log = logging.getLogger(__name__)

SAMPLES = "samples.png"


class Task:
    """What a stage trains and how it measures it; one per stage kind."""

    modules: dict[str, Any]

    def loss(self, step: int, indices: list[int], gen: Any) -> Any:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """After the optimizer's step ``step`` (0-based): what follows the trained weights (DINO's teacher)."""

    def evaluate(self, step: int) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, out: Path) -> None:
        raise NotImplementedError


def variety(seed: int, step: int, n: int) -> Any:
    """``n`` pictures beyond the domain for step ``step`` of a vae stage: domain scenes with any texture
    (the reserved zigzag too) in a pattern of a random colour, half with their colour channels
    shuffled (so object, pattern and background colours combine freely); a function of (seed, step)."""
    import dataclasses
    import random

    import numpy as np

    from inkbooth.drawing import domain

    out = []
    for k in range(n):
        rng = random.Random(f"{seed}/variety/{step}/{k}")
        scene = dataclasses.replace(domain.scene_at(seed, f"variety-{step}", k),
                                    texture=rng.choice(domain.TEXTURES[1:] + (domain.RESERVED_TEXTURE,)),
                                    pattern=tuple(rng.randrange(256) for _ in range(3)))
        picture = np.asarray(domain.render(scene))
        out.append(picture[..., rng.sample(range(3), 3)] if rng.random() < 0.5 else picture)
    return np.stack(out)


class Vae(Task):
    def __init__(self, folder: Path, pool: Pool, config: StageConfig, device: str = "cpu") -> None:
        import torch
        from diffusers import AutoencoderKL

        self.folder, self.pool, self.config, self.device = folder, pool, config, device
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32).to(device)
        if config.vae_init_logvar:  # the starting point (a resumed stage loads its checkpoint over it)
            with torch.no_grad():
                self.vae.quant_conv.bias[self.vae.config.latent_channels:] = config.vae_init_logvar
        self.modules = {"vae": self.vae}
        self.eval_pixels = to_tensor(heldout(config.eval_pairs)[0]).to(device)

    def loss(self, step: int, indices: list[int], gen: Any) -> Any:
        pixels = self.pool.pixels[indices]
        varied = round(self.config.vae_variety * len(indices))
        if varied:
            pixels = pixels.copy()
            pixels[:varied] = variety(self.config.seed, step, varied)
        x = to_tensor(pixels).to(self.device)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch_randn(posterior.mean.shape, gen).to(self.device)
        rec = self.vae.decode(z).sample
        return (rec - x).abs().mean() + ((rec - x) ** 2).mean() + self.config.kl_weight * posterior.kl().mean()

    def evaluate(self, step: int) -> dict[str, Any]:
        import torch

        self.vae.eval()
        with torch.no_grad():
            errors = []
            for i in range(0, len(self.eval_pixels), 32):
                x = self.eval_pixels[i:i + 32]
                rec = self.vae.decode(self.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
                errors.append(((rec - x) / 2).pow(2).mean(dim=(1, 2, 3)))
            mse = float(torch.cat(errors).mean())
        self.vae.train()
        return {"step": step, "reconstruction_mse": round(mse, 6), "psnr_db": round(10 * math.log10(1 / max(mse, 1e-12)), 3)}

    def save(self, out: Path) -> None:
        import torch
        from diffusers import StableDiffusionPipeline
        from PIL import Image

        from inkbooth.imaging import grid

        # SD's practice: the latents the UNet sees have unit variance.
        gen = torch.Generator().manual_seed(seed_of(self.config.seed, "scale"))
        with torch.no_grad():
            sample = to_tensor(self.pool.pixels[: min(512, self.pool.size)]).to(self.device)
            dists = [self.vae.encode(sample[i:i + 64]).latent_dist for i in range(0, len(sample), 64)]
            std = float(torch.cat([d.mean + d.std * torch_randn(d.mean.shape, gen).to(self.device) for d in dists]).std())
            shown = self.eval_pixels[:8]
            rec = self.vae.decode(self.vae.encode(shown).latent_dist.mean).sample.clamp(-1, 1)
        self.vae.register_to_config(scaling_factor=round(1.0 / std, 6))
        pipe = StableDiffusionPipeline.from_pretrained(self.folder, vae=self.vae, safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=True)
        pipe.save_pretrained(out, safe_serialization=True)
        # Held-out pictures above their reconstructions, for the eye.
        pictures = torch.cat([shown, rec]).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        grid([Image.fromarray(p) for p in pictures], len(shown)).save(out / SAMPLES)


class Diffusion(Task):
    def __init__(self, folder: Path, pool: Pool, config: StageConfig, clip: str | None, device: str = "cpu") -> None:
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.folder, self.pool, self.config, self.clip, self.device = folder, pool, config, clip, device
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        self.scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32).to(device)
        self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                          dtype=torch.float32).to(device)
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32).to(device)
        self.alphas = self.scheduler.alphas_cumprod.to(device)
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(config.train_text_encoder)
        self.modules = {"unet": self.unet, **({"text_encoder": self.text_encoder} if config.train_text_encoder else {})}
        self.scale = self.vae.config.scaling_factor
        started = time.perf_counter()
        with torch.no_grad():  # the pool's latent distributions, once: the VAE is frozen
            means, stds = [], []
            for i in range(0, pool.size, 64):
                d = self.vae.encode(to_tensor(pool.pixels[i:i + 64]).to(device)).latent_dist
                means.append(d.mean)
                stds.append(d.std)
            self.mean, self.std = torch.cat(means), torch.cat(stds)
        log.info("encoded %d pool pictures in %.1f s", pool.size, time.perf_counter() - started)
        pixels, self.eval_captions, self.eval_scenes = heldout(config.eval_pairs)
        with torch.no_grad():
            self.eval_latents = self.vae.encode(to_tensor(pixels).to(device)).latent_dist.mean * self.scale
        gen = torch.Generator().manual_seed(seed_of(config.seed, "eval-noise"))
        self.eval_noise = torch.randn(self.eval_latents.shape, generator=gen).to(device)
        n = len(pixels)  # timesteps spread evenly over the schedule: the figure weighs every noise level
        self.eval_t = torch.tensor([int((k + 0.5) * self.scheduler.config.num_train_timesteps / n)
                                    for k in range(n)], device=device)

    def _states(self, captions: list[str]) -> Any:
        ids = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    def loss(self, step: int, indices: list[int], gen: Any) -> Any:
        import torch

        captions = self.pool.captions(step, indices, self.config.caption_keep, self.config.caption_dropout)
        idx = torch.tensor(indices, device=self.device)
        # Drawn on the CPU from the step's generator: the same numbers on every device.
        latents = (self.mean[idx] + self.std[idx] * torch_randn(self.mean[idx].shape, gen).to(self.device)) * self.scale
        noise = torch_randn(latents.shape, gen).to(self.device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(indices),), generator=gen).to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        if self.config.train_text_encoder:
            states = self._states(captions)
        else:
            with torch.no_grad():
                states = self._states(captions)
        pred = self.unet(noisy, t, states).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        if self.config.snr_gamma:
            alphas = self.alphas[t]
            snr = alphas / (1 - alphas)
            per_sample = per_sample * torch.clamp(snr, max=self.config.snr_gamma) / snr
        return per_sample.mean()

    def heldout_loss(self) -> float:
        import torch

        total = 0.0
        with torch.no_grad():
            for i in range(0, len(self.eval_t), 32):
                sl = slice(i, i + 32)
                noisy = self.scheduler.add_noise(self.eval_latents[sl], self.eval_noise[sl], self.eval_t[sl])
                pred = self.unet(noisy, self.eval_t[sl], self._states(self.eval_captions[sl])).sample
                total += float(((pred - self.eval_noise[sl]) ** 2).mean(dim=(1, 2, 3)).sum())
        return total / len(self.eval_t)

    def pipeline(self) -> Any:
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        sampler = DPMSolverMultistepScheduler.from_config(self.scheduler.config)
        pipe = StableDiffusionPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                       unet=self.unet, scheduler=sampler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def evaluate(self, step: int) -> dict[str, Any]:
        self.unet.eval()
        self.text_encoder.eval()
        metrics: dict[str, Any] = {"step": step, "heldout_loss": round(self.heldout_loss(), 6)}
        if self.config.eval_samples:  # drawn for the eye (samples.png) always, judged where there is a CLIP
            from inkbooth.drawing.evaluate import ClipJudge, draw

            prompts = self.eval_captions[: self.config.eval_samples]
            images = draw(self.pipeline(), prompts, steps=self.config.eval_sampling_steps,
                          guidance=self.config.eval_guidance, seed=self.config.seed)
            if self.clip:
                metrics.update(ClipJudge(self.clip).prompt_following(images, self.eval_scenes[: len(images)], prompts))
            self.last_samples = images
        self.unet.train()
        if self.config.train_text_encoder:
            self.text_encoder.train()
        return metrics

    def save(self, out: Path) -> None:
        from diffusers import StableDiffusionPipeline

        # The starting folder's scheduler and tokenizer, the trained weights.
        pipe = StableDiffusionPipeline.from_pretrained(self.folder, unet=self.unet, text_encoder=self.text_encoder,
                                                       vae=self.vae, safety_checker=None, requires_safety_checker=False,
                                                       local_files_only=True)
        pipe.save_pretrained(out, safe_serialization=True)
        if getattr(self, "last_samples", None):
            from inkbooth.imaging import grid

            grid(self.last_samples, 8).save(out / SAMPLES)


class Clip(Task):
    def __init__(self, folder: Path, pool: Pool, config: StageConfig, device: str = "cpu") -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.folder, self.pool, self.config, self.device = folder, pool, config, device
        self.model = CLIPModel.from_pretrained(folder, dtype=torch.float32).to(device)
        self.processor = CLIPProcessor.from_pretrained(folder)
        self.modules = {"clip": self.model}
        proc = self.processor.image_processor
        self.mean = torch.tensor(proc.image_mean, device=device).view(1, 3, 1, 1)
        self.istd = 1.0 / torch.tensor(proc.image_std, device=device).view(1, 3, 1, 1)
        pixels, _, self.eval_scenes = heldout(config.eval_pairs)
        from PIL import Image

        self.eval_images = [Image.fromarray(p) for p in pixels]

    def loss(self, step: int, indices: list[int], gen: Any) -> Any:
        captions = self.pool.captions(step, indices, self.config.caption_keep)
        # The processor's own arithmetic on pictures that are its size already: rescale, normalise.
        x = (to_tensor(self.pool.pixels[indices]).to(self.device) + 1) / 2
        text = self.processor.tokenizer(captions, padding=True, return_tensors="pt").to(self.device)
        return self.model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                          pixel_values=(x - self.mean) * self.istd, return_loss=True).loss

    def evaluate(self, step: int) -> dict[str, Any]:
        from inkbooth.drawing.evaluate import ClipJudge

        self.model.eval()
        judge = ClipJudge(self.folder, model=self.model, processor=self.processor)
        metrics = {"step": step, **judge.zero_shot_accuracy(self.eval_images, self.eval_scenes)}
        self.model.train()
        return metrics

    def save(self, out: Path) -> None:
        self.model.save_pretrained(out, safe_serialization=True)
        self.processor.save_pretrained(out)
