"""One benchmark row, measured inside its own process (`faceptor_edge.bench` starts it).

Each model sits behind the same small interface, `BenchModel`: a synthetic input of a
given batch, one inference call, and the end-to-end steps for one face (crop, infer,
decode). `measure_row` pins the threads, loads the model (timed), times it at batch 1
(model alone, then end to end) and reads the process's peak resident memory, so the
peak belongs to this model alone; the batch throughput run comes after that reading.

Artifacts are timed at their runtime's steady-state call (ExecuTorch: one loaded
`forward` method executed again and again; OpenVINO: one infer request), as an app
would run them. `Runner.run` also loads the method / makes a request per call; its
median is reported beside (`runner_run_ms_median`).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from faceptor_edge.decode import decode
from faceptor_edge.images import load_image
from faceptor_edge.preprocess import CLIP_MEAN, CLIP_STD, Crop, prepare_face
from faceptor_edge.student.inputs import normalise
from faceptor_edge.tasks import TaskSpec

_MEAN = np.asarray(CLIP_MEAN, dtype=np.float32)
_STD = np.asarray(CLIP_STD, dtype=np.float32)


@dataclass(frozen=True)
class RowSpec:
    """What one row measures; JSON-serialisable, handed to the row process.

    Attributes:
        name, kind, target, precision: The row's labels.
        source: Teacher checkpoint or "demo", student directory, artifact path, or peer name.
        runs, warmup: Timed and untimed batch-1 calls.
        batch: Batch for the throughput measurement (ignored by static-batch artifacts).
        threads: Cores and threads the row may use.
        image: PNG of one face for the end-to-end path ("" to skip it).
        teacher_dense_size: Side of the teacher's dense input group.
    """

    name: str
    kind: str
    target: str
    precision: str
    source: str
    runs: int
    warmup: int
    batch: int
    threads: int
    image: str = ""
    teacher_dense_size: int = 512


class BenchModel(Protocol):
    """A loaded model the benchmark can time."""

    tasks: tuple[TaskSpec, ...]
    static_batch: int | None  # None: any batch
    runnable: bool  # False: size and load time only (Core ML off macOS)
    facts: dict[str, Any]  # params, size_bytes, threads, notes

    def example(self, batch: int) -> Any: ...

    def infer(self, inputs: Any) -> Any: ...

    def prepare(self, image: np.ndarray) -> tuple[Any, Crop]: ...


def pin_threads(threads: int) -> dict[str, Any]:
    """Restrict this process to `threads` CPUs and size torch's pools to match."""
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return {"cpus": cpus, "torch": torch.get_num_threads()}


