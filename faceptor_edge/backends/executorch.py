"""ExecuTorch runtime: a `.pte` written by `targets.executorch`, run with `executorch.runtime`.

The metadata record lives inside the `.pte` as a constant method (`METADATA_METHOD`,
returning one JSON string), so the artifact is one self-describing file; any ExecuTorch
runtime reads it with `Module::execute("faceptor_edge_metadata")`. The runner loads the
`forward` method once (XNNPACK initialises then) and executes it on every call, as an app
would; `threads` sizes the XNNPACK thread pool where this build lets Python set it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceptor_edge.backends.artifact import (
    ArtifactError,
    Runner,
    check_input_shape,
    check_outputs,
    output_specs_from_metadata,
    parse_metadata,
)

METADATA_METHOD = "faceptor_edge_metadata"
# Kernels that only reshape or re-tag memory: outside a delegate they cost a copy, no arithmetic.
LAYOUT_OPS = frozenset({"view_copy", "unsqueeze_copy", "squeeze_copy", "alias_copy", "_to_dim_order_copy",
                        "_clone_dim_order", "clone"})  # fmt: skip


@dataclass(frozen=True)
class Delegation:
    """How a `.pte`'s `forward` runs: delegate calls per backend and kernels left outside them.

    Attributes:
        subgraphs: Backend id (e.g. `XnnpackBackend`) -> number of delegated subgraphs.
        outside: Operator name (e.g. `aten::upsample_nearest2d`) -> calls on portable kernels.
    """

    subgraphs: dict[str, int]
    outside: dict[str, int]

    @property
    def compute_outside(self) -> dict[str, int]:
        """`outside` without the layout-only kernels (`LAYOUT_OPS`)."""
        return {op: n for op, n in self.outside.items() if op.split("::")[-1] not in LAYOUT_OPS}

    def to_json(self) -> dict[str, Any]:
        return {"subgraphs": self.subgraphs, "outside": self.outside, "compute_outside": self.compute_outside}

    def format(self) -> str:
        """One line per fact, for `inspect`, `export` and `bench`."""
        delegates = ", ".join(f"{n} {backend}" for backend, n in self.subgraphs.items()) or "none"
        lines = [f"delegated subgraphs: {delegates}"]
        for op, n in self.outside.items():
            kind = "" if op in self.compute_outside else " (layout only)"
            lines.append(f"  outside: {op} ×{n}{kind}")
        if not self.outside:
            lines.append("  outside: nothing (every op runs inside a delegate)")
        return "\n".join(lines)


def delegation_summary(path: Path) -> Delegation:
    """The delegation of `forward` in a `.pte`, read from its serialised program (ExecuTorch's
    own flatbuffer schema: each `DelegateCall` is one subgraph, each `KernelCall` one portable op)."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall

    path = Path(path)
    try:
        program = deserialize_pte_binary(path.read_bytes()).program
        (plan,) = [plan for plan in program.execution_plan if plan.name == "forward"]
    except Exception as err:  # the deserialiser raises bare errors for bytes that are not a program
        raise ArtifactError(f"{path}: cannot read the program's 'forward' plan ({err})") from err
    subgraphs: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    for chain in plan.chains:
        for instruction in chain.instructions:
            call = instruction.instr_args
            if isinstance(call, DelegateCall):
                subgraphs[plan.delegates[call.delegate_index].id] += 1
            elif isinstance(call, KernelCall):
                outside[plan.operators[call.op_index].name] += 1
    return Delegation(dict(subgraphs), dict(sorted(outside.items())))


def load_program(path: Path) -> Any:
    """The program of a `.pte`; ArtifactError unless it is one of ours."""
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such ExecuTorch program")
    try:
        program = Runtime.get().load_program(path)
    except Exception as err:  # the runtime raises bare RuntimeError/ValueError for bad bytes
        raise ArtifactError(f"{path}: not a readable ExecuTorch program ({err})") from err
    if "forward" not in program.method_names or METADATA_METHOD not in program.method_names:
        raise ArtifactError(
            f"{path}: ExecuTorch program lacks 'forward' or '{METADATA_METHOD}'; not a faceptor-edge export"
        )
    return program


def _program_metadata(program: Any, path: Path) -> dict[str, Any]:
    try:
        (text,) = program.load_method(METADATA_METHOD).execute([])
    except Exception as err:
        raise ArtifactError(f"{path}: cannot read the metadata method ({err})") from err
    return parse_metadata(str(text), path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata record of a `.pte`."""
    return _program_metadata(load_program(path), Path(path))


def set_threads(threads: int | None) -> dict[str, Any]:
    """Size ExecuTorch's XNNPACK thread pool (process-wide); what it now is.

    The reset is ExecuTorch's "unsafe" one: programs already loaded in this process keep the
    old pool, so it happens only when the size changes (bench runs each model in its own process).
    """
    try:
        from executorch.extension.pybindings.portable_lib import (
            _threadpool_get_thread_count,
            _unsafe_reset_threadpool,
        )
    except ImportError:
        return {"executorch": "not settable from Python in this build"}
    if threads and threads != _threadpool_get_thread_count():
        _unsafe_reset_threadpool(threads)
    return {"executorch_xnnpack": int(_threadpool_get_thread_count())}


@dataclass(kw_only=True)
class ExecuTorchRunner(Runner):
    """A loaded `.pte`: `run` takes N×3×S×S float32 crops, returns raw outputs by name;
    `delegation` says which of its ops XNNPACK runs."""

    program: Any
    delegation: Delegation | None = None
    _method: Any = field(default=None, repr=False)

    def run_batch(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._method is None:
            self._method = self.program.load_method("forward")
        return [out.numpy().copy() for out in self._method.execute([torch.from_numpy(batch)])]


def load(path: Path, *, threads: int | None = None) -> ExecuTorchRunner:
    """Load a `.pte`, check its `forward` signature against its metadata, size the thread pool."""
    path = Path(path)
    program = load_program(path)
    record = _program_metadata(program, path)
    check_method(program, record, path)
    return ExecuTorchRunner(**Runner.fields_from(record, path), program=program, threads=set_threads(threads),
                            delegation=delegation_summary(path))  # fmt: skip


def check_method(program: Any, record: dict[str, Any], path: Path) -> None:
    """Load 'forward' (initialising the XNNPACK delegate) and compare its input and outputs
    with the metadata `record`."""
    outputs = output_specs_from_metadata(record, path)
    try:
        meta = program.load_method("forward").metadata
        shapes = [tuple(meta.output_tensor_meta(i).sizes()) for i in range(meta.num_outputs())]
        inputs = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
    except Exception as err:
        raise ArtifactError(f"{path}: cannot read the 'forward' signature ({err})") from err
    check_outputs(list(zip([spec.name for spec in outputs], shapes)), outputs, path)
    if len(inputs) != 1:
        raise ArtifactError(f"{path}: 'forward' takes {len(inputs)} inputs; a faceptor-edge export takes one")
    check_input_shape(inputs[0], record, path)
