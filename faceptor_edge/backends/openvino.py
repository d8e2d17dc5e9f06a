"""OpenVINO runtime: an IR `.xml` + `.bin` written by `targets.openvino`, run on `openvino.Core`.

Metadata lives in the IR's `rt_info` under `faceptor_edge/metadata`. The runner compiles
for CPU with `INFERENCE_PRECISION_HINT=f32` by default (on CPUs with bf16/AMX support
OpenVINO otherwise runs float layers in bf16, errors ~1e-2) and `INFERENCE_NUM_THREADS`
when `threads` is given, and reuses one infer request on every call, as an app would.

Every model is read and compiled on one `openvino.Core` per process (`shared_core`): each
CPU plugin instance installs an alternate signal stack on the calling thread and puts the
previous one back when it is destroyed, so Cores destroyed out of creation order leave a
stale, unmapped stack behind, and the next signal handled on it (a SIGCHLD from a worker
process) kills the process with SIGSEGV. One Core keeps one valid stack for the process;
code that compiles on Cores of its own (NNCF) runs inside `signal_stack.kept()`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from faceptor_edge.backends.artifact import (
    ArtifactError,
    OutputSpec,
    Runner,
    check_input_shape,
    check_outputs,
    output_specs_from_metadata,
    parse_metadata,
)

METADATA_KEY = ["faceptor_edge", "metadata"]
InferencePrecision = Literal["f32", "bf16", "f16"]


@functools.cache
def shared_core() -> Any:
    """The process's one `openvino.Core` (module doc: why one)."""
    import openvino as ov

    return ov.Core()


def read_model(path: Path) -> Any:
    """The `openvino.Model` of an IR; ArtifactError when either file is missing or unreadable."""
    path = Path(path)
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ArtifactError(f"{path}: OpenVINO IR needs both {path.name} and {path.with_suffix('.bin').name}")
    try:
        return shared_core().read_model(path)
    except Exception as err:  # OpenVINO raises RuntimeError with its own parser message
        raise ArtifactError(f"{path}: not a readable OpenVINO IR ({str(err).strip().splitlines()[-1]})") from err


def model_metadata(model: Any, path: Path) -> dict[str, Any]:
    """The metadata record in a model's `rt_info`."""
    if not model.has_rt_info(METADATA_KEY):
        raise ArtifactError(f"{path}: OpenVINO IR has no faceptor_edge metadata in rt_info")
    return parse_metadata(model.get_rt_info(METADATA_KEY).astype(str), path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata record of an IR."""
    return model_metadata(read_model(Path(path)), Path(path))


def _model_outputs(model: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(out.get_any_name(), tuple(int(d) for d in out.get_partial_shape().to_shape())) for out in model.outputs]


def load_checked(path: Path) -> tuple[Any, dict[str, Any], list[OutputSpec]]:
    """Read an IR and check its static outputs against its metadata."""
    model = read_model(path)
    record = model_metadata(model, Path(path))
    outputs = output_specs_from_metadata(record, Path(path))
    if any(out.get_partial_shape().is_dynamic for out in model.outputs):
        raise ArtifactError(f"{path}: OpenVINO IR has dynamic output shapes; not a faceptor-edge export")
    check_outputs(_model_outputs(model), outputs, Path(path))
    if len(model.inputs) != 1 or model.inputs[0].get_partial_shape().is_dynamic:
        raise ArtifactError(f"{path}: OpenVINO IR needs one static input; not a faceptor-edge export")
    check_input_shape(tuple(int(d) for d in model.inputs[0].get_partial_shape().to_shape()), record, Path(path))
    return model, record, outputs


@dataclass(kw_only=True)
class OpenVINORunner(Runner):
    """A compiled IR: `run` takes N×3×S×S float32 crops, returns raw outputs by name."""

    compiled: Any
    _request: Any = field(default=None, repr=False)
    _ports: list[Any] = field(default_factory=list, repr=False)

    def run_batch(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._request is None:
            self._request = self.compiled.create_infer_request()
            self._ports = [self.compiled.output(spec.name) for spec in self.outputs]
        result = self._request.infer({0: batch})
        return [result[port].copy() for port in self._ports]


def load(
    path: Path,
    *,
    threads: int | None = None,
    device: str = "CPU",
    inference_precision: InferencePrecision | None = "f32",
) -> OpenVINORunner:
    """Read, check and compile an IR for `device`.

    Args:
        threads: `INFERENCE_NUM_THREADS` (default: the plugin's choice).
        inference_precision: CPU `INFERENCE_PRECISION_HINT`; None keeps the plugin default.
    """
    model, record, _ = load_checked(Path(path))
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision} if inference_precision else {}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = shared_core().compile_model(model, device, config)
    except Exception as err:
        raise ArtifactError(f"{path}: OpenVINO cannot compile the model for {device} ({err})") from err
    thread_facts = {"openvino": int(compiled.get_property("INFERENCE_NUM_THREADS"))}
    return OpenVINORunner(**Runner.fields_from(record, path), compiled=compiled, threads=thread_facts)
