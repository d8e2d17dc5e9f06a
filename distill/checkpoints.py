"""Training checkpoints in safetensors + JSON, written atomically, for exact resume.

`OUT/checkpoints/step-000500/` holds `model.safetensors` (student and adapter),
`optimizer.safetensors` (AdamW moments), and `state.json` (step, param groups, RNG,
fp16 loss-scaler state, run identity). The directory is assembled under a temporary name and renamed, so a
checkpoint either exists whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from faceptor_edge.errors import UserError

KEEP = 2


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    out: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    identity: dict,
    *,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write `out/checkpoints/step-XXXXXX` atomically and prune all but the newest KEEP."""
    root = out / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    tensors = {k: v.cpu() for k, v in tensors.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {"step": step, "identity": identity, "optimizer": meta, "rng": torch.get_rng_state().tolist(),
             "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}  # fmt: skip
    (tmp / "state.json").write_text(json.dumps(state))
    for path in tmp.iterdir():
        with path.open("rb") as file:
            os.fsync(file.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    complete = [p for p in sorted((out / "checkpoints").glob("step-*")) if (p / "state.json").exists()]
    return complete[-1] if complete else None


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    identity: dict,
    *,
    scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Restore model, optimizer, RNG and loss scaler; returns the step to continue from.

    Raises:
        UserError: the checkpoint belongs to a run with another teacher, student or data.
    """
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot resume from {path}: its state.json is missing or corrupt ({error})") from error
    if not isinstance(state, dict) or not {"identity", "step", "optimizer", "rng"} <= state.keys():
        raise UserError(f"cannot resume from {path}: its state.json lacks the run's identity, step or optimizer")
    if state["identity"] != identity:
        changed = sorted(k for k in identity.keys() | state["identity"].keys()
                         if identity.get(k) != state["identity"].get(k))  # fmt: skip
        raise UserError(f"cannot resume from {path}: the run differs in {', '.join(changed)}; use a new --out")
    try:
        weights, moments = (load_file(str(path / name)) for name in ("model.safetensors", "optimizer.safetensors"))
    except (SafetensorError, OSError) as error:
        raise UserError(f"cannot resume from {path}: a checkpoint file is missing or corrupt ({error})") from error
    model.load_state_dict(weights, strict=True)
    optimizer.load_state_dict(_unflatten_optimizer(moments, state["optimizer"]))
    torch.set_rng_state(torch.tensor(state["rng"], dtype=torch.uint8))
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["step"])
