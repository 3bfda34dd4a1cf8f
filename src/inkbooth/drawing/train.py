"""train_stage: one stage of a drawing recipe (VAE, diffusion, CLIP or DINO), resumable, published with its figures.

* ``vae``: the pipeline's ``AutoencoderKL`` as an autoencoder on domain pictures (L1 + MSE
  reconstruction and a small KL); at the end its ``scaling_factor`` is set to 1 / the latents' std,
  as SD's was, so the diffusion stages see latents of unit variance. Held out: reconstruction MSE
  and PSNR.
* ``diffusion``: the UNet and the text encoder (their moving average, ``ema_decay``, is what is
  evaluated and saved), with SD's epsilon-prediction loss (min-SNR weights, optional) on (picture,
  caption) pairs, the VAE frozen and its latent distributions of the training pictures encoded
  once; ``caption_dropout`` of the captions are empty (what classifier-free guidance needs). Held out: the diffusion loss on fixed pairs, timesteps and noise; with a CLIP
  (``eval_clip``), samples of held-out captions judged by it (``inkbooth.drawing.evaluate``).
* ``clip``: a ``CLIPModel``, contrastively on pictures and captions. Held out: zero-shot accuracy of
  colour and class.
* ``dino``: a ``ViTModel`` by DINO's self-distillation (a teacher that is the student's moving
  average, multi-crop; ``inkbooth.drawing.dino``). Held out: k-NN class and colour accuracy, and the
  subject's views' cosines among themselves and to other balls.

Training pictures are a pool rendered once (``pool`` scenes of the seed, cached in chunks under the
work folder) and visited in a seeded order, epoch by epoch; captions are drawn afresh per visit.
Every random draw of step s (order, captions, dropout, noise, timesteps) is a function of (seed, s),
so a checkpoint holds weights, optimizer state and the step (safetensors + JSON, no pickles) and a
resumed stage ends with the weights of an uninterrupted one. Checkpoints are kept per run
(``inkbooth.checkpoints``): the starting model's hash and the config that shapes the weights.

The loop is here; the config in ``settings``, the pictures in ``data``, the checkpoint state in
``state``, and what each kind of stage trains and measures in ``tasks``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from inkbooth import artifacts, models, runtime, storage
from inkbooth import checkpoints as ckpt
from inkbooth.config import config_hash, to_dict
from inkbooth.drawing import domain
from inkbooth.drawing.data import Pool
from inkbooth.drawing.dino import Dino
from inkbooth.drawing.settings import StageConfig, identity, seed_of
from inkbooth.drawing.state import Ema, read_state, write_state
from inkbooth.drawing.tasks import Clip, Diffusion, Task, Vae
from inkbooth.schedules import lr_at

log = logging.getLogger(__name__)

KIND = "drawing-model"
CLIP_KIND = "drawing-clip"
DINO_KIND = "drawing-dino"
CHECKPOINT_KIND = "drawing-checkpoint"
TRAINING = "training.json"

__all__ = ["StageConfig", "identity", "train_stage"]


def train_stage(model: str, output: str, config: StageConfig, *, cache: str | Path, checkpoints: str,
                eval_clip: str | None = None, _on_step: Any = None) -> artifacts.Manifest:
    """Train one stage from the model at ``model`` (a drawing pipeline folder; a CLIP for ``clip``, a DINO ViT for ``dino``);
    publish the result at ``output``. ``cache`` keeps the rendered pool; ``checkpoints`` is a prefix
    for this stage's full-state checkpoints; ``eval_clip`` a small CLIP that judges samples."""
    import torch

    started = time.perf_counter()
    runtime.limit_torch_threads(config.threads)
    folder = models.resolve(model)
    base_hash = models.folder_hash(folder)
    run = ckpt.RunCheckpoints(checkpoints, {"base_model": base_hash, "domain": domain.fingerprint(),
                                            "config": config_hash(identity(to_dict(config)))},
                              kind=CHECKPOINT_KIND, keep=config.checkpoints_total_limit)
    runtime.require_usable_gpus(config.device)  # GPUs given but unusable: fail now, not hours later on the CPU
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
    pool = Pool(config.seed, config.pool, Path(cache))
    work: Task
    if config.train == "vae":
        work = Vae(folder, pool, config, device)
    elif config.train == "diffusion":
        work = Diffusion(folder, pool, config, str(models.resolve(eval_clip)) if eval_clip else None, device)
    elif config.train == "dino":
        work = Dino(folder, pool, config, device)
    else:
        work = Clip(folder, pool, config, device)
    params = [p for m in work.modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    for m in work.modules.values():
        m.train()
    ema = Ema(work.modules, config.ema_decay) if config.ema_decay else None
    averaged = ema.applied if ema is not None else contextlib.nullcontext

    step, history, curve, losses, resumed_from = 0, [], [], [], 0
    point = run.resume(config.resume)
    if point is not None:
        state = read_state(point.path, work.modules, optimizer, ema)
        step, history, curve = state["step"], state["history"], state["curve"]
        losses, resumed_from = state["recent_losses"], state["step"]
        log.info("resumed from %s (step %d)", point.uri, point.step)
    loop_started, steps_here = time.perf_counter(), 0
    while step < config.max_steps:
        gen = torch.Generator().manual_seed(seed_of(config.seed, "step", step))
        torch.manual_seed(seed_of(config.seed, "torch", step))  # dropout, if a model has any
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = work.loss(step, pool.indices(step, config.batch_size), gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        work.after_step(step)
        step += 1
        if ema is not None:
            ema.update(step - 1)
        steps_here += 1
        losses = (losses + [float(loss.detach())])[-config.log_every:]
        if step % config.log_every == 0 or step == config.max_steps:
            curve.append([step, round(sum(losses) / len(losses), 5)])
            log.info("%s step %d/%d: loss %.4f, lr %.2e, %.2f steps/s", config.train, step, config.max_steps,
                     curve[-1][1], lr_at(step - 1, config), steps_here / (time.perf_counter() - loop_started))
        if config.eval_every and step % config.eval_every == 0 and step < config.max_steps:
            with averaged():
                history.append(work.evaluate(step))
            log.info("%s held out at step %d: %s", config.train, step, history[-1])
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.max_steps:
            staging = ckpt.new_staging_root()
            try:
                write_state(staging / ckpt.step_name(step), work.modules, optimizer,
                             {"step": step, "history": history, "curve": curve, "recent_losses": losses}, ema)
                run.save(staging / ckpt.step_name(step), step, config=to_dict(config))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if _on_step is not None:
            _on_step(step)
    loop_seconds = time.perf_counter() - loop_started
    if not history or history[-1]["step"] != step:
        with averaged():
            history.append(work.evaluate(step))
        log.info("%s held out at step %d: %s", config.train, step, history[-1])
    metrics = {"steps": step, "resumed_from_step": resumed_from, "device": device, "train_seconds": round(time.perf_counter() - started, 2),
               "steps_per_second": round(steps_here / loop_seconds, 4) if steps_here else None,
               "first_loss": curve[0][1] if curve else None, "last_loss": curve[-1][1] if curve else None,
               **{k: v for k, v in history[-1].items() if k != "step"}}
    lineage = {"base_model": model, "base_model_hash": base_hash, "domain": domain.fingerprint(), "run": run.key,
               "eval_clip": eval_clip or ""}
    with storage.temp_dir("inkbooth-drawing-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        with averaged():  # the averaged weights are the model
            work.save(out)
        (out / TRAINING).write_text(json.dumps({"config": to_dict(config), "metrics": metrics, "lineage": lineage,
                                                "history": history, "loss_curve": curve}, indent=1), encoding="utf-8")
        return artifacts.publish(out, output, kind={"clip": CLIP_KIND, "dino": DINO_KIND}.get(config.train, KIND),
                                 inputs={"base_model": base_hash}, config=to_dict(config), metrics=metrics,
                                 lineage=lineage, overwrite=True)
