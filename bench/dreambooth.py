"""DreamBooth speed against the real reference script, diffusers v0.39.0 ``train_dreambooth.py``.

The baseline is the unmodified script at ``../shared/reference/diffusers-v0.39.0/train_dreambooth.py``
(override with ``--reference``), run with ``runpy`` in a child process and timed from outside. Every
variant runs in its own fresh process with the same environment: the same thread count, and
``bench/standin`` first on ``sys.path`` (a benchmark-only stand-in for the few torchvision transforms
the script imports; PyPI's torchvision does not import beside torch 2.13.0 CPU).

(a) training, three configurations (no prior preservation, prior preservation, text encoder trained),
    same tiny Stable Diffusion, same subject and class images, same batch, prompts, learning rate,
    steps and seed. A global optimizer step hook (``torch.optim.Optimizer``) stamps wall and process
    CPU time after every optimizer step, on both sides alike; the first ``--warmup`` steps are not
    counted. Reported: steps/s (wall) and CPU s/step.
(b) class images: the reference script's own in-line generation (its defaults: the pipeline's
    scheduler, PNDM, 50 steps, sample batch 4) against ``generate_prior_images`` at its defaults, and
    at the reference's scheduler and steps. Both sides are timed the same way: a wrapper around
    ``StableDiffusionPipeline.__call__`` records wall and CPU time from the start of the first
    sampling call to the end of the last, and counts the images.
(d) the evaluation stage's cost per step judged, against drawing the same pictures alone (see
    bench/db_evaluate.py; ``--parts evaluate``).
(c) sampler statistics for lower step counts: the same seeds through each sampler setting, compared
    with a converged solution of the same ODE (see ``--quality``; over many prompts, seeds and two
    model shapes: bench/sampler.py).

Rounds are interleaved (every variant once per round, the order of the two sides alternating); the
report gives medians, the spread (min-max) and the ratio of medians, plus the median of per-round
ratios.

    python bench/dreambooth.py [--rounds 5] [--steps 30] [--threads 1] [--images 16] [--quality]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine, peak_rss_mb, run_child, summary

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin"
REFERENCE = HERE.parent.parent / "shared" / "reference" / "diffusers-v0.39.0" / "train_dreambooth.py"
INSTANCE_PROMPT, CLASS_PROMPT = "a photo of sks dog", "a photo of dog"

SHAPES = {
    "tiny": {},
    # Wider, at 64 px: the VAE and UNet costs stand in a ratio closer to SD 1.x at 512 px.
    "small": {"sample_size": 64, "unet_channels": [64, 128], "vae_channels": [64, 128, 128], "text_hidden": 64},
}
TRAIN_CONFIGS = {
    "no-prior": {"prior": False, "text_encoder": False},
    "prior": {"prior": True, "text_encoder": False},
    "text-encoder": {"prior": True, "text_encoder": True},
}


# ---------------------------------------------------------------------------------------------
# Shared inputs, made once by the parent
# ---------------------------------------------------------------------------------------------


def setup(work: Path, size: str, class_images: int) -> dict[str, str]:
    """Model, subject images, class images (a published set for us, a plain folder for the script)."""
    marker = work / f"setup-{size}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    from inkbooth import tiny
    from inkbooth.demo import subject_images
    from inkbooth.dreambooth import prior

    base = tiny.build_tiny_sd(work / f"sd-{size}", tiny.TinySDConfig(**SHAPES[size]))
    subject_images(work / "subject", 4)
    cfg = prior.PriorConfig(class_prompt=CLASS_PROMPT, num_images=class_images, steps=4, batch_size=8)
    class_set = prior.generate_prior_images(str(base), str(work / "prior"), cfg)["uri"]
    plain = work / "class-plain"  # the script takes every file of its class folder for an image
    plain.mkdir(exist_ok=True)
    for png in sorted(Path(class_set).glob("*.png")):
        shutil.copy2(png, plain / png.name)
    paths = {"base": str(base), "subject": str(work / "subject"), "class_set": class_set, "class_plain": str(plain),
             "size": str(prior.native_size(base))}
    marker.write_text(json.dumps(paths))
    return paths


# ---------------------------------------------------------------------------------------------
# Timing hooks (identical for both sides)
# ---------------------------------------------------------------------------------------------


def optimizer_stamps() -> list[tuple[float, float]]:
    """(wall, process CPU) after every optimizer step of any torch optimizer in this process."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    stamps: list[tuple[float, float]] = []
    register_optimizer_step_post_hook(
        lambda *_: stamps.append((time.perf_counter(), time.process_time())))
    return stamps


