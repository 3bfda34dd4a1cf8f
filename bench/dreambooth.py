"""DreamBooth speed and memory on the tiny Stable Diffusion, in one run.

(a) training steps/s: inkbooth's trainer (latent distributions and prompt embeddings cached, fused or
    multi-tensor AdamW) against a baseline loop that does what diffusers' train_dreambooth.py does
    each step (VAE encode, text encoder forward, single-tensor AdamW). Same model, same batch
    (1 subject + 1 class image), same steps; the first steps are warm-up and not timed.
(b) class images/s: generate_prior_images (DPM-Solver++, 20 steps, batch 8) against the diffusers
    pipeline's default scheduler (PNDM) at 50 steps, batch 4 (the reference script's sample batch);
    both timed from loading the model to the last PNG written.
(c) peak RSS of each, each variant measured in its own process.

    python bench/dreambooth.py [--steps 30] [--images 16] [--size small]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "tiny": {},
    # Wider, at 64 px: the VAE and UNet costs stand in a ratio closer to SD 1.x at 512 px.
    "small": {"sample_size": 64, "unet_channels": [64, 128], "vae_channels": [64, 128, 128], "text_hidden": 64},
}


def setup(work: Path, size: str) -> tuple[Path, Path, str]:
    """Model, subject and class images, made once by the parent; children only read the paths."""
    marker = work / f"setup-{size}.json"
    if marker.exists():
        paths = json.loads(marker.read_text())
        return Path(paths["base"]), Path(paths["subject"]), paths["class_set"]
    from inkbooth import tiny
    from inkbooth.demo import subject_images
    from inkbooth.dreambooth import prior

    base = tiny.build_tiny_sd(work / f"sd-{size}", tiny.TinySDConfig(**SHAPES[size]))
    subject_images(work / "subject", 4)
    cfg = prior.PriorConfig(class_prompt="a photo of dog", num_images=8, steps=4, batch_size=8)
    class_set = prior.generate_prior_images(str(base), str(work / "prior"), cfg)["uri"]
    marker.write_text(json.dumps({"base": str(base), "subject": str(work / "subject"), "class_set": class_set}))
    return base, work / "subject", class_set


def trainer(work: Path, size: str, steps: int, warmup: int = 3) -> dict:
    from inkbooth.dreambooth import train

    base, subject, class_set = setup(work, size)
    stamps: list[float] = []
    cfg = train.TrainConfig(max_train_steps=steps + warmup, learning_rate=1e-4)
    train.train_dreambooth(str(base), str(subject), str(work / "out-trainer"), cfg, class_images=class_set,
                           _on_step=lambda s: stamps.append(time.perf_counter()))
    return {"steps_per_s": steps / (stamps[-1] - stamps[warmup - 1])}


def baseline(work: Path, size: str, steps: int, warmup: int = 3) -> dict:
    """The per-step work of the reference script, written plainly."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from inkbooth.dreambooth.prior import native_size
    from inkbooth.dreambooth.train import load_images, to_tensor

    base, subject, class_set = setup(work, size)
    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, foreach=False)
    px = native_size(base)
    inst = torch.stack([to_tensor(i, px, True) for i in load_images(str(subject), "subject")[0]])
    cls = torch.stack([to_tensor(i, px, True) for i in load_images(class_set, "class")[0]])
    ids = tok(["a photo of sks dog", "a photo of dog"], padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    unet.train()
    stamps = []
    for _ in range(steps + warmup):
        pixels = torch.cat([inst[torch.randint(0, len(inst), (1,))], cls[torch.randint(0, len(cls), (1,))]])
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            states = te(ids)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (2,))
        pred = unet(sched.add_noise(latents, noise, t), t, states).sample
        p_i, p_c = pred.chunk(2)
        n_i, n_c = noise.chunk(2)
        loss = torch.nn.functional.mse_loss(p_i, n_i) + torch.nn.functional.mse_loss(p_c, n_c)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        stamps.append(time.perf_counter())
    return {"steps_per_s": steps / (stamps[-1] - stamps[warmup - 1])}


def prior_ours(work: Path, size: str, images: int) -> dict:
    from diffusers import StableDiffusionPipeline  # noqa: F401 - imported before the clock, as for the baseline

    from inkbooth.dreambooth import prior

    base, _, _ = setup(work, size)
    cfg = prior.PriorConfig(class_prompt="a photo of cat", num_images=images, batch_size=8, seed=1)
    start = time.perf_counter()
    prior.generate_prior_images(str(base), str(work / "prior-ours"), cfg)
    return {"images_per_s": images / (time.perf_counter() - start)}


def prior_baseline(work: Path, size: str, images: int) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    base, _, _ = setup(work, size)
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out = work / "prior-baseline"
    out.mkdir(exist_ok=True)
    for i in range(0, images, 4):  # default scheduler (PNDM), 50 steps, as the reference script does
        batch = pipe(["a photo of cat"] * 4, num_inference_steps=50, generator=torch.Generator().manual_seed(i)).images
        for j, img in enumerate(batch):
            img.save(out / f"{i + j:06d}.png")
    return {"images_per_s": images / (time.perf_counter() - start)}


VARIANTS = {"trainer": trainer, "baseline": baseline, "prior-ours": prior_ours, "prior-baseline": prior_baseline}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    fn = VARIANTS[args.only]
    result = fn(work, args.size, args.images if args.only.startswith("prior") else args.steps)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", choices=sorted(SHAPES), default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/dreambooth.json")
    args = parser.parse_args()
    if args.only:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        setup(Path(tmp), args.size)  # shared inputs, made once, outside the timed children
        for name in VARIANTS:
            cmd = [sys.executable, __file__, "--only", name, "--work", tmp, "--size", args.size, "--steps",
                   str(args.steps), "--images", str(args.images), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name] = json.loads(line[0][7:])
    t, b = results["trainer"], results["baseline"]
    po, pb = results["prior-ours"], results["prior-baseline"]
    print(f"\nDreamBooth, {args.size} Stable Diffusion, {args.threads} threads, CPU\n")
    print("| measure | inkbooth | baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| training steps/s ({args.steps} steps) | {t['steps_per_s']:.2f} | {b['steps_per_s']:.2f} | "
          f"{t['steps_per_s'] / b['steps_per_s']:.2f}x |")
    print(f"| class images/s ({args.images} images) | {po['images_per_s']:.2f} | {pb['images_per_s']:.2f} | "
          f"{po['images_per_s'] / pb['images_per_s']:.2f}x |")
    print(f"| peak RSS, training (MB) | {t['peak_rss_mb']} | {b['peak_rss_mb']} | "
          f"{t['peak_rss_mb'] / b['peak_rss_mb']:.2f}x |")
    print(f"| peak RSS, class images (MB) | {po['peak_rss_mb']} | {pb['peak_rss_mb']} | "
          f"{po['peak_rss_mb'] / pb['peak_rss_mb']:.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
