"""Op-level profile of a `.pte`: ExecuTorch's ETDump, read with its devtools Inspector.

The program runs `forward` with ETDump on, on random inputs of its own input shape; the
XNNPACK delegate records each of its operators (`Convolution (NHWC, QC8) DWConv #3`), the
runtime each delegate and kernel call. The ETDump file is kept for ExecuTorch's own tools.
Times are per-operator medians over the runs; the first run is left out (it primes caches).
The delegate call's time also holds what its operators' events do not (tensor copies in
and out, event recording itself), so the op total falls short of it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceptor_edge.backends.executorch import load_program, set_threads
from faceptor_edge.files import atomic_write_json

RUNTIME_EVENTS = frozenset({"Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"})


@dataclass(frozen=True)
class OpTime:
    """One operator event: its name (`… #k`), kind (the name without `#k`) and median ms."""

    name: str
    kind: str
    median_ms: float
    delegated: bool


@dataclass(frozen=True)
class Profile:
    """Per-op medians of one `.pte`, and the whole `forward` call's median."""

    path: str
    runs: int
    threads: dict[str, Any]
    forward_ms: float
    ops: tuple[OpTime, ...]

    def by_kind(self) -> list[tuple[str, int, float]]:
        """(kind, count, total median ms), slowest kind first."""
        totals: dict[str, list[float]] = defaultdict(list)
        for op in self.ops:
            totals[op.kind].append(op.median_ms)
        return sorted(((k, len(v), sum(v)) for k, v in totals.items()), key=lambda row: -row[2])

    def format(self, top: int = 12) -> str:
        """The op kinds by total time, then the `top` slowest single ops."""
        total = sum(op.median_ms for op in self.ops)
        head = f"op-level profile ({self.runs} runs, threads {self.threads}): forward {self.forward_ms:.3f} ms"
        lines = [
            f"{head}, its {len(self.ops)} ops {total:.3f} ms",
            f"{'op kind':44s} {'count':>5s} {'ms':>8s} {'share':>6s}",
        ]
        for kind, count, ms in self.by_kind():
            lines.append(f"{kind:44s} {count:5d} {ms:8.3f} {ms / max(total, 1e-9):6.1%}")
        lines.append(f"slowest {top} ops:")
        for op in sorted(self.ops, key=lambda o: -o.median_ms)[:top]:
            lines.append(f"  {op.name:48s} {op.median_ms:8.3f} ms")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "runs": self.runs, "threads": self.threads, "forward_ms": self.forward_ms,
                "by_kind": [{"kind": k, "count": n, "ms": ms} for k, n, ms in self.by_kind()],
                "ops": [vars(op) for op in self.ops]}  # fmt: skip


def profile(path: str | Path, out_dir: str | Path, *, runs: int = 20, threads: int | None = None) -> Profile:
    """Run `path`'s `forward` `runs` + 1 times with ETDump on; write `out_dir/etdump.etdp` and
    `out_dir/profile.json`; return the profile."""
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    path, out_dir = Path(path), Path(out_dir)
    load_program(path)  # one clear error for what is not one of our programs
    pool = set_threads(threads)
    program = Runtime.get().load_program(path, enable_etdump=True)
    method = program.load_method("forward")
    shape = tuple(method.metadata.input_tensor_meta(0).sizes())
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    for _ in range(runs + 1):
        method.execute([x])
    out_dir.mkdir(parents=True, exist_ok=True)
    etdump = out_dir / "etdump.etdp"
    program.write_etdump_result_to_file(str(etdump), None)
    block = next(b for b in Inspector(etdump_path=str(etdump)).event_blocks if b.name == "Execute")

    def median(event) -> float:
        return float(np.median(event.perf_data.raw[1:]))

    ops = tuple(OpTime(e.name, re.sub(r" #\d+$", "", e.name), median(e), bool(e.is_delegated_op))
                for e in block.events if e.perf_data is not None and e.name not in RUNTIME_EVENTS)  # fmt: skip
    forward = next(median(e) for e in block.events if e.name == "Method::execute")
    result = Profile(str(path), runs, pool, forward, ops)
    atomic_write_json(out_dir / "profile.json", result.to_json())
    return result
