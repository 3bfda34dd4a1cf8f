"""finetune_trocr: adapt a TrOCR checkpoint to your lines (labelled crops, synthetic lines, or both).

This is how a team adapts ``microsoft/trocr-base-printed`` to its invoices, and how the small
readers in ``inkbooth.readers`` were trained from scratch. One typed config, one loop:

* the seq2seq loss is computed here: decoder inputs are the labels shifted right once, behind the
  model's decoder start token, and cross-entropy is taken against the labels as they are
  (transformers 4.57's ``VisionEncoderDecoderModel(labels=...)`` shifts them a second time inside
  its loss, which trains the model to predict the token after next);
* labels are the tokenizer's own encoding (``<s> text </s>`` for RoBERTa's kind), which is what
  ``trocr-base-printed`` generates after its start token ``</s>``;
* every random draw of step *s* (which lines, which synthetic text, font and degradation, dropout)
  comes from generators seeded by (seed, s), and the LR is a pure function of the step, so a
  checkpoint needs only weights, optimizer state and the step, and ``resume: latest`` ends with the
  weights an uninterrupted run ends with;
* checkpoints hold no pickles (tensors in safetensors, the rest in JSON) and are kept per run
  (``inkbooth.checkpoints``: the identity is the base model, the data, the fonts and word list, and
  the config that shapes training), so they are only resumed into their own run; one that fails its
  checksums is passed over for the one before;
* held-out CER and WER every ``eval_every`` steps (labelled held-out lines, and a fixed set of
  synthetic lines with per-font figures), TensorBoard scalars, and an optional early stop once the
  held-out CER reaches ``target_cer``.

The result is a Hugging Face checkpoint at ``<output>`` (loads like trocr-base-printed), with
``training.json`` and the TensorBoard logs (``logs/``) beside it, published with lineage (base checkpoint and its hash,
data and its hash, fonts and word list by content, config, metrics). ``register_trocr`` then makes
it the next version of a model in the registry.

May import ``inkbooth.ocr.documents``, ``inkbooth.ocr.recognition`` and the training modules below it
(``lines``, ``synth``, ``objectives``, ``scoring``, ``state``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from inkbooth import artifacts, models, runtime, storage
from inkbooth import checkpoints as ckpt
from inkbooth.config import config_hash, nested, option, to_dict
from inkbooth.ocr.documents.labels import UnreadableImage, decode
from inkbooth.ocr.recognition import localize
from inkbooth.ocr.training import lines as linedata
from inkbooth.ocr.training.objectives import ctc_loss, encode_labels, seq2seq_loss
from inkbooth.ocr.training.scoring import EvalLine, evaluate_sets, headline_cer
from inkbooth.ocr.training.state import read_state, write_state
from inkbooth.ocr.training.synth import LineSynth, SynthConfig
from inkbooth.schedules import lr_at

log = logging.getLogger(__name__)


KIND = "trocr-model"


CHECKPOINT_KIND = "trocr-checkpoint"


LOGS = "logs"


# Fields that do not change the trajectory of the weights: they stay out of the run's identity.
_NOT_IDENTITY = ("resume", "threads", "log_every", "eval_every", "eval_lines", "synthetic_eval_lines",
                 "eval_num_beams", "target_cer", "checkpoint_every", "checkpoints_total_limit", "device")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a fine-tuning config (as a dict) that shape the weights: a run's identity."""
    return {k: v for k, v in config.items() if k not in _NOT_IDENTITY}


