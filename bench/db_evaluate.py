"""(d) of bench/dreambooth.py: what the DreamBooth evaluation stage costs per step it judges.

The baseline, in the same process and rounds: drawing the very same pictures (every prompt's and the
class prompt's, same sampler, steps and seeds) from the same candidates without judging them, i.e.
what a team pays today to eyeball grids. ``evaluate_dreambooth`` judges the base model and the last
step (``only_steps``), so its time per candidate is set against the baseline's per candidate; the
ratio is the evaluation's overhead over the sampling it needs anyway (loading the judges, DINO and
CLIP embeddings, the grids, publishing). Also given: the seconds per step judged in training steps
of the same run (how many steps of training one judged step costs).

Judges: the committed small CLIP and DINO (``inkbooth.drawing``) where they are built, else tiny
random ones of the same classes (said in the report).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def _judges(work: Path) -> tuple[str, str, str]:
    from inkbooth import drawing, tiny

    try:
        return str(drawing.path("shapes-clip")), str(drawing.path("shapes-dino")), "committed shapes-clip and shapes-dino"
    except FileNotFoundError:
        clip, dino = tiny.build_tiny_judges(work / "judges")
        return str(clip), str(dino), "tiny random CLIP and DINO"


def evaluation_cost(work: Path, paths: dict[str, str], rounds: int, threads: int, prompts: int = 25, images: int = 4,
                    train_steps: int = 8) -> dict:
    """Seconds per candidate of the evaluation and of sampling alone, interleaved over ``rounds``."""
    import torch

    torch.set_num_threads(threads)
    from inkbooth import artifacts, models
    from inkbooth.dreambooth import evaluate, train
    from inkbooth.dreambooth.fidelity import EvaluateConfig, fill

    trained = work / "eval-trained"
    t0 = time.perf_counter()
    train.train_dreambooth(paths["base"], paths["subject"], str(trained), train.TrainConfig(
        instance_prompt="a photo of sks dog", class_prompt="a photo of dog", max_train_steps=train_steps,
        learning_rate=1e-4), class_images=paths["class_set"], checkpoints=str(work / "eval-ckpt"))
    train_s_per_step = (time.perf_counter() - t0) / train_steps  # loading included: an upper bound
    clip, dino, judged_by = _judges(work)
    cfg = EvaluateConfig(clip_model=clip, dino_model=dino, images_per_prompt=images, device="cpu")
    cfg.prompts, cfg.prompt_set = list(cfg.prompt_templates()[:prompts]), "custom"
    folder, base = artifacts.fetch(str(trained)), models.resolve(paths["base"])
    templates = cfg.prompt_templates()
    texts = [fill(t, "sks", "dog") for t in templates for _ in range(images)]
    seeds = [i * 1000 + j for i in range(len(templates)) for j in range(images)]
    class_seeds = [evaluate.CLASS_SEED_OFFSET + j for j in range(cfg.class_images)]
    steps = artifacts.read_manifest(str(trained)).metrics["steps"]

    def sampling_only() -> float:
        started = time.perf_counter()
        for rel in ("base", "model"):
            pipe = evaluate.load_candidate(folder, rel, base, "cpu", torch.float32)
            evaluate._draw(pipe, texts, seeds, cfg)
            evaluate._draw(pipe, ["a photo of dog"] * len(class_seeds), class_seeds, cfg)
        return (time.perf_counter() - started) / 2

    def evaluation(r: int) -> float:
        started = time.perf_counter()
        evaluate.evaluate_dreambooth(str(trained), str(work / f"evaluation-{r}"), EvaluateConfig(
            **{**cfg.__dict__, "only_steps": [steps]}))
        return (time.perf_counter() - started) / 2

    ours, baseline = [], []
    for r in range(rounds):
        if r % 2 == 0:
            ours.append(evaluation(r))
            baseline.append(sampling_only())
        else:
            baseline.append(sampling_only())
            ours.append(evaluation(r))
    ratio = statistics.median(ours) / statistics.median(baseline)
    return {"judges": judged_by, "prompts": len(templates), "images_per_prompt": images, "class_images": cfg.class_images,
            "sampling_steps": cfg.steps, "seconds_per_step_judged": ours, "sampling_only_seconds": baseline,
            "overhead_ratio": ratio, "per_round": [a / b for a, b in zip(ours, baseline)],
            "train_seconds_per_step": train_s_per_step,
            "training_steps_per_step_judged": statistics.median(ours) / train_s_per_step}


def print_evaluation(e: dict) -> None:
    med = statistics.median
    print(f"\nEvaluation stage per step judged ({e['prompts']} prompts x {e['images_per_prompt']} pictures + "
          f"{e['class_images']} class pictures, {e['sampling_steps']} sampling steps; judges: {e['judges']}):\n")
    print("| measure | evaluation median (min-max) | sampling alone median (min-max) | ratio | per-round |")
    print("|---|---|---|---|---|")
    o, b, p = e["seconds_per_step_judged"], e["sampling_only_seconds"], e["per_round"]
    print(f"| s per candidate | {med(o):.2f} ({min(o):.2f}-{max(o):.2f}) | {med(b):.2f} ({min(b):.2f}-{max(b):.2f}) | "
          f"{e['overhead_ratio']:.2f}x | {med(p):.2f}x ({min(p):.2f}-{max(p):.2f}) |")
    print(f"\nOne step judged costs as much as {e['training_steps_per_step_judged']:.1f} training steps of this model "
          f"({e['train_seconds_per_step']:.3f} s/step, loading included).")
