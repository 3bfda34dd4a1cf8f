"""Class-image sampler settings by measured error: each against a converged solution, over many
prompts and seeds, on two model shapes; the default of ``PriorConfig`` follows from the result.

For every case (a prompt and a seed: the seed fixes the initial latents, as ``generate_prior_images``
seeds image ``i`` from ``image_seed(seed, i)``) each sampler setting runs the same guided ODE as the
class images (the pipeline itself, guidance 7.5, empty negative prompt) from the same initial latents.
Its error is the RMS distance to the converged solution (DPM-Solver++ on trailing timesteps at
``--truth-steps``), in latent space and in decoded pixels (0-255, before rounding). Per setting and
shape: the per-case ratio of its error to the error of the reference script's sampler (PNDM, 50
steps, SD 1.x's "leading" timesteps with offset 1) as mean, median, p90 and max, the share of cases
where it is at or below PNDM-50's, its UNet calls per image (counted) and process CPU s per image.
A truth check reruns the first ``--check`` cases at twice the truth's steps and reports how far the
truth is from that, relative to PNDM-50's error.

The rule (``choose``): the setting with the fewest UNet calls whose error, in pixels and in latents, is
at or below PNDM-50's in at least 90% of the cases on every shape; where on some shape no setting
passes, that is reported (with the closest setting there) and the rule is applied over the other
shapes. Cases are a balanced design of ``--prompts`` prompts and ``--seeds`` seeds: ``--cases``
distinct (prompt, seed) pairs, each prompt and each seed equally often.

The model weights are random, so this measures the solver's error on the ODE such a network defines,
not how images look. Shapes: ``small`` is bench/dreambooth.py's default model (16² latents, factor-4
VAE); ``unet-heavy`` has 32² latents behind a factor-2 VAE, so the UNet does nearly all the work.

    python bench/sampler.py [--shapes small,unet-heavy] [--cases 48,32] [--truth-steps 200] [--jobs 2]

The full result goes to ``--out`` (bench/results/sampler.json); the choice and the summary also to
``--choice`` (bench/sampler-choice.json, kept in git: tests/test_dreambooth.py checks that
PriorConfig's defaults are what it says was chosen).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine, peak_rss_mb, run_child

HERE = Path(__file__).resolve().parent
SHAPES = {
    # bench/dreambooth.py's default model ("small").
    "small": {"sample_size": 64, "unet_channels": [64, 128], "vae_channels": [64, 128, 128], "text_hidden": 64},
    # 32² latents (factor-2 VAE): the UNet's share of the work is larger. Two heads, not eight: at
    # 1024 positions eight 4-wide heads made attention 2x the cost of the rest on one CPU thread.
    "unet-heavy": {"sample_size": 64, "unet_channels": [32, 64], "vae_channels": [32, 64], "text_hidden": 32,
                   "attention_heads": 2},
}
PROMPTS = [
    "a photo of dog", "a photo of cat", "a painting of a house", "a drawing of a person",
    "a photo of a red backpack", "a blue toy on the beach", "a portrait of a woman, oil painting",
    "a man running in the city", "a green house in the forest", "a watercolor of a garden",
    "a photo of a small cat in the snow", "a big dog sitting on the street", "high quality photo of a toy",
    "a picture of a person with a backpack", "a red house by the beach", "a drawing of a cat, watercolor style",
]
SEED = 7  # base seed: seed j of the design is image_seed(SEED, j), as generate_prior_images seeds image j
GUIDANCE = 7.5
REFERENCE = ("pndm", "model", 50)  # the script's: the pipeline's scheduler (PNDM), 50 steps, SD 1.x's spacing
# In the order they run: the decisive ones first. "linspace", what "model" spacing gives
# DPM-Solver++ on SD 1.5 (NOTE_SD15), is not run: at 15-25 steps its timesteps are trailing's or
# one less (the result lists every setting's timesteps).
SETTINGS = [
    REFERENCE,
    ("dpmsolver++", "trailing", 20),
    ("dpmsolver++", "trailing", 15),
    ("dpmsolver++", "trailing", 25),
    ("dpmsolver++", "trailing", 10),
    ("dpmsolver++", "leading", 20),   # the first default (the tiny model's own spacing, as saved)
]
NOTE_SD15 = (
    "SD 1.5's scheduler_config.json (diffusers 0.6.0) is a PNDMScheduler with steps_offset=1, skip_prk_steps and no "
    "timestep_spacing, so PNDM gets its default, 'leading' (50 steps: 51 timesteps 981, 961, 961, ..., 1). "
    "diffusers' from_config drops keys that were defaults (_use_default_values), so DPM-Solver++ made from it with "
    "'model' spacing gets DPM-Solver++'s own default, 'linspace', not 'leading'; the tiny models save every key, so "
    "on them 'model' means 'leading'.")
RULE = ("fewest UNet calls per image among settings whose error, in pixels and in latents, is at or below "
        "PNDM-50's in at least 90% of the (prompt, seed) cases on every shape")
FALLBACK = ("where on some shape no setting passes, the rule is reported as not met there and the choice is made "
            "over the other shapes")
SHARE = 0.9


def design(cases: int, prompts: int, seeds: int) -> list[tuple[int, int]]:
    """``cases`` distinct (prompt, seed) index pairs with every prompt and every seed equally often."""
    if cases % prompts or cases % seeds or cases > prompts * seeds or prompts != seeds:
        raise SystemExit("--cases must be a multiple of --prompts (= --seeds) and at most their product")
    # Round r pairs prompt p with seed (p + r * step) mod n: distinct across rounds when the
    # offsets r * step are distinct mod n, which a step coprime to n guarantees.
    n, rounds = prompts, cases // prompts
    step = next(s for s in range(max(1, n // rounds), 2 * n) if all((s * r) % n for r in range(1, rounds)) and
                len({(s * r) % n for r in range(rounds)}) == rounds)
    return [(p, (p + r * step) % n) for r in range(rounds) for p in range(n)]


def label(setting: tuple[str, str, int]) -> str:
    return f"{setting[0]}/{setting[1]}/{setting[2]}"


# ---------------------------------------------------------------------------------------------
# One shape, in a child process
# ---------------------------------------------------------------------------------------------


def run_shape(args: argparse.Namespace) -> dict:
    """Every setting on every case of one shape; errors per case against the converged solution."""
    import numpy as np
    import torch

    from inkbooth import tiny
    from inkbooth.dreambooth import prior

    torch.set_num_threads(args.threads)
    shape, cases = args.only, design(int(args.cases), args.prompts, args.seeds)
    work = Path(tempfile.mkdtemp(prefix=f"sampler-{shape}-"))
    folder = tiny.build_tiny_sd(work / "sd", tiny.TinySDConfig(**SHAPES[shape]))
    pipe = prior.load_pipeline(folder, "cpu", torch.float32)
    base = pipe.scheduler.config
    size = prior.native_size(folder)
    calls = [0]
    pipe.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def run(setting: tuple[str, str, int], subset: list[tuple[int, int]]) -> dict:
        name, spacing, steps = setting
        pipe.scheduler = prior.make_scheduler(name, base, spacing)
        lat, img, c0, n0 = [], [], time.process_time(), calls[0]
        for i in range(0, len(subset), int(args.chunk)):
            part = subset[i:i + int(args.chunk)]
            gens = [torch.Generator().manual_seed(prior.image_seed(SEED, s)) for _, s in part]
            with torch.no_grad():
                out = pipe([PROMPTS[p] for p, _ in part], negative_prompt=[""] * len(part), num_inference_steps=steps,
                           guidance_scale=GUIDANCE, height=size, width=size, generator=gens,
                           output_type="latent").images
                # As the pipeline decodes (output_type="np"), without the rounding to 8 bits.
                pix = pipe.vae.decode(out / pipe.vae.config.scaling_factor).sample
            lat.append(out.double().numpy())
            img.append(((pix / 2 + 0.5).clamp(0, 1) * 255).double().numpy())
        cpu = time.process_time() - c0
        chunks = -(-len(subset) // int(args.chunk))
        print(f"{shape} {label(setting)}: {cpu:.0f} CPU s", file=sys.stderr, flush=True)
        return {"latent": np.concatenate(lat), "pixel": np.concatenate(img), "cpu_s_per_image": cpu / len(subset),
                "unet_calls_per_image": (calls[0] - n0) / chunks}

    def rms(a, b):
        return np.sqrt(((a - b) ** 2).reshape(len(a), -1).mean(axis=1))

    def timesteps(setting: tuple[str, str, int]) -> list[int]:
        sched = prior.make_scheduler(setting[0], base, setting[1])
        sched.set_timesteps(setting[2])
        return [int(t) for t in sched.timesteps]

    truth_setting = ("dpmsolver++", "trailing", args.truth_steps)
    truth = run(truth_setting, cases)
    result = {"shape": shape, "model": SHAPES[shape], "latent_side": int(truth["latent"].shape[-1]),
              "cases": [{"prompt": PROMPTS[p], "seed_index": s} for p, s in cases],
              "truth": {"setting": label(truth_setting), "cpu_s_per_image": truth["cpu_s_per_image"]},
              "settings": {}, "threads": args.threads}
    for setting in SETTINGS:  # the reference first: the others' errors are read against it
        out = run(setting, cases)
        result["settings"][label(setting)] = {
            "errors": {m: rms(out[m], truth[m]).tolist() for m in ("latent", "pixel")},
            "unet_calls_per_image": out["unet_calls_per_image"], "cpu_s_per_image": out["cpu_s_per_image"],
            "timesteps": timesteps(setting)}
        if args.partial:  # what is done so far, should the run be cut short
            Path(args.partial).write_text(json.dumps(result))
    check_cases = cases[:args.check]
    finer = run(("dpmsolver++", "trailing", 2 * args.truth_steps), check_cases)
    ref = result["settings"][label(REFERENCE)]["errors"]
    result["truth"]["check"] = {
        "cases": len(check_cases), "steps": 2 * args.truth_steps,
        "rms_to_finer_over_pndm50_error": {m: (rms(truth[m][:len(check_cases)], finer[m]) /
                                               np.array(ref[m][:len(check_cases)])).tolist()
                                           for m in ("latent", "pixel")}}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# ---------------------------------------------------------------------------------------------
# The parent: shapes in child processes, ratios, the rule
# ---------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def summarize(shape: dict) -> dict:
    """Per setting and error space: the spread of its per-case error ratio to PNDM-50's."""
    settings = shape["settings"]
    ref = settings[label(REFERENCE)]
    rows = {}
    for key, s in settings.items():
        row = {"unet_calls_per_image": s["unet_calls_per_image"], "cpu_s_per_image": s["cpu_s_per_image"],
               "speedup_calls": ref["unet_calls_per_image"] / s["unet_calls_per_image"],
               "speedup_cpu": ref["cpu_s_per_image"] / s["cpu_s_per_image"]}
        for m in ("pixel", "latent"):
            ratios = [a / b for a, b in zip(s["errors"][m], ref["errors"][m])]
            row[m] = {"mean_error": statistics.fmean(s["errors"][m]), "ratio_mean": statistics.fmean(ratios),
                      "ratio_median": statistics.median(ratios), "ratio_p90": quantile(ratios, 0.9),
                      "ratio_max": max(ratios), "share_at_or_below": sum(r <= 1 for r in ratios) / len(ratios)}
        rows[key] = row
    return rows


