"""The config of a drawing stage, its run identity and its learning-rate schedule."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Literal

from inkbooth.config import option

_NOT_IDENTITY = ("resume", "threads", "log_every", "eval_every", "eval_pairs", "eval_samples", "eval_sampling_steps",
                 "eval_guidance", "checkpoint_every", "checkpoints_total_limit", "device")


# Fields only a dino stage reads: part of its identity, not of the other kinds' (whose published
# stages and checkpoints were keyed before these fields existed, and which they do not change).
_DINO_ONLY = ("prototypes", "teacher_temp", "student_temp", "teacher_momentum", "center_momentum", "local_crops",
              "local_crop_size", "global_crop_scale", "local_crop_scale", "brightness", "background_swap")


# Fields only a vae stage reads, likewise.
_VAE_ONLY = ("vae_variety", "vae_init_logvar")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a stage config (as a dict) that shape the weights: a run's identity."""
    dino, vae = config.get("train") == "dino", config.get("train") == "vae"
    return {k: v for k, v in config.items() if k not in _NOT_IDENTITY and (dino or k not in _DINO_ONLY)
            and (vae or k not in _VAE_ONLY)}


@dataclasses.dataclass
class StageConfig:
    """One training stage of the drawing model or the small CLIP."""

    train: Literal["vae", "diffusion", "clip", "dino"] = option("diffusion", "what this stage trains")
    max_steps: int = option(1000, "optimizer steps", min=1)
    batch_size: int = option(32, "pictures per step", min=1)
    learning_rate: float = option(1e-3, "peak learning rate", min=0.0)
    lr_scheduler: Literal["constant", "cosine"] = option("cosine", "decay after warm-up")
    warmup_steps: int = option(100, "linear warm-up steps", min=0)
    min_lr_ratio: float = option(0.05, "floor of the decay, as a share of the peak", min=0.0, max=1.0)
    weight_decay: float = option(0.01, "AdamW weight decay", min=0.0)
    max_grad_norm: float = option(1.0, "gradient clipping norm", min=0.0)
    kl_weight: float = option(1e-6, "vae: weight of the KL term", min=0.0)
    vae_init_logvar: float = option(0.0, "vae: the posterior's log-variance at the start (the bias of its "
                                         "quant_conv; 0: as built, a std of 1): a small std from the start lets the "
                                         "decoder learn detail instead of decoding through noise", max=0.0)
    vae_variety: float = option(0.0, "vae: share of each batch drawn afresh beyond the domain (any texture, zigzag "
                                     "too, patterns of any colour, colour channels shuffled): an autoencoder for "
                                     "colours and patterns the domain never shows, as SD's VAE was trained on far "
                                     "more than a fine-tuning subject", min=0.0, max=1.0)
    caption_dropout: float = option(0.1, "diffusion: share of empty captions (for classifier-free guidance)",
                                    min=0.0, max=1.0)
    caption_keep: float = option(0.7, "probability that a caption says each attribute beyond the class",
                                 min=0.0, max=1.0)
    snr_gamma: float = option(5.0, "diffusion: min-SNR-gamma loss weights (0: plain MSE)", min=0.0)
    train_text_encoder: bool = option(True, "diffusion: train the text encoder with the UNet")
    ema_decay: float = option(0.0, "decay of an exponential moving average of the trained weights, which is what "
                                   "is evaluated and saved (0: none; 0.999 suits a few thousand steps)",
                              min=0.0, max=0.99999)
    prototypes: int = option(1024, "dino: prototypes of the head (which is kept only while training)", min=2)
    teacher_temp: float = option(0.04, "dino: temperature of the teacher's outputs (sharpening)", min=1e-4)
    student_temp: float = option(0.1, "dino: temperature of the student's outputs", min=1e-4)
    teacher_momentum: float = option(0.996, "dino: the teacher's EMA momentum at the start (to 1 on a cosine)",
                                     min=0.0, max=1.0)
    center_momentum: float = option(0.9, "dino: momentum of the centre of the teacher's outputs", min=0.0, max=1.0)
    local_crops: int = option(4, "dino: small crops per picture, seen by the student only (0: none)", min=0)
    local_crop_size: int = option(32, "dino: side of those crops in pixels", min=8)
    global_crop_scale: list[float] = option([0.4, 1.0], "dino: area share of the 2 full-size crops (min, max)")
    local_crop_scale: list[float] = option([0.1, 0.4], "dino: area share of the small crops (min, max)")
    brightness: float = option(0.2, "dino: brightness jitter (x 1 +- this); no hue or colour jitter", min=0.0,
                               max=1.0)
    background_swap: float = option(0.0, "dino: share of views whose backdrop is repainted, as another of the "
                                         "domain's for the student, a neutral grey for the teacher (the object "
                                         "never changes colour)", min=0.0, max=1.0)
    pool: int = option(12000, "training pictures, rendered once per seed and cached", min=1)
    eval_every: int = option(500, "held-out figures every N steps (0: at the end only)", min=0)
    eval_pairs: int = option(128, "held-out pictures for the loss / reconstruction / zero-shot figures", min=1)
    eval_samples: int = option(16, "diffusion: samples judged by the CLIP (0: none)", min=0)
    eval_sampling_steps: int = option(20, "diffusion: sampler steps of those samples", min=1)
    eval_guidance: float = option(4.0, "diffusion: guidance scale of those samples", min=0.0)
    checkpoint_every: int = option(100, "full-state checkpoint every N steps (0: none)", min=0)
    checkpoints_total_limit: int = option(2, "checkpoints kept", min=1)
    log_every: int = option(20, "log the mean loss every N steps", min=1)
    threads: int = option(0, "torch intra-op threads (0: the runtime's default)", min=0)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when there is one (auto), or force one")
    seed: int = option(0, "seed of the pool, the order and every draw")
    resume: str = option("latest", "'latest' or a step number to resume from; empty: start fresh")


def seed_of(*parts: Any) -> int:
    """A 63-bit seed from its parts (hashed as a string: the same on every run and machine)."""
    return random.Random("/".join(map(str, parts))).getrandbits(63)
