"""Profile and time inkbooth's DreamBooth training step on CPU (1 thread).

The model is the benchmark's ``small`` shape, built by bench/dreambooth.py's own ``setup`` (model,
subject images, a published class-image set); the step is inkbooth's own: ``train.train_dreambooth``
with the bench's "prior" configuration (batch 1 + 1 class image), its ``_on_step`` hook marking the
step boundaries. Nothing of the repository is changed; variants patch this process only.

    python bench/profile_step.py setup
    python bench/profile_step.py profile [--variant default]       # torch.profiler over 10 steps after 3
    python bench/profile_step.py trace [--variant default]         # where copy_/convolution_backward come from
    python bench/profile_step.py time --variant NAME               # one fresh-process timing (RESULT json)
    python bench/profile_step.py rounds --variants a,b,c --rounds 3
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("INKBOOTH_PROFILE_WORK", "/tmp/inkbooth-profile"))  # the model and runs
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WARMUP, TIMED = 3, 12

from common import machine, run_child, summary  # noqa: E402  (bench/common.py, on the path above)


def paths() -> dict[str, str]:
    return json.loads((WORK / "setup-small.json").read_text())


def do_setup() -> None:
    import torch

    torch.set_num_threads(1)
    import dreambooth as bench  # bench/dreambooth.py

    WORK.mkdir(parents=True, exist_ok=True)
    print(json.dumps(bench.setup(WORK, "small", 8), indent=1))


# ---------------------------------------------------------------------------------------------
# Variants: each patches this process before training starts; returns TrainConfig overrides
# ---------------------------------------------------------------------------------------------

VARIANTS = ("default", "contiguous", "input-cl", "weights-cl", "mkldnn-off", "conv1x1-mkldnn", "conv1x1-linear",
            "bf16-conv")


def _patch_unet_forward(fn) -> None:
    from diffusers import UNet2DConditionModel

    orig = UNet2DConditionModel.forward

    def forward(self, sample, *args, **kwargs):
        return orig(self, fn(sample), *args, **kwargs)

    UNet2DConditionModel.forward = forward


def _conv1x1_as_linear(input, weight, bias):
    """A 1x1 convolution as a matrix product: channels-last activations are already (N, H, W, C) in
    memory, so no copies."""
    import torch.nn.functional as F

    x = input.permute(0, 2, 3, 1)
    return F.linear(x, weight.view(weight.shape[0], weight.shape[1]), bias).permute(0, 3, 1, 2)


def _patch_conv1x1(mode: str) -> None:
    """1x1 convolutions (resnet conv_shortcut, transformer proj_in/proj_out) another way."""
    import torch

    orig = torch.nn.Conv2d._conv_forward

    def conv_forward(self, input, weight, bias):
        if self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding in ((0, 0), "valid") \
                and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros":
            if mode == "linear":
                return _conv1x1_as_linear(input, weight, bias)
            if mode == "mkldnn":
                return torch.ops.aten.mkldnn_convolution(input, weight, bias, [0, 0], [1, 1], [1, 1], 1)
        return orig(self, input, weight, bias)

    torch.nn.Conv2d._conv_forward = conv_forward


def apply_variant(name: str) -> dict:
    import torch

    if name == "default":
        return {}
    if name == "contiguous":  # channels_last off: UNet and input contiguous
        return {"channels_last": False}
    if name == "input-cl":  # contiguous weights, channels-last input only
        _patch_unet_forward(lambda s: s.contiguous(memory_format=torch.channels_last))
        return {"channels_last": False}
    if name == "weights-cl":  # channels-last weights, input left contiguous
        _patch_unet_forward(lambda s: s.contiguous())
        return {}
    if name == "mkldnn-off":
        torch.backends.mkldnn.enabled = False
        return {}
    if name == "conv1x1-linear":
        _patch_conv1x1("linear")
        return {}
    if name == "conv1x1-mkldnn":
        _patch_conv1x1("mkldnn")
        return {}
    if name == "bf16-conv":  # informational only: changes the arithmetic (AMX bf16 for fp32 convs)
        torch.backends.mkldnn.conv.fp32_precision = "bf16"
        return {}
    raise SystemExit(f"unknown variant {name}")


def train(variant: str, steps: int, on_step) -> None:
    import torch

    torch.set_num_threads(1)
    overrides = apply_variant(variant)
    from inkbooth.dreambooth import train as tr

    p = paths()
    out = Path(tempfile.mkdtemp(dir=WORK, prefix=f"run-{variant}-"))
    cfg = tr.TrainConfig(instance_prompt="a photo of sks dog", class_prompt="a photo of dog",
                         with_prior_preservation=True, train_text_encoder=False, max_train_steps=steps,
                         train_batch_size=1, seed=0, **overrides)
    try:
        tr.train_dreambooth(p["base"], p["subject"], str(out / "model"), cfg, class_images=p["class_set"],
                            checkpoints=str(out / "ckpt"), _on_step=on_step)
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _busy() -> tuple[int, int]:
    """(all jiffies, idle jiffies) of the machine, to tell how contended a run was."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(f), f[3] + f[4]