@dataclasses.dataclass
class FinetuneConfig:
    """A TrOCR fine-tuning run."""

    max_steps: int = option(1000, "optimizer steps")
    batch_size: int = option(16, "lines per step")
    learning_rate: float = option(5e-5, "peak learning rate (5e-5 suits trocr-base; small models from scratch 1e-3)")
    lr_scheduler: Literal["constant", "linear", "cosine"] = option("linear", "decay after warm-up")
    warmup_steps: int = option(0, "linear warm-up steps")
    min_lr_ratio: float = option(0.0, "floor of the decay, as a share of the peak")
    weight_decay: float = option(0.01, "AdamW weight decay")
    adam_beta1: float = option(0.9, "Adam beta1")
    adam_beta2: float = option(0.999, "Adam beta2")
    adam_epsilon: float = option(1e-8, "Adam epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy")
    ctc_weight: float = option(0.0, "weight of an auxiliary CTC loss on the encoder's patch columns (joint "
                                    "CTC-attention training: from scratch, the encoder learns glyphs and "
                                    "alignment much sooner); its small head is not part of the saved model")
    freeze_encoder: bool = option(False, "train the decoder only")
    synthetic: SynthConfig | None = option(None, "synthetic lines (inkbooth.ocr.training.synth.SynthConfig fields); none by default")
    synthetic_share: float = option(0.0, "share of each batch drawn from synthetic lines (all of it without labelled data)")
    holdout: float = option(0.1, "share of labelled lines held out, when the data is not prepared already")
    eval_every: int = option(100, "held-out CER/WER every N steps (0: only at the end)")
    eval_lines: int = option(200, "most labelled held-out lines evaluated")
    synthetic_eval_lines: int = option(200, "synthetic held-out lines (a fixed set, apart from the training stream)")
    eval_num_beams: int = option(1, "beams when reading the held-out lines")
    target_cer: float = option(0.0, "stop once the held-out CER is at or below this (0: run all steps)")
    checkpoint_every: int = option(0, "full-state checkpoint every N steps (0: none)")
    checkpoints_total_limit: int = option(2, "checkpoints kept (older ones are deleted)")
    resume: str = option("", "'latest' or a step number to resume this run from a checkpoint; empty: start fresh")
    log_every: int = option(10, "TensorBoard scalars every N steps")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available (auto), or force one")
    threads: int = option(0, "torch intra-op threads (0: library default)")
    seed: int = option(0, "seed of every random draw")
    allow_pickle: bool = option(False, "accept pickle-based base weights (.bin); only for trusted models")

    def __post_init__(self) -> None:
        if self.synthetic is not None:  # none by default: no synthetic lines
            self.synthetic = nested(SynthConfig, self.synthetic, source="synthetic")

    def validate(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("max_steps and batch_size must be at least 1")
        if not 0.0 <= self.synthetic_share <= 1.0:
            raise ValueError(f"synthetic_share must be in [0, 1], got {self.synthetic_share}")
        if self.synthetic_share > 0 and self.synthetic is None:
            raise ValueError("synthetic_share > 0 needs a synthetic config (fonts, texts)")
        if self.synthetic is not None:
            self.synthetic.validate()
        if self.resume not in ("", "latest") and not self.resume.isdigit():
            raise ValueError(f"resume must be '', 'latest' or a step number, got {self.resume!r}")
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {self.ctc_weight}")
        if self.learning_rate <= 0 or self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("learning_rate must be positive, warmup_steps >= 0, min_lr_ratio in [0, 1]")


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by its parts (str seeds hash with SHA-512: the same on every run)."""
    return random.Random("/".join(map(str, parts)))


def _decoded(lineset: linedata.LineSet, blob: bytes, index: int, warned: set[int], what: str) -> Any:
    """Line image ``blob`` decoded, or None (with a warning naming it, once) when it cannot be.

    ``prepare_lines`` checked every image, with the same pixel limit; one that fails here (a set made
    by an older version, or damaged since) is left out rather than ending the run."""
    try:
        return decode(blob, name=lineset.name_of(blob), max_pixels=lineset.max_pixels)
    except UnreadableImage as e:
        if index not in warned:
            warned.add(index)
            log.warning("%s: %s; left out of %s", lineset.uri, e, what)
        return None


class Batches:
    """Training batches and held-out sets; batch ``s`` is a pure function of (seed, s).

    A labelled line whose image cannot be decoded is left out of every batch that draws it (so a
    batch may be short by it); the loop counts those draws (``skipped_unreadable``)."""

    def __init__(self, lineset: linedata.LineSet | None, synth: LineSynth | None, config: FinetuneConfig) -> None:
        self.lineset, self.synth, self.config = lineset, synth, config
        self.train = lineset.train if lineset else []
        self.unreadable: set[int] = set()  # indices into train that failed to decode (warned once each)
        self._perm: dict[int, list[int]] = {}
        share = config.synthetic_share if self.train else 1.0
        self.n_synth = round(config.batch_size * share) if synth else 0
        self.n_lab = config.batch_size - self.n_synth
        if self.n_lab and not self.train:
            raise ValueError("no labelled training lines and no synthetic lines: nothing to train on")

    def _permutation(self, epoch: int) -> list[int]:
        if epoch not in self._perm:
            self._perm = {epoch: _rng(self.config.seed, "epoch", epoch).sample(range(len(self.train)), len(self.train))}
        return self._perm[epoch]

    def batch(self, step: int) -> list[tuple[Any, str]]:
        """(image, text) pairs of optimizer step ``step`` (0-based)."""
        out = []
        n = len(self.train)
        for k in range(step * self.n_lab, (step + 1) * self.n_lab):
            index = self._permutation(k // n)[k % n]
            blob, text = self.train[index]
            assert self.lineset is not None
            image = _decoded(self.lineset, blob, index, self.unreadable, "training")
            if image is not None:
                out.append((image, text))
        rng = _rng(self.config.seed, "synthetic", step)
        out.extend(self.synth.draw(rng) for _ in range(self.n_synth))
        return out


def heldout_sets(lineset: linedata.LineSet | None, synth: LineSynth | None,
                 config: FinetuneConfig) -> dict[str, list[EvalLine]]:
    """Named evaluation sets of (image, text, font, text kind) lines, fixed for the run ('' where unknown)."""
    sets: dict[str, list[EvalLine]] = {}
    if lineset and lineset.heldout:
        warned: set[int] = set()
        decoded = [(_decoded(lineset, b, i, warned, "evaluation"), t) for i, (b, t) in
                   enumerate(lineset.heldout[:config.eval_lines])]
        if any(img is not None for img, _ in decoded):
            sets["heldout"] = [(img, t, "", "") for img, t in decoded if img is not None]
    if synth is not None and config.synthetic_eval_lines:
        sets["synthetic"] = [synthetic_eval_line(synth, config.seed, i) for i in range(config.synthetic_eval_lines)]
    return sets


def synthetic_eval_line(synth: LineSynth, seed: int, index: int) -> EvalLine:
    """Synthetic held-out line ``index``: drawn from its own stream, never the training one."""
    rng = _rng(seed, "eval", index)
    font = synth.config.fonts[index % len(synth.config.fonts)]  # every font equally often
    img, text, kind = synth.sample(rng, font)
    return img, text, Path(font).name, kind


def _device(config: FinetuneConfig) -> str:
    import torch

    runtime.require_usable_gpus(config.device)  # GPUs given but unusable: fail now, not hours later on the CPU
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda, but torch sees no CUDA device")
    return "cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu"


def _optimizer(params: list[Any], config: FinetuneConfig) -> Any:
    import torch

    kwargs = {"lr": config.learning_rate, "betas": (config.adam_beta1, config.adam_beta2),
              "eps": config.adam_epsilon, "weight_decay": config.weight_decay}
    try:  # the fused kernel where the device has one (CPU and CUDA), as in DreamBooth training
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, foreach=True, **kwargs)


def _writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no training logs (pip install 'inkbooth[train-cpu]')")
        return None
    return SummaryWriter(str(log_dir))


def finetune_trocr(model: str, output: str, config: FinetuneConfig | None = None, *, data: str | None = None,
                   checkpoints: str | None = None, _on_step: Any = None) -> artifacts.Manifest:
    """Fine-tune the TrOCR checkpoint ``model`` on ``data`` and/or synthetic lines; publish at ``output``.

    ``data`` is labelled lines (a prefix with labels.jsonl/labels.tsv) or a prepared set
    (``inkbooth.ocr.training.lines.prepare_lines``). ``output`` is a local folder or ``s3://`` prefix;
    ``checkpoints`` a prefix for full-state checkpoints (default: ``<output>-checkpoints``).
    """
    import torch
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    config = config or FinetuneConfig()
    config.validate()
    if not data and config.synthetic is None:
        raise ValueError("nothing to train on: give labelled data, a synthetic config, or both")
    started = time.perf_counter()
    runtime.limit_torch_threads(config.threads)  # the pod's CPU quota, OMP_THREAD_LIMIT
    device = _device(config)
    folder = models.resolve(model, allow_pickle=config.allow_pickle)
    base_hash = models.folder_hash(folder)
    checkpoints = checkpoints or output.rstrip("/") + "-checkpoints"
    with storage.temp_dir("inkbooth-finetune-") as tmp:
        lineset = linedata.open_lines(data, tmp, linedata.LinesConfig(holdout=config.holdout)) if data else None
        synth = LineSynth(config.synthetic) if config.synthetic is not None else None
        synth_lineage = synth.lineage() if synth else {}
        lineage = {"base_model": model, "base_model_hash": base_hash,
                   "data": lineset.source if lineset else "", "data_hash": lineset.data_hash if lineset else "",
                   "prepared_lines": lineset.uri if lineset and data != lineset.source else "",
                   "synthetic": synth_lineage}
        run = ckpt.RunCheckpoints(checkpoints, {
            "base_model": base_hash, "data": lineage["data_hash"], "synthetic": synth_lineage,
            "config": config_hash(identity(to_dict(config)))},
            kind=CHECKPOINT_KIND, keep=config.checkpoints_total_limit)
        batches = Batches(lineset, synth, config)
        sets = heldout_sets(lineset, synth, config)

        processor = TrOCRProcessor.from_pretrained(folder)
        tokenizer = processor.tokenizer
        net = VisionEncoderDecoderModel.from_pretrained(folder, dtype=torch.float32).to(device)
        if net.config.decoder_start_token_id is None or net.config.pad_token_id is None:
            raise ValueError(f"{model}: config has no decoder_start_token_id or pad_token_id; set them before training")
        if config.freeze_encoder:
            net.encoder.requires_grad_(False)
        head, grid, specials = None, (1, 1), set(tokenizer.all_special_ids)
        if config.ctc_weight:
            enc = net.config.encoder
            grid = localize.patch_grid(enc)
            torch.manual_seed(config.seed)
            head = torch.nn.Linear(enc.hidden_size, len(tokenizer) + 1).to(device)  # + the CTC blank
        params = [p for p in net.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
        optimizer = _optimizer(params, config)
        max_tokens = net.config.decoder.max_position_embeddings - 1
        eval_tokens = max(1, max_tokens - 1)

        global_step, history, curve, skipped, unreadable, resumed_from = 0, [], [], 0, 0, 0
        # The losses of the last log_every steps, of which a point of the curve is the mean: kept in the
        # checkpoint, so that a run resumed inside a window logs the window's steps from before the
        # checkpoint too, and its curve, first_loss and last_loss are the uninterrupted run's.
        losses: list[float] = []
        point = run.resume(config.resume)
        if point is not None:
            state = read_state(point.path, net, optimizer, head)
            global_step, history, curve = state["step"], state["history"], state["curve"]
            skipped, resumed_from = state["skipped"], state["step"]
            unreadable, losses = state.get("skipped_unreadable", 0), list(state.get("recent_losses", []))
            log.info("resumed from %s (step %d)", point.uri, point.step)

        # Assembled outside the output and published into it: its manifest lists only what this run wrote.
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        writer = _writer(out_dir / LOGS)
        steps_here = 0  # optimizer steps taken by this process (for its speed)
        last_eval: dict[str, Any] = history[-1] if history else {}

        def evaluate(step: int) -> dict[str, Any]:
            metrics = {"step": step, **evaluate_sets(net, processor, sets, num_beams=config.eval_num_beams,
                                                     max_new_tokens=eval_tokens)}
            if writer is not None:
                for key, value in metrics.items():
                    if isinstance(value, float):
                        writer.add_scalar(f"eval/{key}", value, step)
                    elif isinstance(value, dict):
                        for font, v in value.items():
                            writer.add_scalar(f"eval/{key}/{font}", v, step)
                writer.flush()
            log.info("step %d: %s", step, {k: v for k, v in metrics.items() if isinstance(v, float)})
            return metrics

        net.train()
        stopped_early = False
        while global_step < config.max_steps:
            step = global_step
            pairs = batches.batch(step)
            unreadable += batches.n_lab + batches.n_synth - len(pairs)
            labels, fits = encode_labels(tokenizer, [t for _, t in pairs], max_tokens)
            skipped += len(pairs) - len(fits)
            if not fits:
                global_step += 1
                continue
            torch.manual_seed(_rng(config.seed, "torch", step).getrandbits(63))  # dropout, per step
            pixel_values = processor(images=[pairs[i][0] for i in fits], return_tensors="pt").pixel_values
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pixel_values, labels = pixel_values.to(device), labels.to(device)
            if head is None:
                loss = seq2seq_loss(net, pixel_values, labels, label_smoothing=config.label_smoothing)
            else:
                encoded = net.encoder(pixel_values=pixel_values)
                loss = ((1 - config.ctc_weight) * seq2seq_loss(net, pixel_values, labels, encoder_outputs=encoded,
                                                               label_smoothing=config.label_smoothing)
                        + config.ctc_weight * ctc_loss(head, encoded.last_hidden_state, labels, grid, specials))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            global_step += 1
            steps_here += 1
            losses.append(float(loss.detach()))
            del losses[:-config.log_every]
            if global_step % config.log_every == 0 or global_step == config.max_steps:
                recent = losses[-config.log_every:]
                curve.append([global_step, round(sum(recent) / len(recent), 5)])
                log.info("step %d/%d: loss %.4f, lr %.2e, %.2f s/step", global_step, config.max_steps, curve[-1][1],
                         lr, (time.perf_counter() - started) / steps_here)
                if writer is not None:
                    writer.add_scalar("train/loss", losses[-1], global_step)
                    writer.add_scalar("train/lr", lr, global_step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), global_step)
            if config.eval_every and global_step % config.eval_every == 0 and global_step < config.max_steps:
                last_eval = evaluate(global_step)
                history.append(last_eval)
                done = headline_cer(last_eval)
                if config.target_cer and done is not None and done <= config.target_cer:
                    log.info("held-out CER %.4f reached target_cer %.4f at step %d", done, config.target_cer,
                             global_step)
                    stopped_early = True
            if (config.checkpoint_every and global_step % config.checkpoint_every == 0
                    and global_step < config.max_steps and not stopped_early):
                staging = ckpt.new_staging_root()
                try:
                    write_state(staging / ckpt.step_name(global_step), net, optimizer, head, global_step,
                                 {"history": history, "curve": curve, "skipped": skipped,
                                  "skipped_unreadable": unreadable, "recent_losses": losses[-config.log_every:]})
                    run.save(staging / ckpt.step_name(global_step), global_step, config=to_dict(config))
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            if _on_step is not None:
                _on_step(global_step)
            if stopped_early:
                break

        if not last_eval or last_eval.get("step") != global_step:
            last_eval = evaluate(global_step)
            history.append(last_eval)
        if writer is not None:
            writer.close()
        metrics = {
            "steps": global_step, "stopped_early": stopped_early, "train_seconds": round(time.perf_counter() - started, 2),
            # Mean losses of the first and last logging windows (log_every steps), across resumes.
            "first_loss": curve[0][1] if curve else None, "last_loss": curve[-1][1] if curve else None,
            "skipped_too_long": skipped, "skipped_unreadable": unreadable, "device": device, "resumed_from_step": resumed_from,
            "train_lines": len(batches.train), "heldout_lines": len(lineset.heldout) if lineset else 0,
            **{k: v for k, v in last_eval.items() if k != "step" and not k.endswith("_examples")},
            "heldout_cer_headline": headline_cer(last_eval),
        }
        # The checkpoint at the top: the artifact is itself a model source (export, OCR, more fine-tuning).
        net.save_pretrained(out_dir, safe_serialization=True)
        processor.save_pretrained(out_dir)
        (out_dir / "training.json").write_text(json.dumps(
            {"config": to_dict(config), "metrics": metrics, "lineage": lineage, "run": run.key,
             "history": history, "loss_curve": curve}, indent=1, ensure_ascii=False), encoding="utf-8")
        inputs = {"base_model": base_hash}
        if lineset:
            inputs["data"] = lineset.data_hash
        return artifacts.publish(out_dir, output, kind=KIND, inputs=inputs, config=to_dict(config), metrics=metrics,
                                 lineage={**lineage, "run": run.key}, overwrite=True)
