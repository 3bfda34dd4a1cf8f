"""What a DreamBooth run is: its settings (``TrainConfig``) and its identity (``run_identity``).

Checkpoints resume only into a run with the same identity: the base model, the images and the
settings that shape the training trajectory. ``KIND`` is the artifact kind of a trained model.
Imports nothing of ``inkbooth.dreambooth``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Literal

from inkbooth.config import option, to_dict

log = logging.getLogger(__name__)

KIND = "dreambooth-model"


@dataclasses.dataclass
class TrainConfig:
    """A DreamBooth run."""

    instance_prompt: str = option("a photo of sks dog", "prompt of the subject images, with the identifier")
    identifier: str = option("sks", "the rare token that names the subject; must appear in instance_prompt")
    class_prompt: str = option("a photo of dog", "prompt of the class images (prior preservation)")
    with_prior_preservation: bool = option(True, "add the class-image loss")
    prior_loss_weight: float = option(1.0, "weight of the class-image loss", min=0.0)
    resolution: int = option(0, "training size in pixels (0: the model's native size)", min=0, max=8192)
    center_crop: bool = option(True, "center crop (else random crop)")
    random_flip: bool = option(False, "random horizontal flips of subject images")
    train_text_encoder: bool = option(False, "train the text encoder too")
    max_train_steps: int = option(400, "optimizer steps", min=1, max=10_000_000)
    train_batch_size: int = option(1, "subject images per step and process (as many class images are added)", min=1, max=4096)
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", min=1, max=4096)
    learning_rate: float = option(5e-6, "UNet learning rate (1e-4 is typical for LoRA)", min=0.0, max=1.0)
    text_encoder_lr: float = option(0.0, "text encoder learning rate (0: same as learning_rate)", min=0.0, max=1.0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = option("constant", "LR schedule")
    lr_warmup_steps: int = option(0, "warm-up steps", min=0)
    adam_beta1: float = option(0.9, "Adam beta1")
    adam_beta2: float = option(0.999, "Adam beta2")
    adam_weight_decay: float = option(1e-2, "AdamW weight decay")
    adam_epsilon: float = option(1e-8, "Adam epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm", min=0.0)
    use_8bit_adam: bool = option(False, "bitsandbytes 8-bit AdamW (CUDA only)")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", "autocast precision; weights stay fp32")
    gradient_checkpointing: bool = option(False, "trade compute for memory")
    channels_last: bool = option(True, "UNet in channels-last memory format (faster convolutions on CPU and GPU)")
    snr_gamma: float = option(0.0, "min-SNR weighting gamma (0: off; 5.0 is the usual choice)", min=0.0)
    offset_noise: float = option(0.0, "offset noise strength (0: off; 0.1 is typical)", min=0.0, max=10.0)
    lora_rank: int = option(0, "LoRA rank (0: full fine-tuning)", min=0, max=4096)
    cache_latents: bool = option(True, "encode the images once instead of every step")
    checkpoint_every: int = option(0, "full-state checkpoint every N steps (0: none)", min=0)
    checkpoints_total_limit: int = option(2, "checkpoints kept (older ones are deleted)", min=0)
    snapshot_every: int = option(0, "keep the trained weights every N steps in the artifact (snapshots/step-N/), "
                                    "for evaluate-dreambooth to judge and `select: best` to choose from (0: none)", min=0)
    resume: str = option("", "'latest' or a step number to resume from a checkpoint; empty: start fresh")
    log_every: int = option(10, "TensorBoard scalars every N steps (the tracker flushes to disk on each)", min=1)
    validation_every: int = option(0, "validation images every N steps (0: none)", min=0)
    validation_prompts: list[str] = option(["a photo of sks dog on the beach"], "validation prompts")
    validation_steps: int = option(20, "sampling steps for validation images", min=1, max=1000)
    seed: int = option(0, "seed of every random draw")
    allow_pickle: bool = option(False, "accept pickle-based base weights")

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "train")
        if not re.search(rf"(^|\W){re.escape(self.identifier)}(\W|$)", self.instance_prompt):
            raise ValueError(f"instance_prompt {self.instance_prompt!r} does not contain the identifier "
                             f"{self.identifier!r}: the model would have no token to learn the subject by")
        for prompt in self.validation_prompts:
            if self.identifier not in prompt:
                log.warning("validation prompt %r does not use the identifier %r", prompt, self.identifier)
        if self.max_train_steps < 1 or self.train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("max_train_steps, train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.lora_rank and self.train_text_encoder:
            raise ValueError("lora_rank with train_text_encoder is not supported yet: train the UNet's LoRA only, "
                             "or fine-tune the text encoder fully (lora_rank: 0)")
        if self.resume not in ("", "latest") and not self.resume.isdigit():
            raise ValueError(f"resume must be '', 'latest' or a step number, got {self.resume!r}")


# Config fields that cannot change the training trajectory: a resumed run may differ in these.
NOT_TRAJECTORY = ("resume", "checkpoint_every", "checkpoints_total_limit", "log_every", "snapshot_every")


def run_identity(config: TrainConfig, *, base_model_hash: str, instance_images_hash: str, class_images_hash: str,
                 processes: int) -> dict[str, Any]:
    """What a training run is: its checkpoints resume only into a run with the same identity."""
    from inkbooth.config import config_hash

    trajectory = {k: v for k, v in to_dict(config).items() if k not in NOT_TRAJECTORY}
    return {"trainer": KIND, "base_model": base_model_hash, "instance_images": instance_images_hash,
            "class_images": class_images_hash, "config": config_hash(trajectory), "processes": processes}