def do_time(variant: str) -> None:
    stamps: list[tuple[float, float]] = []
    marks = {}

    def on_step(step):
        stamps.append((time.process_time(), time.perf_counter()))
        if step == WARMUP:
            marks["b0"] = _busy()

    train(variant, WARMUP + TIMED, on_step)
    b1 = _busy()
    (c0, w0), (c1, w1) = stamps[WARMUP - 1], stamps[-1]
    per = [b[0] - a[0] for a, b in zip(stamps[WARMUP - 1:], stamps[WARMUP:])]
    idle = (b1[1] - marks["b0"][1]) / max(1, b1[0] - marks["b0"][0])
    print("RESULT " + json.dumps({"variant": variant, "cpu_s_per_step": (c1 - c0) / TIMED,
                                  "cpu_step_median": statistics.median(per), "cpu_step_min": min(per),
                                  "wall_s_per_step": (w1 - w0) / TIMED, "machine_idle": idle, "steps": TIMED}))


def do_rounds(variants: list[str], rounds: int, out: Path, first: int = 0) -> None:
    results: dict[str, list[float]] = collections.defaultdict(list)
    log = []
    for r in range(first, first + rounds):
        order = variants if r % 2 == 0 else list(reversed(variants))
        for v in order:
            res = run_child(v, ["nice", "-n", "19", sys.executable, __file__, "time", "--variant", v], threads=1,
                            extra_env={"MKL_NUM_THREADS": "1"}, timeout=1200)
            res["round"] = r
            log.append(res)
            results[v].append(res["cpu_s_per_step"])
            print(f"round {r + 1} {v}: {res['cpu_s_per_step']:.4f} CPU s/step (per-step median "
                  f"{res['cpu_step_median']:.4f}, min {res['cpu_step_min']:.4f}; wall {res['wall_s_per_step']:.3f}, "
                  f"machine idle {res['machine_idle']:.2f})", file=sys.stderr, flush=True)
            out.write_text(json.dumps(log, indent=1))
    report(variants, results)


def report(variants: list[str], results: dict[str, list[float]]) -> None:
    base = variants[0]
    print(f"\nmachine: {machine()}")
    print(f"| variant | CPU s/step median (min-max) | per-round ratio to {base} | median ratio |")
    print("|---|---|---|---|")
    for v in variants:
        xs = summary(results[v])
        ratios = [x / b for x, b in zip(results[v], results[base])]
        print(f"| {v} | {xs['median']:.4f} ({xs['min']:.4f}-{xs['max']:.4f}) | "
              f"{', '.join(f'{q:.3f}' for q in ratios)} | {statistics.median(ratios):.3f} |")


# ---------------------------------------------------------------------------------------------
# Profile
# ---------------------------------------------------------------------------------------------


def _annotate() -> None:
    """record_function ranges around the UNet forward, the backward, clipping (the optimizer has its own)."""
    import accelerate
    from diffusers import UNet2DConditionModel
    from torch.profiler import record_function

    def wrap(owner, attr, label):
        orig = getattr(owner, attr)

        def wrapped(*a, **k):
            with record_function(label):
                return orig(*a, **k)

        setattr(owner, attr, wrapped)

    wrap(UNet2DConditionModel, "forward", "## unet forward")
    wrap(accelerate.Accelerator, "backward", "## backward")
    wrap(accelerate.Accelerator, "clip_grad_norm_", "## clip grad norm")