def choose(summaries: dict[str, dict]) -> dict:
    """The rule (RULE): fewest UNet calls among the settings at or below PNDM-50 in >= 90% of cases
    on every shape, in both error spaces; ties go to the lower worst mean ratio.

    Where no setting passes on some shape, the rule is reported as not met there and the choice is
    made over the shapes where some setting passes (FALLBACK); ``best_where_unmet`` names, per such
    shape, the setting with the lowest mean pixel ratio, so the report shows what the choice costs there.
    """
    keys = [label(s) for s in SETTINGS if s != REFERENCE and all(label(s) in r for r in summaries.values())]

    def passes(rows: dict, k: str) -> bool:
        return all(rows[k][m]["share_at_or_below"] >= SHARE for m in ("pixel", "latent"))

    unmet = [shape for shape, rows in summaries.items() if not any(passes(rows, k) for k in keys)]
    judged = {shape: rows for shape, rows in summaries.items() if shape not in unmet}
    passing = [k for k in keys if judged and all(passes(rows, k) for rows in judged.values())]
    result = {"rule": RULE, "fallback": FALLBACK, "rule_met": not unmet, "unmet_shapes": unmet, "passing": passing,
              "best_where_unmet": {shape: min(keys, key=lambda k: summaries[shape][k]["pixel"]["ratio_mean"])
                                   for shape in unmet}, "chosen": None}
    if passing:
        best = min(passing, key=lambda k: (max(r[k]["unet_calls_per_image"] for r in summaries.values()),
                                           max(r[k]["pixel"]["ratio_mean"] for r in summaries.values())))
        name, spacing, steps = best.split("/")
        result["chosen"] = {"scheduler": name, "timestep_spacing": spacing, "steps": int(steps)}
    return result


