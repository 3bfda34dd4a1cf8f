"""A fine-tuning run's checkpoint state without pickles: tensors in safetensors, the rest in JSON.

Weights, the optimizer's state (and the auxiliary CTC head) after a step, and the run's own state
(step, loss history, RNG-free: every draw is a function of the seed and the step). Saving, listing
and resuming checkpoints is ``inkbooth.checkpoints``; this is what one holds. Imports nothing of
``inkbooth.ocr``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_state(folder: Path, model: Any, optimizer: Any, head: Any, step: int, state: dict[str, Any]) -> None:
    """Weights, optimizer state (and the auxiliary CTC head) after ``step`` steps, into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    save_file({f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items()},
              str(folder / "optimizer.safetensors"))
    if head is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(folder / "ctc_head.safetensors"))
    (folder / "state.json").write_text(json.dumps({"step": step, "param_groups": opt["param_groups"], **state},
                                                  indent=1))


def read_state(folder: Path, model: Any, optimizer: Any, head: Any) -> dict[str, Any]:
    """Restore what ``write_state`` saved; returns the rest of the state (step, history, ...)."""
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    if head is not None:
        head.load_state_dict(load_file(str(folder / "ctc_head.safetensors")))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    for group in optimizer.param_groups:  # JSON made the betas a list
        group["betas"] = tuple(group["betas"])
    return state
