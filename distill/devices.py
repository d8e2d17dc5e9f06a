"""Where distillation runs: the device, its numeric precision, and the process group.

`--device auto` takes CUDA, else Apple's MPS, else the CPU. Under torchrun each rank takes
the GPU of its `LOCAL_RANK` and joins over NCCL; CPU ranks join over gloo. Mixed precision
is autocast: bf16 on the CPU and on GPUs that have it, fp16 on CUDA and MPS (with loss
scaling on CUDA).
"""

from __future__ import annotations

import contextlib
import os
from typing import Literal

import torch
import torch.distributed as dist

from faceptor_edge.errors import UserError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
# Distillation's autocast dtype (`--precision`), not an artifact's precision (fp32, int8: targets).
AutocastDtype = Literal["fp32", "bf16", "fp16"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
AUTOCAST_DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """The torch device `--device name` means for this process (its LOCAL_RANK's GPU under torchrun).

    Raises:
        UserError: an unknown name, or a device this machine lacks.
    """
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: choose from {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: this torch build or machine has no CUDA GPU (torch.cuda.is_available() "
                            "is False); use --device cpu or auto")  # fmt: skip
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA GPU(s)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name == "mps" and not _mps_available():
        raise UserError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    return torch.device(name)


def check_precision(device: torch.device, precision: str) -> None:
    """Raises UserError when `device` cannot autocast to `precision`."""
    if precision not in AUTOCAST_DTYPES:
        raise UserError(f"--precision {precision!r}: choose from {', '.join(AUTOCAST_DTYPES)}")
    if precision == "fp16" and device.type == "cpu":
        raise UserError("--precision fp16: the CPU has no fast fp16 autocast; use bf16 (or fp32) on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to `precision` on `device` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def join_process_group(device: torch.device) -> tuple[int, int]:
    """(rank, world size); under torchrun joins the group: NCCL for CUDA tensors, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
