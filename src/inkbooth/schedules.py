"""Learning-rate schedules of the trainers that write their own loop (OCR fine-tuning, the drawing
model and CLIP): linear warm-up, then constant, linear or cosine decay down to a floor.

Imports nothing of inkbooth.
"""

from __future__ import annotations

import math
from typing import Any


def lr_at(step: int, config: Any) -> float:
    """The learning rate of optimizer step ``step`` (0-based) under ``config``'s ``learning_rate``
    (the peak), ``warmup_steps``, ``max_steps``, ``min_lr_ratio`` (the floor, a share of the peak)
    and ``lr_scheduler`` ("constant", "linear" or "cosine"): warm-up, then the chosen decay."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if config.lr_scheduler == "constant":
        return peak
    span = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    shape = 1.0 - progress if config.lr_scheduler == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape)