def do_profile(variant: str, out: Path, stack: bool) -> None:
    from torch.profiler import ProfilerActivity, profile, schedule

    _annotate()
    # steps 1-2 not recorded, 3 the profiler's warm-up (recorded, discarded), 4-13 recorded
    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_stack=stack,
                   schedule=schedule(wait=2, warmup=1, active=10, repeat=1))
    prof.start()
    train(variant, 14, lambda step: prof.step())
    prof.stop()
    events = prof.events()
    steps = [e for e in events if e.name.startswith("ProfilerStep")]
    total = sum(e.cpu_time_total for e in steps)  # inclusive wall of the 10 steps (main thread)
    n = len(steps)
    ev = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep") and ".py(" not in e.key
          and not e.key.startswith("<built-in")]
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"variant {variant}: {n} steps, {total / 1e6 / n:.4f} s/step (profiler wall, process niced beside a "
             "training job: fractions only)\n",
             "| op | self % of step | self ms/step | calls/step |", "|---|---|---|---|"]
    for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:25]:
        lines.append(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f} | "
                     f"{e.self_cpu_time_total / 1e3 / n:.2f} | {e.count / n:g} |")
    stepself = sum(e.self_cpu_time_total for e in steps)
    lines.append(f"| (Python and other time outside any op: ProfilerStep self) | {100 * stepself / total:.1f} | "
                 f"{stepself / 1e3 / n:.2f} | |")
    regions = collections.Counter()
    for e in events:
        if e.name.startswith("## ") or e.name.startswith("Optimizer.step") or e.name.startswith("Optimizer.zero_grad"):
            regions[e.name] += e.cpu_time_total
    lines.append("\nRegions (inclusive, % of step):")
    for k, v in sorted(regions.items(), key=lambda kv: -kv[1]):
        lines.append(f"- {k}: {100 * v / total:.1f}%")
    rest = total - sum(regions.values())
    lines.append(f"- everything else (data, noise, loss, accelerate, logging): {100 * rest / total:.1f}%")
    # Per-op totals for the ops of interest
    interest = ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to", "aten::_to_copy",
                "aten::_slow_conv2d_backward", "aten::_slow_conv2d_forward", "aten::thnn_conv2d",
                "aten::mkldnn_convolution", "aten::convolution_backward", "aten::convolution")
    lines.append("\n| op of interest | self % | inclusive % | calls/step |\n|---|---|---|---|")
    for e in prof.key_averages():
        if e.key in interest:
            lines.append(f"| {e.key} | {100 * e.self_cpu_time_total / total:.2f} | "
                         f"{100 * e.cpu_time_total / total:.2f} | {e.count / n:g} |")
    # Where the copies come from: the first parent that is not a copy/conversion op, and the shapes
    conv_ops = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::to", "aten::_to_copy", "aten::empty_like",
                "aten::empty", "aten::empty_strided"}
    chains = collections.Counter()
    calls = collections.Counter()
    for e in events:
        if e.name == "aten::copy_":
            chain, p = [], e.cpu_parent
            while p is not None and p.name in conv_ops:
                p = p.cpu_parent
            while p is not None and not p.name.startswith("ProfilerStep") and len(chain) < 3:
                chain.append(p.name)
                p = p.cpu_parent
            shp = str(e.input_shapes[0]) if e.input_shapes else ""
            key = (" < ".join(chain), shp)
            chains[key] += e.cpu_time_total
            calls[key] += 1
    by_parent = collections.Counter()
    for (chain, _), t in chains.items():
        by_parent[chain.split(" < ")[0]] += t
    lines.append("\naten::copy_ by the first non-copy parent (% of step):")
    for k, t in by_parent.most_common(12):
        lines.append(f"- {k}: {100 * t / total:.2f}%")
    lines.append("\n| copy_ under | tensor shape | % of step | calls/step |\n|---|---|---|---|")
    for (chain, shp), t in chains.most_common(40):
        lines.append(f"| {chain} | {shp} | {100 * t / total:.2f} | {calls[(chain, shp)] / n:g} |")
    # Convolution backends by input shape
    shp = prof.key_averages(group_by_input_shape=True)
    lines.append("\n| conv op | input shapes | self % | calls/step |\n|---|---|---|---|")
    for e in sorted((e for e in shp if e.key in ("aten::_slow_conv2d_backward", "aten::_slow_conv2d_forward",
                                                  "aten::mkldnn_convolution", "aten::convolution_backward")),
                    key=lambda e: -e.self_cpu_time_total)[:40]:
        lines.append(f"| {e.key} | {str(e.input_shapes[:3])} | {100 * e.self_cpu_time_total / total:.2f} | "
                     f"{e.count / n:g} |")
    text = "\n".join(lines)
    (out / f"profile-{variant}.md").write_text(text)
    print(text)