def print_report(report: dict) -> None:
    m = report["machine"]
    print(f"\nSampler error vs the converged solution ({report['args']['truth_steps']} DPM-Solver++ trailing steps); "
          f"{m['cpu']} ({m['cores']} cores; {m['features']}), {report['args']['threads']} thread(s) per shape, "
          f"load {m['load_before']} -> {m['load_after']}, {m['minutes']} min\n")
    for shape, rows in report["summary"].items():
        r = report["shapes"][shape]
        chk = r["truth"].get("check")
        check = (f"truth vs {chk['steps']} steps: at most {max(chk['rms_to_finer_over_pndm50_error']['pixel']):.3f} "
                 f"(pixels), {max(chk['rms_to_finer_over_pndm50_error']['latent']):.3f} (latents) of PNDM-50's error"
                 if chk else "truth not checked")
        print(f"**{shape}** ({r['latent_side']}² latents; {len(r['cases'])} cases; {check})\n")
        print("| sampler | timesteps | steps | UNet calls/image | speed-up (calls) | speed-up (CPU) | pixel RMS | "
              "ratio to PNDM-50: mean / median / p90 / max | at or below PNDM-50 | latent ratio: mean / p90 / max "
              "| latent: at or below |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for key, x in rows.items():
            name, spacing, steps = key.split("/")
            p, lt = x["pixel"], x["latent"]
            print(f"| {name} | {spacing} | {steps} | {x['unet_calls_per_image']:.0f} | {x['speedup_calls']:.2f}x | "
                  f"{x['speedup_cpu']:.2f}x | {p['mean_error']:.3f} | {p['ratio_mean']:.2f} / {p['ratio_median']:.2f} / "
                  f"{p['ratio_p90']:.2f} / {p['ratio_max']:.2f} | {p['share_at_or_below']:.0%} | "
                  f"{lt['ratio_mean']:.2f} / {lt['ratio_p90']:.2f} / {lt['ratio_max']:.2f} | "
                  f"{lt['share_at_or_below']:.0%} |")
        print()
    c = report["choice"]
    print(f"Rule: {c['rule']}; {c['fallback']}.\nNot met on: {', '.join(c['unmet_shapes']) or 'none'} (best there: "
          f"{c['best_where_unmet']}). Passing elsewhere: {', '.join(c['passing']) or 'none'}; chosen: {c['chosen']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="small,unet-heavy", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--cases", default="48,32", help="(prompt, seed) cases per shape, comma-separated")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--truth-steps", type=int, default=200)
    parser.add_argument("--check", type=int, default=4, help="cases rerun at twice the truth's steps")
    parser.add_argument("--chunk", default="16,8", help="cases per pipeline call (the UNet batch is twice it), per "
                        "shape, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="threads per shape")
    parser.add_argument("--jobs", type=int, default=1, help="shapes measured at once")
    parser.add_argument("--out", default="bench/results/sampler.json")
    parser.add_argument("--choice", default=str(HERE / "sampler-choice.json"))
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--partial", default="", help=argparse.SUPPRESS)
    parser.add_argument("--from-partial", action="store_true", help="report from the partial files of a run cut short")
    parser.add_argument("--from-results", action="store_true", help="report again from --out, measuring nothing")
    args = parser.parse_args()
    if args.only:
        print("RESULT " + json.dumps(run_shape(args)))
        return
    shapes = args.shapes.split(",")
    counts = [int(c) for c in args.cases.split(",")]
    counts += counts[-1:] * (len(shapes) - len(counts))
    chunks = [int(c) for c in args.chunk.split(",")]
    chunks += chunks[-1:] * (len(shapes) - len(chunks))
    for c in counts:
        design(c, args.prompts, args.seeds)
    info, started = machine(), time.time()

    def spawn(shape: str, cases: int, chunk: int) -> dict:
        cmd = [sys.executable, __file__, "--only", shape, "--cases", str(cases), "--prompts", str(args.prompts),
               "--seeds", str(args.seeds), "--truth-steps", str(args.truth_steps), "--check", str(args.check),
               "--chunk", str(chunk), "--threads", str(args.threads),
               "--partial", str(Path(args.out).with_name(f"sampler-{shape}.partial.json"))]
        return run_child(shape, cmd, args.threads, {"HF_HUB_OFFLINE": "1"}, timeout=4 * 3600)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.from_results:  # the rule applied again to a finished run's measurements
        earlier = json.loads(Path(args.out).read_text())
        results, info = earlier["shapes"], earlier["machine"]
        sys.argv = ["", *earlier["command"].split()[2:]] if "command" in earlier else sys.argv
    elif args.from_partial:  # a run cut short: what its shapes had finished
        results = {s: json.loads(Path(args.out).with_name(f"sampler-{s}.partial.json").read_text()) for s in shapes}
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            results = dict(zip(shapes, pool.map(spawn, shapes, counts, chunks)))
    if not args.from_results:
        info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        info["minutes"] = f"{(time.time() - started) / 60:.1f}"
    command = "python bench/sampler.py " + " ".join(sys.argv[1:])
    summaries = {s: summarize(r) for s, r in results.items()}
    report = {"args": {k: v for k, v in vars(args).items() if k != "only"}, "command": command.strip(),
              "machine": info, "note_sd15": NOTE_SD15,
              "shapes": results, "summary": summaries, "choice": choose(summaries)}
    print_report(report)
    Path(args.out).write_text(json.dumps(report, indent=1))
    Path(args.choice).write_text(json.dumps({
        **report["choice"], "command": command.strip(), "machine": info, "note_sd15": NOTE_SD15,
        "cases": {s: len(r["cases"]) for s, r in results.items()}, "prompts": args.prompts, "seeds": args.seeds,
        "truth": {s: r["truth"] for s, r in results.items()}, "summary": summaries}, indent=1) + "\n")


if __name__ == "__main__":
    main()
