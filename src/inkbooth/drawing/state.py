"""A drawing stage's checkpoint without pickles: weights, optimizer state and the moving average in
safetensors, the rest (step, curves, held-out history) in JSON."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Ema:
    """An exponential moving average of the trainable weights of ``modules`` (decay warmed up as
    min(decay, (1 + n) / (10 + n)) after n updates, so early averages do not hold the random start)."""

    def __init__(self, modules: dict[str, Any], decay: float) -> None:
        self.decay = decay
        self.params = {f"{name}.{k}": p for name, m in modules.items() for k, p in m.named_parameters()
                       if p.requires_grad}
        self.shadow = {k: p.detach().clone() for k, p in self.params.items()}

    def update(self, updates: int) -> None:
        import torch

        d = min(self.decay, (1 + updates) / (10 + updates))
        with torch.no_grad():
            for k, p in self.params.items():
                self.shadow[k].mul_(d).add_(p.detach(), alpha=1 - d)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the modules for the duration (the trained ones back after)."""
        import torch

        backup = {k: p.detach().clone() for k, p in self.params.items()}
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(backup[k])


def write_state(folder: Path, modules: dict[str, Any], optimizer: Any, state: dict[str, Any],
                 ema: Ema | None = None) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if ema is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.shadow.items()}, str(folder / "ema.safetensors"))
    for name, module in modules.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  str(folder / f"{name}.safetensors"))
    opt = optimizer.state_dict()
    save_file({f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items()},
              str(folder / "optimizer.safetensors"))
    (folder / "state.json").write_text(json.dumps({**state, "param_groups": opt["param_groups"]}, indent=1))


def read_state(folder: Path, modules: dict[str, Any], optimizer: Any, ema: Ema | None = None) -> dict[str, Any]:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    if ema is not None:
        ema.shadow = {k: v.to(ema.params[k].device) for k, v in load_file(str(folder / "ema.safetensors")).items()}
    for name, module in modules.items():
        module.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    for group in optimizer.param_groups:  # JSON made the betas a list
        group["betas"] = tuple(group["betas"])
    return state