# ---------------------------------------------------------------------------------------------
# Trace: shapes, strides and the autograd node of every copy / conversion / conv backward
# ---------------------------------------------------------------------------------------------


def do_trace(variant: str, out: Path) -> None:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    ops = {"copy_", "_to_copy", "clone", "contiguous", "convolution_backward", "convolution", "_slow_conv2d_backward",
           "mkldnn_convolution", "_slow_conv2d_forward", "native_group_norm_backward", "native_group_norm"}

    def fmt(t):
        if not isinstance(t, torch.Tensor):
            return None
        cl = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        kind = "CL" if cl else ("C" if t.is_contiguous() else "strided")
        return f"{tuple(t.shape)}{kind}{'/' + str(t.dtype)[6:] if t.dtype != torch.float32 else ''}"

    seen = collections.Counter()

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.__name__.split(".")[0]
            if name in ops and state["on"]:
                node = torch._C._current_autograd_node()
                where = type(node).__name__ if node is not None else "forward/other"
                if node is None:
                    import traceback

                    fr = [f for f in traceback.extract_stack()[:-1]
                          if "diffusers" in f.filename or "inkbooth" in f.filename or "torch/nn" in f.filename]
                    if fr:
                        f = fr[-1]
                        where = f"{Path(f.filename).name}:{f.lineno} {f.name}"
                sig = ", ".join(x for x in (fmt(a) for a in args) if x)
                seen[(name, where, sig)] += 1
            return func(*args, **(kwargs or {}))

    state = {"on": False}
    mode = Mode()

    def on_step(step):
        if step == 3:
            state["on"] = True
            mode.__enter__()
        elif step == 4:
            state["on"] = False
            mode.__exit__(None, None, None)

    train(variant, 5, on_step)
    rows = [f"variant {variant}: one step (step 4), calls by op, autograd node (or python frame), arg formats "
            "(C contiguous, CL channels-last)\n", "| op | where | args | calls |", "|---|---|---|---|"]
    for (name, where, sig), n in sorted(seen.items(), key=lambda kv: (kv[0][0], -kv[1])):
        rows.append(f"| {name} | {where} | {sig} | {n} |")
    text = "\n".join(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"trace-{variant}.md").write_text(text)
    print(text)


# ---------------------------------------------------------------------------------------------
# Paired: every variant's step in ONE process, interleaved step by step (corroboration under load)
# ---------------------------------------------------------------------------------------------