@dataclass
class TeacherModel:
    """The Faceptor teacher in PyTorch fp32: both input groups, every head."""

    teacher: Any
    facts: dict[str, Any]
    static_batch: int | None = None
    runnable: bool = True

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.teacher.config.tasks

    def example(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        dense = self.teacher.config.dense_size
        return torch.randn(batch, 3, 112, 112), torch.randn(batch, 3, dense, dense)

    def infer(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self.teacher.forward_raw(*inputs)

    def prepare(self, image: np.ndarray) -> tuple[Any, Crop]:
        crops = prepare_face(image, dense_size=self.teacher.config.dense_size)
        return (torch.from_numpy(crops.x112)[None], torch.from_numpy(crops.x512)[None]), crops.crop512


def load_teacher_model(source: str, dense_size: int) -> TeacherModel:
    from faceptor_edge.teacher import build_demo_teacher, load_teacher

    if source == "demo":
        teacher = build_demo_teacher(dense_size=dense_size)
        size = sum(p.numel() * p.element_size() for p in teacher.parameters())
        size_note = "fp32 parameter bytes (demo weights are generated, not read; load time includes generating them)"
    else:
        teacher = load_teacher(source, dense_size=dense_size)
        size, size_note = Path(source).stat().st_size, "checkpoint file size"
    teacher.eval().requires_grad_(False)
    facts = {"params": sum(p.numel() for p in teacher.parameters()), "size_bytes": size,
             "notes": [size_note, f"dense group at {dense_size} px, face group at 112 px"]}  # fmt: skip
    return TeacherModel(teacher, facts)


@dataclass
class StudentModel:
    """The distilled student in PyTorch fp32."""

    student: Any
    facts: dict[str, Any]
    static_batch: int | None = None
    runnable: bool = True

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.student.config.tasks

    def example(self, batch: int) -> torch.Tensor:
        size = self.student.config.input_size
        return torch.randn(batch, 3, size, size)

    def infer(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self.student(inputs)

    def prepare(self, image: np.ndarray) -> tuple[Any, Crop]:
        return student_input(image, self.student.config.input_size)


def student_input(image: np.ndarray, size: int) -> tuple[torch.Tensor, Crop]:
    """1×3×S×S normalised input and its crop; the same rounding as `student.inputs.student_crop`."""
    crop = prepare_face(image, dense_size=size).crop512
    return normalise(crop.uint8()[None]), crop


def load_student_model(source: str) -> StudentModel:
    from faceptor_edge.student.io import WEIGHTS, load_student

    student, _ = load_student(source)
    student.requires_grad_(False)  # also keeps the FLOP counter's module hooks off autograd
    facts = {"params": sum(p.numel() for p in student.parameters()),
             "size_bytes": (Path(source) / WEIGHTS).stat().st_size, "notes": ["model.safetensors size"]}  # fmt: skip
    return StudentModel(student, facts)


@dataclass
class ArtifactModel:
    """An exported artifact behind its runtime's steady-state call (see the module doc)."""

    runner: Any
    call: Callable[[np.ndarray], dict[str, np.ndarray]] | None
    tasks: tuple[TaskSpec, ...]
    facts: dict[str, Any]
    static_batch: int | None = 1

    @property
    def runnable(self) -> bool:
        return self.call is not None

    def example(self, batch: int) -> np.ndarray:
        return np.random.default_rng(0).standard_normal(self.runner.input_shape, dtype=np.float32)

    def infer(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.call(inputs)

    def prepare(self, image: np.ndarray) -> tuple[Any, Crop]:
        """Numpy only, as an app without PyTorch would (torch ops here would also contend
        with the runtime's own thread pool)."""
        crop = prepare_face(image, dense_size=int(self.runner.input_shape[-1])).crop512
        x = (crop.uint8().astype(np.float32) / 255.0 - _MEAN) / _STD  # S×S×3, CLIP normalisation
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), crop  # -> 1×3×S×S


def load_artifact_model(path: str, threads: int) -> ArtifactModel:
    from faceptor_edge.targets import artifact_size, target_for_path
    from faceptor_edge.tasks import TASKS_BY_NAME

    target = target_for_path(path)
    thread_facts: dict[str, Any] = {}
    if target.name == "executorch":
        thread_facts = _executorch_threads(threads)
    runner = target.load(Path(path))
    tasks = tuple(TASKS_BY_NAME[spec.name] for spec in runner.outputs)
    call = None
    if target.name == "executorch":
        call = _executorch_call(runner)
    elif target.name == "openvino":
        runner, thread_facts = _openvino_threads(runner, path, threads)
        call = _openvino_call(runner)
    elif sys.platform == "darwin":  # Core ML predicts on macOS only
        call = runner.run
    facts = {"size_bytes": artifact_size(path), "threads": thread_facts,
             "quantization": runner.metadata.get("quantization"), "notes": []}  # fmt: skip
    if call is None:
        facts["notes"].append("Core ML predicts only on macOS: size and load (package inspection) only")
    return ArtifactModel(runner, call, tasks, facts)


def _executorch_call(runner: Any) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """One loaded `forward` method, executed per call (XNNPACK initialises once)."""
    method = runner.program.load_method("forward")
    names = [spec.name for spec in runner.outputs]

    def call(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, (out.numpy() for out in method.execute([torch.from_numpy(x)]))))

    return call


def _openvino_call(runner: Any) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """One infer request, reused per call."""
    request = runner.compiled.create_infer_request()
    ports = [(spec.name, runner.compiled.output(spec.name)) for spec in runner.outputs]

    def call(x: np.ndarray) -> dict[str, np.ndarray]:
        result = request.infer({0: x})
        return {name: result[port] for name, port in ports}

    return call


def _executorch_threads(threads: int) -> dict[str, Any]:
    try:
        from executorch.extension.pybindings.portable_lib import (
            _threadpool_get_thread_count,
            _unsafe_reset_threadpool,
        )
    except ImportError:
        return {"executorch": "not settable from Python in this build"}
    _unsafe_reset_threadpool(threads)
    return {"executorch_xnnpack": int(_threadpool_get_thread_count())}


def _openvino_threads(runner: Any, path: str, threads: int) -> tuple[Any, dict[str, Any]]:
    """Recompile with INFERENCE_NUM_THREADS when the default compile picked another count."""
    import dataclasses

    import openvino as ov

    got = int(runner.compiled.get_property("INFERENCE_NUM_THREADS"))
    if got != threads:
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        runner = dataclasses.replace(runner, compiled=ov.Core().compile_model(path, "CPU", config))
        got = int(runner.compiled.get_property("INFERENCE_NUM_THREADS"))
    return runner, {"openvino": got}


def load_model(spec: RowSpec) -> BenchModel:
    """The model a row measures (peers come from `faceptor_edge.bench.peers`)."""
    if spec.kind == "teacher":
        return load_teacher_model(spec.source, spec.teacher_dense_size)
    if spec.kind == "student":
        return load_student_model(spec.source)
    if spec.kind == "artifact":
        return load_artifact_model(spec.source, spec.threads)
    from faceptor_edge.bench.peers import load_peer

    return load_peer(spec.source)


def time_calls(fn: Callable[[], Any], warmup: int, runs: int) -> list[float]:
    """Seconds per call of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary_ms(times: list[float], per: int = 1) -> dict[str, float]:
    """Median, p90 and min in milliseconds, divided by `per` items per call."""
    ms = np.asarray(times) * 1000.0 / per
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "min": float(ms.min())}


def count_flops(model: BenchModel, inputs: Any) -> int:
    """FLOPs of one call (2 per multiply-add), by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.infer(inputs)
    return int(counter.get_total_flops())


def end_to_end(model: BenchModel, image_path: Path, warmup: int, runs: int) -> dict[str, Any]:
    """Per-face times of read+decode PNG → crop → model → decode outputs, stage by stage."""
    stages: dict[str, list[float]] = {"read_image": [], "crop": [], "model": [], "decode": []}
    postprocess = getattr(model, "decode_outputs", None) or (
        lambda raw, crop: decode(raw, model.tasks, dense_crops=[crop])
    )
    for i in range(warmup + runs):
        marks = [time.perf_counter()]
        image = load_image(image_path)
        marks.append(time.perf_counter())
        inputs, crop = model.prepare(image)
        marks.append(time.perf_counter())
        raw = model.infer(inputs)
        marks.append(time.perf_counter())
        postprocess(raw, crop)
        marks.append(time.perf_counter())
        if i >= warmup:
            for name, start, stop in zip(stages, marks, marks[1:]):
                stages[name].append(stop - start)
    total = [sum(parts) for parts in zip(*stages.values())]
    return {**{f"latency_ms_{k}": v for k, v in summary_ms(total).items()},
            "stages_ms_median": {name: summary_ms(times)["median"] for name, times in stages.items()},
            "runs": runs}  # fmt: skip


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MiB.

    Linux: `VmHWM`, which starts afresh at `exec`. `getrusage(RUSAGE_SELF).ru_maxrss` does
    not: it keeps the parent's peak across fork and exec, so every row process would
    report at least the benchmark driver's peak. Elsewhere `ru_maxrss` (KiB on Linux,
    bytes on macOS) is the fallback.
    """
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def rss_mb() -> float:
    """This process's resident set now, in MiB (the peak where /proc is missing)."""
    return _proc_status_mb("VmRSS") or peak_rss_mb()


def measure_row(spec: RowSpec) -> dict[str, Any]:
    """Load and time one model in this process (see the module doc for the order)."""
    threads = pin_threads(spec.threads)
    row: dict[str, Any] = {"rss_before_load_mb": rss_mb()}
    start = time.perf_counter()
    model = load_model(spec)
    row["load_s"] = time.perf_counter() - start
    row.update(model.facts)
    row["threads"] = {**threads, **model.facts.get("threads", {})}
    if not model.runnable:
        row["peak_rss_mb"] = peak_rss_mb()
        return row
    x1 = model.example(1)
    if spec.kind in ("teacher", "student"):
        row["flops"] = count_flops(model, x1)  # also the first warm-up call
    latency = summary_ms(time_calls(lambda: model.infer(x1), spec.warmup, spec.runs))
    row.update({f"latency_ms_{k}": v for k, v in latency.items()})
    if spec.kind == "artifact":
        runs = min(spec.runs, 10)
        row["runner_run_ms_median"] = summary_ms(time_calls(lambda: model.runner.run(x1), 1, runs))["median"]
    if spec.image:
        row["end_to_end"] = end_to_end(model, Path(spec.image), 1, spec.runs)
    row["peak_rss_mb"] = peak_rss_mb()  # batch 1: comparable across rows
    row.update(_throughput(model, spec, row["latency_ms_median"]))
    row["peak_rss_mb_after_throughput"] = peak_rss_mb()
    return row


def _throughput(model: BenchModel, spec: RowSpec, median_ms: float) -> dict[str, Any]:
    if model.static_batch is not None or spec.batch <= 1:
        batch = model.static_batch or 1
        return {"throughput_fps": 1000.0 * batch / median_ms, "throughput_batch": batch,
                "throughput_note": f"static batch {batch}: 1000 / median latency"}  # fmt: skip
    xb = model.example(spec.batch)
    times = time_calls(lambda: model.infer(xb), 1, max(1, spec.runs // 5))
    return {"throughput_fps": spec.batch / float(np.median(times)), "throughput_batch": spec.batch,
            "throughput_note": f"batch {spec.batch}, median of {len(times)} timed calls after 1 warm-up"}  # fmt: skip