def sampling_calls() -> list[dict[str, float]]:
    """Per call of StableDiffusionPipeline: start and end (wall, CPU) and the images it returned."""
    from diffusers import StableDiffusionPipeline

    calls: list[dict[str, float]] = []
    original = StableDiffusionPipeline.__call__

    def timed(self, *args, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        out = original(self, *args, **kwargs)
        calls.append({"w0": w0, "c0": c0, "w1": time.perf_counter(), "c1": time.process_time(),
                      "images": len(out.images)})
        return out

    StableDiffusionPipeline.__call__ = timed
    return calls


def step_rates(stamps: list[tuple[float, float]], warmup: int) -> dict[str, float]:
    (w0, c0), (w1, c1) = stamps[warmup - 1], stamps[-1]
    n = len(stamps) - warmup
    return {"steps_per_s": n / (w1 - w0), "cpu_s_per_step": (c1 - c0) / n, "steps": n}


def image_rates(calls: list[dict[str, float]]) -> dict[str, float]:
    images = sum(c["images"] for c in calls)
    wall = calls[-1]["w1"] - calls[0]["w0"]
    cpu = calls[-1]["c1"] - calls[0]["c0"]
    return {"images_per_s": images / wall, "cpu_s_per_image": cpu / images, "images": images}


# ---------------------------------------------------------------------------------------------
# The variants, each run in a child process
# ---------------------------------------------------------------------------------------------


def run_reference(script: Path, args: list[str]) -> None:
    """The unmodified reference script, as ``python train_dreambooth.py ARGS`` would run it."""
    argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv


def reference_train_args(paths: dict[str, str], out: Path, steps: int, prior: bool, text_encoder: bool) -> list[str]:
    args = ["--pretrained_model_name_or_path", paths["base"], "--instance_data_dir", paths["subject"],
            "--instance_prompt", INSTANCE_PROMPT, "--output_dir", str(out), "--resolution", paths["size"],
            "--center_crop", "--train_batch_size", "1", "--max_train_steps", str(steps), "--seed", "0"]
    if prior:
        args += ["--with_prior_preservation", "--class_data_dir", paths["class_plain"], "--class_prompt", CLASS_PROMPT,
                 "--num_class_images", str(len(list(Path(paths["class_plain"]).iterdir())))]
    if text_encoder:
        args += ["--train_text_encoder"]
    return args


# Candidates: inkbooth with one measured source switched off (or, for compile, on), to record
# what each gave. Each is a child-process patch of the library; the library code is otherwise the same.
CANDIDATES = ("keep-freed-off", "contiguous", "compile", "sampler-before")


def apply_candidate(name: str) -> dict:
    """Patch this child process for candidate ``name``; returns TrainConfig/PriorConfig overrides."""
    if name == "keep-freed-off":
        from inkbooth import runtime

        runtime.keep_freed_memory = lambda *a, **k: False
        return {}
    if name == "contiguous":
        import torch

        from inkbooth.dreambooth import prior

        loader = prior.load_pipeline

        def contiguous_pipeline(*args, **kwargs):
            pipe = loader(*args, **kwargs)
            pipe.unet.to(memory_format=torch.contiguous_format)
            return pipe

        prior.load_pipeline = contiguous_pipeline
        return {"channels_last": False}
    if name == "compile":
        from diffusers import UNet2DConditionModel

        loader = UNet2DConditionModel.from_pretrained.__func__

        def compiled(cls, *args, **kwargs):
            unet = loader(cls, *args, **kwargs)
            unet.compile(fullgraph=True, dynamic=False)
            return unet

        UNet2DConditionModel.from_pretrained = classmethod(compiled)
        return {}
    if name == "sampler-before":  # the earlier class-image default: 20 DPM-Solver++ steps on SD's leading timesteps
        return {"steps": 20, "timestep_spacing": "model"}
    raise ValueError(f"unknown candidate {name!r}; choose from {CANDIDATES}")


def train_variant(side: str, config: str, paths: dict[str, str], out: Path, steps: int, warmup: int,
                  reference: Path) -> dict:
    spec = TRAIN_CONFIGS[config]
    side, _, candidate = side.partition("~")
    overrides = apply_candidate(candidate) if candidate else {}
    overrides.pop("steps", None)
    overrides.pop("timestep_spacing", None)
    stamps = optimizer_stamps()
    if side == "reference":
        run_reference(reference, reference_train_args(paths, out, steps + warmup, spec["prior"], spec["text_encoder"]))
    elif side == "floor":
        floor_loop(paths, steps + warmup, spec["prior"], spec["text_encoder"])
    else:
        from inkbooth.dreambooth import train

        cfg = train.TrainConfig(instance_prompt=INSTANCE_PROMPT, class_prompt=CLASS_PROMPT,
                                with_prior_preservation=spec["prior"], train_text_encoder=spec["text_encoder"],
                                max_train_steps=steps + warmup, train_batch_size=1, seed=0, **overrides)
        train.train_dreambooth(paths["base"], paths["subject"], str(out), cfg,
                               class_images=paths["class_set"] if spec["prior"] else None)
    if len(stamps) != steps + warmup:
        raise RuntimeError(f"{side}/{config}: {len(stamps)} optimizer steps stamped, expected {steps + warmup}")
    return step_rates(stamps, warmup)


def floor_loop(paths: dict[str, str], steps: int, prior: bool, text_encoder: bool) -> None:
    """The least any eager trainer of this model must do per step: UNet (and text encoder) forward and
    backward on ready latents, clipping, fused AdamW. No data, no accelerate, no logging, no schedule.

    The reference's step divided by this one is the largest speed-up a trainer can reach without
    changing the arithmetic (kernels, precision, compilation).
    """
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from inkbooth import runtime
    from inkbooth.dreambooth.train import TrainConfig

    runtime.keep_freed_memory()
    torch.manual_seed(0)
    base = paths["base"]
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").train()
    # The memory format inkbooth trains in by default, so the floor is the same arithmetic.
    fmt = torch.channels_last if TrainConfig().channels_last else torch.contiguous_format
    unet.to(memory_format=fmt)
    te = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(text_encoder)
    tok = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    params = list(unet.parameters()) + (list(te.parameters()) if text_encoder else [])
    opt = torch.optim.AdamW(params, lr=5e-6, fused=True)
    rows = 2 if prior else 1
    ids = tok([INSTANCE_PROMPT, CLASS_PROMPT][:rows], padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    side = int(paths["size"]) // 2 ** (len(json.loads((Path(base) / "vae" / "config.json").read_text())
                                           ["block_out_channels"]) - 1)
    latents = torch.randn(rows, 4, side, side)
    with torch.no_grad():
        cached = te(ids)[0]
    for _ in range(steps):
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (rows,))
        noisy = sched.add_noise(latents, noise, t).contiguous(memory_format=fmt)
        states = te(ids)[0] if text_encoder else cached
        loss = torch.nn.functional.mse_loss(unet(noisy, t, states).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def class_variant(side: str, setting: str, paths: dict[str, str], out: Path, images: int, reference: Path) -> dict:
    """Class images: the script's in-line generation, or generate_prior_images at a setting."""
    side, _, candidate = side.partition("~")
    overrides = apply_candidate(candidate) if candidate else {}
    overrides.pop("channels_last", None)
    calls = sampling_calls()
    if side == "reference":
        # Prior preservation with an empty class folder: the script makes num_class_images first
        # (then trains one step, which is not timed).
        args = reference_train_args(paths, out / "run", 1, False, False)
        args += ["--with_prior_preservation", "--class_data_dir", str(out / "class"), "--class_prompt", CLASS_PROMPT,
                 "--num_class_images", str(images)]
        run_reference(reference, args)
    else:
        from inkbooth.dreambooth import prior

        overrides.update({"defaults": {}, "reference-sampler": {"scheduler": "pndm", "steps": 50}}[setting])
        cfg = prior.PriorConfig(class_prompt=CLASS_PROMPT, num_images=images, seed=1, **overrides)
        prior.generate_prior_images(paths["base"], str(out / "prior"), cfg)
    return image_rates(calls)


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    paths = json.loads(Path(args.paths).read_text())
    out = Path(tempfile.mkdtemp(dir=args.work, prefix=f"{args.only}-"))
    kind, side, what = args.only.split(":")
    if kind == "train":
        result = train_variant(side, what, paths, out, args.steps, args.warmup, Path(args.reference))
    else:
        result = class_variant(side, what, paths, out, args.images, Path(args.reference))
    result["peak_rss_mb"] = peak_rss_mb()
    shutil.rmtree(out, ignore_errors=True)
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------------------------------
# The parent: interleaved rounds, medians, spread
# ---------------------------------------------------------------------------------------------


def spawn(name: str, args: argparse.Namespace, work: Path, paths_file: Path) -> dict:
    cmd = [sys.executable, __file__, "--only", name, "--work", str(work), "--paths", str(paths_file),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--images", str(args.images),
           "--threads", str(args.threads), "--reference", str(args.reference)]
    pythonpath = os.pathsep.join([str(STANDIN), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return run_child(name, cmd, args.threads, {"PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="training steps before the clock")
    parser.add_argument("--images", type=int, default=16, help="class images per run")
    parser.add_argument("--class-set", type=int, default=8, help="class images given to training")
    parser.add_argument("--size", choices=sorted(SHAPES), default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="train,class", help="train, class, evaluate (comma-separated)")
    parser.add_argument("--quality", action="store_true", help="also the sampler statistics of (c)")
    parser.add_argument("--floor", action="store_true", help="also the bare forward/backward/optimizer loop "
                        "(the ceiling of any eager trainer against the reference)")
    parser.add_argument("--candidates", default="", help=f"also inkbooth with these switched (comma-separated: "
                        f"{', '.join(CANDIDATES)}), on the prior configuration and class-image defaults")
    parser.add_argument("--reference", default=str(REFERENCE), help="path of the unmodified train_dreambooth.py")
    parser.add_argument("--out", default="bench/results/dreambooth.json")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        child(args)
        return
    parts = set(args.parts.split(","))
    if parts & {"train", "class"} and not Path(args.reference).is_file():
        raise SystemExit(f"{args.reference}: the reference script is missing (see /work/shared/reference/README.md)")
    pairs = []
    if "train" in parts:
        pairs += [(f"train:inkbooth:{c}", f"train:reference:{c}") for c in TRAIN_CONFIGS]
        if args.floor:
            pairs += [(f"train:floor:{c}", f"train:reference:{c}") for c in TRAIN_CONFIGS]
    if "class" in parts:
        pairs += [("class:inkbooth:defaults", "class:reference:defaults"),
                  ("class:inkbooth:reference-sampler", "class:reference:defaults")]
    for cand in filter(None, args.candidates.split(",")):
        if cand not in CANDIDATES:
            raise SystemExit(f"--candidates: unknown {cand!r}; choose from {', '.join(CANDIDATES)}")
        if "train" in parts and cand != "sampler-before":
            pairs.append((f"train:inkbooth~{cand}:prior", "train:reference:prior"))
        if "class" in parts and cand not in ("compile",):
            pairs.append((f"class:inkbooth~{cand}:defaults", "class:reference:defaults"))
    runs: dict[str, list[dict]] = {}
    info = machine()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths_file = work / "paths.json"
        paths_file.write_text(json.dumps(setup(work, args.size, args.class_set)))
        names = list(dict.fromkeys(n for pair in pairs for n in pair))
        for r in range(args.rounds):
            order = names if r % 2 == 0 else [n for pair in pairs for n in reversed(pair)]
            for name in dict.fromkeys(order):
                runs.setdefault(name, []).append(spawn(name, args, work, paths_file))
                print(f"round {r + 1}/{args.rounds} {name}: {runs[name][-1]}", file=sys.stderr)
        quality = sampler_quality(work, args) if args.quality else None
        judged = None
        if "evaluate" in parts:
            from db_evaluate import evaluation_cost

            judged = evaluation_cost(work, json.loads(paths_file.read_text()), args.rounds, args.threads)
    info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["minutes"] = f"{(time.time() - started) / 60:.1f}"
    report = {"args": {k: v for k, v in vars(args).items() if k not in ("only", "work", "paths")}, "machine": info,
              "runs": runs, "comparisons": compare(pairs, runs), "quality": quality, "evaluation": judged}
    print_report(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


def compare(pairs: list[tuple[str, str]], runs: dict[str, list[dict]]) -> list[dict]:
    """Per pair and measure: both sides' medians and spread, the ratio of medians, per-round ratios."""
    rows = []
    for ours, theirs in pairs:
        measures = ["steps_per_s", "cpu_s_per_step"] if ours.startswith("train") else ["images_per_s", "cpu_s_per_image"]
        for m in measures:
            a = [r[m] for r in runs[ours]]
            b = [r[m] for r in runs[theirs]]
            higher_better = m.endswith("_per_s")
            per_round = [(x / y if higher_better else y / x) for x, y in zip(a, b)]
            ratio = statistics.median(a) / statistics.median(b)
            rows.append({"ours": ours, "reference": theirs, "measure": m, "inkbooth": summary(a), "baseline": summary(b),
                         "speedup": ratio if higher_better else 1 / ratio, "per_round": summary(per_round)})
    return rows


def print_report(report: dict) -> None:
    m, a = report["machine"], report["args"]
    print(f"\nDreamBooth vs diffusers v0.39.0 train_dreambooth.py: {a['size']} Stable Diffusion, {a['threads']} "
          f"thread(s), {a['rounds']} interleaved rounds; {m['cpu']} ({m['cores']} cores; {m['features']}), "
          f"load {m['load_before']} -> {m['load_after']}\n")
    if report["comparisons"]:
        print("| comparison | measure | inkbooth median (min-max) | reference median (min-max) | speed-up | per-round |")
        print("|---|---|---|---|---|---|")
    for r in report["comparisons"]:
        i, b, p = r["inkbooth"], r["baseline"], r["per_round"]
        kind, side, what = r["ours"].split(":")
        name = f"{kind} {what}" + (f" [{side.split('~')[1]}]" if "~" in side else "") + (
            " [floor]" if side == "floor" else "")
        print(f"| {name} | {r['measure']} | {i['median']:.3f} ({i['min']:.3f}-{i['max']:.3f}) | "
              f"{b['median']:.3f} ({b['min']:.3f}-{b['max']:.3f}) | {r['speedup']:.2f}x | "
              f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f}) |")
    if report.get("evaluation"):
        from db_evaluate import print_evaluation

        print_evaluation(report["evaluation"])
    if report.get("quality"):
        q = report["quality"]
        t = q["truth"]
        print(f"\nSampler settings vs the converged solution ({t['scheduler']}, {t['spacing']}, {t['steps']} steps; "
              f"200 steps differ from it by {t['truth_check_mad_200_vs_400']:.3f}), {q['images']} images, same "
              f"seeds; pixels 0-255; converged mean {t['mean']:.1f}, std {t['std']:.1f}:\n")
        print("| sampler | timesteps | steps | | mean abs diff | PSNR dB | pixel mean | pixel std | histogram L1 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in q["rows"]:
            print(f"| {r['scheduler']} | {r['spacing']} | {r['steps']} | {r['note']} | {r['mad']:.2f} | {r['psnr']:.1f} | "
                  f"{r['mean']:.1f} | {r['std']:.1f} | {r['hist_l1']:.3f} |")


# ---------------------------------------------------------------------------------------------
# (c) image statistics at lower step counts
# ---------------------------------------------------------------------------------------------


def sampler_quality(work: Path, args: argparse.Namespace) -> dict:
    """Each sampler setting against the converged solution of the same guided ODE and seeds.

    The converged solution is DPM-Solver++ on trailing timesteps at 400 steps (checked: 200 steps
    differ from it by a small fraction of a pixel level, reported as ``truth_check``). One prompt and
    eight seeds: bench/sampler.py measures the spread over many prompts and seeds on two model
    shapes, and PriorConfig's default follows from that.
    """
    import numpy as np
    import torch

    from inkbooth.dreambooth import prior

    torch.set_num_threads(args.threads)
    paths = json.loads((work / "paths.json").read_text())
    pipe = prior.load_pipeline(paths["base"], "cpu", torch.float32)
    base_config = pipe.scheduler.config
    n = 8
    size = int(paths["size"])

    def sample(name: str, spacing: str, steps: int) -> np.ndarray:
        pipe.scheduler = prior.make_scheduler(name, base_config, spacing)
        gens = [torch.Generator().manual_seed(prior.image_seed(7, i)) for i in range(n)]
        imgs = pipe([CLASS_PROMPT] * n, num_inference_steps=steps, height=size, width=size, generator=gens,
                    output_type="np").images
        return (np.clip(imgs, 0, 1) * 255).astype(np.float64)

    truth = sample("dpmsolver++", "trailing", 400)
    check = float(np.abs(sample("dpmsolver++", "trailing", 200) - truth).mean())
    settings = [("pndm", "model", 50, "reference default"), ("dpmsolver++", "model", 20, "inkbooth's first default"),
                ("dpmsolver++", "trailing", 10, ""), ("dpmsolver++", "trailing", 15, ""),
                ("dpmsolver++", "trailing", 20, ""), ("dpmsolver++", "trailing", 25, "")]
    default = prior.PriorConfig(class_prompt=CLASS_PROMPT)
    rows = []
    for name, spacing, steps, note in settings:
        if (name, spacing, steps) == (default.scheduler, default.timestep_spacing, default.steps):
            note = "inkbooth default"
        img = sample(name, spacing, steps)
        mse = ((img - truth) ** 2).mean()
        hist = [np.histogram(x, bins=32, range=(0, 255))[0] / x.size for x in (img, truth)]
        rows.append({"scheduler": name, "spacing": spacing, "steps": steps, "note": note,
                     "mad": float(np.abs(img - truth).mean()), "psnr": float(10 * np.log10(255 ** 2 / max(mse, 1e-12))),
                     "mean": float(img.mean()), "std": float(img.std()),
                     "hist_l1": float(np.abs(hist[0] - hist[1]).sum())})
    return {"truth": {"scheduler": "dpmsolver++", "spacing": "trailing", "steps": 400, "mean": float(truth.mean()),
                      "std": float(truth.std()), "truth_check_mad_200_vs_400": check}, "images": n, "rows": rows}


if __name__ == "__main__":
    main()
