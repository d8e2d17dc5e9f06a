"""Safe loading of official Faceptor checkpoints (SPEC §8).

Official training checkpoints are `torch.save` dicts with `step`, `optimizer` and a
DDP `state_dict` (keys start with `module.`). They are read with `weights_only=True`,
so a file that needs arbitrary unpickling is refused before anything in it runs.
Keys are renamed onto `FaceptorTeacher` through one prefix table; anything left over,
missing or misshapen is reported in one error, with official names.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceptor_edge.errors import UserError
from faceptor_edge.teacher.model import FaceptorTeacher, Variant, teacher_builders


class CheckpointError(UserError):
    """A file or mapping that is not a loadable Faceptor teacher checkpoint."""


DDP_PREFIX = "module."
# Official prefix -> FaceptorTeacher prefix.
RENAMES = (
    ("backbone_module.visual.", "encoder."),
    ("heads_module.decoder.", "decoder."),
    ("heads_module.interpreters.feature_v2.", "embedding_head."),
    ("heads_module.interpreters.value.", "value_head."),
    ("heads_module.interpreters.map_v2.", "map_head."),
)
# Stored by the official model but never used by its forward pass (SPEC §2.2).
UNUSED_KEYS = {
    "backbone_module.visual.ln_post.weight": (768,),
    "backbone_module.visual.ln_post.bias": (768,),
    "backbone_module.visual.proj": (768, 512),
}
# `Norm2d` stores its affine twice, under its own name and its LayerNorm shim's, as one
# shared tensor (SPEC §4.3). The official loader copies the shim's key last, so it wins.
ALIASES = {
    "heads_module.interpreters.map_v2.mask_map.1.ln.weight": "heads_module.interpreters.map_v2.mask_map.1.weight",
    "heads_module.interpreters.map_v2.mask_map.1.ln.bias": "heads_module.interpreters.map_v2.mask_map.1.bias",
}
TRAINING_ONLY_PREFIX = "losses_module."


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the state dict of an official `.pth`/`.pth.tar` checkpoint, or a `.safetensors` file.

    Raises:
        CheckpointError: missing file, not a checkpoint, or a pickle that is not plain tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own untyped errors
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    with path.open("rb") as file:
        magic = file.read(4)
    if not (zipfile.is_zipfile(path) or magic[:1] == b"\x80"):  # torch zip archive or legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):  # the weights-only unpickler names the global it blocked
            raise CheckpointError(f"{path}: corrupt or truncated checkpoint (unreadable pickle stream)") from error
        raise CheckpointError(
            f"{path}: refused. It needs arbitrary unpickling (objects beyond tensors and plain "
            "containers), which could run code; nothing in it was executed."
        ) from error
    except Exception as error:  # torch's readers raise many types on truncated or corrupt files
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(error).__name__}: {error})") from error
    if isinstance(content, Mapping) and "state_dict" in content:
        content = content["state_dict"]
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path}: holds a {type(content).__name__}, not a state dict")
    return dict(content)


def detect_variant(keys: set[str]) -> Variant:
    """Tell Base, Full and stage-2 Layer-Attention apart from telltale keys (no `module.`)."""
    if not any(key.startswith("backbone_module.visual.") for key in keys):
        raise CheckpointError("not a Faceptor checkpoint: no 'backbone_module.visual.*' encoder keys")
    if any(key.startswith("heads_module.heads.") for key in keys):
        raise CheckpointError("this is a Naive Faceptor checkpoint (task-specific heads); not supported")
    if "heads_module.decoder.new_level_embed.weight" in keys:
        return "full_layer_attention"
    if "heads_module.decoder.query_feat.age_utkface.weight" in keys:
        return "full"
    if "heads_module.decoder.query_feat.age_morph2.weight" in keys:
        return "base"
    raise CheckpointError("not a Faceptor checkpoint: no decoder task queries found")


def _to_tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.as_tensor(value)
    raise CheckpointError(f"{key}: expected a tensor or array, got {type(value).__name__}")


def _rename(official_key: str) -> str | None:
    for old, new in RENAMES:
        if official_key.startswith(old):
            return new + official_key[len(old) :]
    return None


def _official_name(internal_key: str) -> str:
    for old, new in RENAMES:
        if internal_key.startswith(new):
            return DDP_PREFIX + old + internal_key[len(new) :]
    return internal_key


def convert_official_state(state: Mapping[str, Any], model: FaceptorTeacher) -> dict[str, torch.Tensor]:
    """Map official keys onto `model`, checking that every key and shape matches.

    Raises:
        CheckpointError: listing every missing, unexpected and misshapen key by official name.
    """
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    present: set[str] = set()
    unexpected, misshapen = [], []
    # Aliases last, so they take precedence as in the official load order.
    for key, value in sorted(state.items(), key=lambda item: item[0].removeprefix(DDP_PREFIX) in ALIASES):
        plain = key.removeprefix(DDP_PREFIX)
        if plain.startswith(TRAINING_ONLY_PREFIX):
            continue
        plain = ALIASES.get(plain, plain)
        tensor = _to_tensor(key, value)
        if plain in UNUSED_KEYS:
            if tuple(tensor.shape) != UNUSED_KEYS[plain]:
                misshapen.append(f"{key} {tuple(tensor.shape)} != {UNUSED_KEYS[plain]}")
            continue
        internal = _rename(plain)
        present.add(internal)
        if internal not in expected:
            unexpected.append(key)
        elif tensor.shape != expected[internal].shape:
            misshapen.append(f"{key} {tuple(tensor.shape)} != {tuple(expected[internal].shape)}")
        else:
            converted[internal] = tensor
    missing = [_official_name(key) for key in expected if key not in present]
    if missing or unexpected or misshapen:
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
            if keys
        ]
        raise CheckpointError(f"checkpoint does not match Faceptor-{model.variant}; " + "; ".join(parts))
    return converted


def official_layout(variant: Variant) -> dict[str, tuple[int, ...]]:
    """Every official state-dict key of a variant (with `module.`) and its shape, losses excluded."""
    with torch.device("meta"):
        model = teacher_builders[variant]()
    layout = {_official_name(key): tuple(t.shape) for key, t in model.state_dict().items()}
    layout.update({DDP_PREFIX + key: shape for key, shape in UNUSED_KEYS.items()})
    layout.update({DDP_PREFIX + alias: layout[DDP_PREFIX + key] for alias, key in ALIASES.items()})
    return layout


def load_teacher(source: str | Path | Mapping[str, Any], *, dense_size: int = 512) -> FaceptorTeacher:
    """Build the right Faceptor variant and load official weights into it.

    Args:
        source: Path to an official training checkpoint (`.pth`, `.pth.tar`; or a
            `.safetensors` of official keys), or a mapping of official keys to tensors or arrays.
            `module.` prefixes are optional; `losses_module.*` is ignored.
        dense_size: Input side of the 512 group; 512 is official.

    Returns:
        The teacher in eval mode, with `.variant` and `.task_names`.
    """
    state = read_checkpoint(source) if isinstance(source, (str, Path)) else dict(source)
    variant = detect_variant({key.removeprefix(DDP_PREFIX) for key in state})
    model = teacher_builders[variant](dense_size=dense_size)
    model.load_state_dict(convert_official_state(state, model), strict=True)
    return model.eval()