def do_paired(variants: list[str], cycles: int) -> None:
    """inkbooth's step (cached text states, prior batch of 2, dreambooth_loss, clipping, inkbooth's fused AdamW)
    on one UNet per variant, built from the same weights; each cycle runs one step of every variant, the order
    rotating, and records process CPU time per step. Load drifts slowly against a step, so the per-cycle ratios
    compare variants under the same conditions."""
    import types

    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from inkbooth import runtime
    from inkbooth.dreambooth.train import TrainConfig, _optimizer, dreambooth_loss

    torch.set_num_threads(1)
    runtime.keep_freed_memory()
    torch.manual_seed(0)
    base = paths()["base"]
    cfg = TrainConfig()
    sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    tok = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(False)
    ids = tok(["a photo of sks dog", "a photo of dog"], padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    with torch.no_grad():
        states = te(ids)[0]
    latents = torch.randn(2, 4, 16, 16) * 0.18215

    runs = {}
    for v in variants:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=torch.float32).train()
        weights_cl = v in ("default", "mkldnn-off", "conv1x1-linear")
        input_cl = v in ("default", "mkldnn-off", "conv1x1-linear", "input-cl")
        if weights_cl:
            unet.to(memory_format=torch.channels_last)
        if v == "conv1x1-linear":
            for m in unet.modules():
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1):
                    m._conv_forward = types.MethodType(lambda self, *a: _conv1x1_as_linear(*a), m)
        params = [p for p in unet.parameters() if p.requires_grad]
        opt = _optimizer([{"params": params, "lr": cfg.learning_rate}], cfg)
        runs[v] = {"unet": unet, "params": params, "opt": opt, "input_cl": input_cl,
                   "mkldnn": v != "mkldnn-off", "cpu": []}

    def step(r):
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (2,)).long()
        noisy = sched.add_noise(latents, noise, t)
        if r["input_cl"]:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        with torch.backends.mkldnn.flags(enabled=r["mkldnn"]):
            pred = r["unet"](noisy, t, states).sample
            loss, _, _ = dreambooth_loss(pred, noise, with_prior=True, prior_weight=1.0)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(r["params"], cfg.max_grad_norm)
        r["opt"].step()
        r["opt"].zero_grad(set_to_none=True)

    for _ in range(WARMUP):
        for v in variants:
            step(runs[v])
    for c in range(cycles):
        order = variants[c % len(variants):] + variants[:c % len(variants)]
        for v in order:
            c0 = time.process_time()
            step(runs[v])
            runs[v]["cpu"].append(time.process_time() - c0)
    base_v = variants[0]
    res = {}
    for v in variants:
        xs = runs[v]["cpu"]
        ratios = [x / b for x, b in zip(xs, runs[base_v]["cpu"])]
        # ratios per block of 6 cycles (sums), to see consistency
        blocks = [sum(xs[i:i + 6]) / sum(runs[base_v]["cpu"][i:i + 6]) for i in range(0, len(xs), 6)]
        res[v] = {**summary(xs), "ratio_median_per_cycle": statistics.median(ratios), "ratio_of_sums": sum(xs) / sum(runs[base_v]["cpu"]),
                  "block_ratios": [round(b, 3) for b in blocks]}
    print("RESULT " + json.dumps({"cycles": cycles, "machine": machine(), "variants": res}))
    print(f"\nmachine: {machine()}")
    print("| variant | CPU s/step median (min-max) | per-cycle ratio median | ratio of sums | 6-cycle block ratios |")
    print("|---|---|---|---|---|")
    for v, r in res.items():
        print(f"| {v} | {r['median']:.4f} ({r['min']:.4f}-{r['max']:.4f}) | {r['ratio_median_per_cycle']:.3f} | "
              f"{r['ratio_of_sums']:.3f} | {', '.join(map(str, r['block_ratios']))} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["setup", "profile", "trace", "time", "rounds", "aggregate", "paired"])
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--variant", default="default")
    ap.add_argument("--variants", default="default,contiguous")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(WORK / "out"))
    ap.add_argument("--stack", action="store_true")
    ap.add_argument("--first-round", type=int, default=0)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    if a.what == "setup":
        do_setup()
    elif a.what == "profile":
        do_profile(a.variant, Path(a.out), a.stack)
    elif a.what == "trace":
        do_trace(a.variant, Path(a.out))
    elif a.what == "time":
        do_time(a.variant)
    elif a.what == "paired":
        do_paired(a.variants.split(","), a.cycles)
    elif a.what == "aggregate":
        results = collections.defaultdict(list)
        for f in sorted(Path(a.out).glob(f"rounds{a.tag}-*.json")):
            for row in json.loads(f.read_text()):
                results[row["variant"]].append(row["cpu_s_per_step"])
        report(a.variants.split(","), results)
    else:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        do_rounds(a.variants.split(","), a.rounds, Path(a.out) / f"rounds{a.tag}-{a.first_round}-{int(time.time())}.json",
                  a.first_round)


if __name__ == "__main__":
    main()
