"""The training pictures of a drawing stage: a pool rendered once, visited in seeded order; the held-out set."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Pool:
    """The training pictures of a seed (uint8, N x 64 x 64 x 3), rendered once in chunks under ``cache``
    (per version of the renderer)."""

    CHUNK = 1000

    def __init__(self, seed: int, size: int, cache: Path) -> None:
        import numpy as np

        from inkbooth.drawing import domain

        self.seed, self.size = seed, size
        folder = cache / domain.fingerprint() / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        parts = []
        for start in range(0, size, self.CHUNK):
            n = min(self.CHUNK, size - start)
            path = folder / f"train-{start:07d}-{n}.npy"
            if not path.is_file():
                chunk = np.stack([np.asarray(domain.render(domain.scene_at(seed, "train", i)))
                                  for i in range(start, start + n)])
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, chunk)
                tmp.rename(path)
                log.info("pool: rendered pictures %d..%d of %d", start, start + n, size)
            parts.append(np.load(path))
        self.pixels = np.concatenate(parts)

    def order(self, epoch: int) -> list[int]:
        return random.Random(f"{self.seed}/order/{epoch}").sample(range(self.size), self.size)

    def indices(self, step: int, batch: int) -> list[int]:
        """Pool indices of step ``step``: epoch after epoch, each in its own seeded order."""
        out, cached = [], {}
        for k in range(step * batch, (step + 1) * batch):
            epoch = k // self.size
            if epoch not in cached:
                cached[epoch] = self.order(epoch)
            out.append(cached[epoch][k % self.size])
        return out

    def captions(self, step: int, indices: list[int], keep: float, dropout: float = 0.0) -> list[str]:
        """Captions of the pictures of step ``step`` (each drawn afresh; ``dropout`` of them empty)."""
        from inkbooth.drawing import domain

        out = []
        for k, i in enumerate(indices):
            rng = random.Random(f"{self.seed}/caption/{step}/{k}")
            out.append("" if rng.random() < dropout else domain.caption(domain.scene_at(self.seed, "train", i), rng,
                                                                          keep=keep))
        return out


def to_tensor(pixels: Any) -> Any:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1] (the VAE's range)."""
    import torch

    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def heldout(n: int) -> tuple[Any, list[str], list[Any]]:
    """Held-out pictures (uint8 array), full captions and scenes: the "heldout" split, the same for every
    stage whatever its seed (so the figures of stages compare), apart from every "train" split."""
    import numpy as np

    from inkbooth.drawing import domain

    scenes = [domain.scene_at(0, "heldout", i) for i in range(n)]
    return (np.stack([np.asarray(domain.render(s)) for s in scenes]), [domain.caption(s) for s in scenes], scenes)


def torch_randn(shape: Any, gen: Any) -> Any:
    """Standard normal noise drawn from the generator ``gen``."""
    import torch

    return torch.randn(shape, generator=gen)
