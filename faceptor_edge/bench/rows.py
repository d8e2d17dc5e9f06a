"""One benchmark row, measured inside its own process (`faceptor_edge.bench.run` starts it).

Each model sits behind the same small interface, `BenchModel`: a synthetic input of a
given batch, one inference call, and the end-to-end steps for one face (crop, infer,
decode); for the student and its artifacts also `predict` itself on a photo of several
faces (`FacePredictor`: detect, crop, infer, decode per face). `measure_row` pins the
threads, loads the model (timed), times it at batch 1 (model alone, then end to end) and
reads the process's peak resident memory, so the peak belongs to this model alone; the
batch throughput run comes after that reading.

Teacher, student and artifacts are loaded by `faceptor_edge.backends.load_backend`, so a
row times exactly what `predict` runs: artifacts at their runtime's steady-state call
(ExecuTorch: one loaded `forward` method executed again and again; OpenVINO: one infer
request), as an app would run them.
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

from faceptor_edge.backends import Backend
from faceptor_edge.bench.spec import RowSpec
from faceptor_edge.decode import decode
from faceptor_edge.detection import RetinaFaceDetector
from faceptor_edge.images import load_image, load_photo
from faceptor_edge.predictor import STAGES, FacePredictor, FaceResult
from faceptor_edge.preprocess import Crop
from faceptor_edge.tasks import TaskSpec


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
class BackendModel:
    """A `faceptor_edge.backends.Backend` behind `BenchModel`: exactly what `predict` runs."""

    backend: Backend

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.backend.tasks

    @property
    def static_batch(self) -> int | None:
        return self.backend.static_batch

    @property
    def runnable(self) -> bool:
        return self.backend.runnable

    @property
    def facts(self) -> dict[str, Any]:
        return self.backend.facts

    def example(self, batch: int) -> Any:
        return self.backend.example(batch)

    def infer(self, inputs: Any) -> Any:
        return self.backend.run(inputs)

    def prepare(self, image: np.ndarray) -> tuple[Any, Crop]:
        """The benchmark face is pre-cropped: the recipe's whole-image crop."""
        return self.backend.prepare(image)


def load_model(spec: RowSpec) -> BenchModel:
    """The model a row measures: a peer from `faceptor_edge.bench.peers`, else any backend."""
    if spec.kind == "peer":
        from faceptor_edge.bench.peers import load_peer

        return load_peer(spec.source)
    from faceptor_edge.backends import load_backend

    return BackendModel(load_backend(spec.source, threads=spec.threads, dense_size=spec.teacher_dense_size))


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


def end_to_end_photo(backend: Backend, photo: Path, warmup: int, runs: int) -> tuple[dict[str, Any], list[FaceResult]]:
    """Per-face times of `predict` on a photo of several faces: the photo read as `predict`
    reads it (`load_photo`), then `FacePredictor.predict` itself (RetinaFace, in PyTorch or a
    bundle's own exported one; each face's crop, the model, the non-finite check, decoding and
    the parsing maps warped onto the photo), stage by stage from `FacePredictor.seconds`, each divided by the photo's faces.

    Returns:
        The row's timings, and the last run's faces (what `predict` reports for this photo).
    """
    predictor = FacePredictor(backend)  # its detector: a bundle's own, else RetinaFace in PyTorch
    stages: dict[str, list[float]] = {name: [] for name in ("read_image", *STAGES)}
    for i in range(warmup + runs):
        start = time.perf_counter()
        pixels = load_photo(photo).pixels
        read = time.perf_counter() - start
        results = predictor.predict(pixels)
        if i >= warmup:
            for name, seconds in {"read_image": read, **predictor.seconds}.items():
                stages[name].append(seconds)
    per = len(results)
    total = [sum(parts) for parts in zip(*stages.values())]
    row = {**{f"latency_ms_{k}": v for k, v in summary_ms(total, per).items()},
           "stages_ms_median": {name: summary_ms(times, per)["median"] for name, times in stages.items()},
           "faces": per, "size": list(pixels.shape[1::-1]), "runs": runs}  # fmt: skip
    return row, results


def mediapipe_photo(photo: Path, warmup: int, runs: int) -> dict[str, Any]:
    """MediaPipe FaceLandmarker on the photo of the bundle rows, per face: `num_faces` set to the
    faces RetinaFace finds there, the photo read as `predict` reads it, then one `detect` call
    (BlazeFace, the mesh and blendshapes of every face: timed as one "model" stage)."""
    from faceptor_edge.bench.peers import mediapipe_landmarker

    faces = len(RetinaFaceDetector.from_package().detect(load_photo(photo).pixels))
    landmarker = mediapipe_landmarker(num_faces=max(faces, 1))
    pixels = load_photo(photo).pixels
    read = time_calls(lambda: load_photo(photo), warmup, runs)
    model = time_calls(lambda: landmarker.run(pixels), warmup, runs)
    found = len(landmarker.run(pixels).face_landmarks)
    per = max(faces, 1)
    total = [a + b for a, b in zip(read, model)]
    stages = {"read_image": summary_ms(read, per)["median"], "detect": None, "crop": None,
              "model": summary_ms(model, per)["median"], "decode": None}  # fmt: skip
    return {**{f"latency_ms_{k}": v for k, v in summary_ms(total, per).items()}, "stages_ms_median": stages,
            "faces": faces, "faces_found": found, "size": list(pixels.shape[1::-1]), "runs": runs}  # fmt: skip


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
    if spec.image:
        row["end_to_end"] = end_to_end(model, Path(spec.image), 1, spec.runs)
    if spec.photo and isinstance(model, BackendModel):
        row["end_to_end"]["photo"] = end_to_end_photo(model.backend, Path(spec.photo), 1, max(3, spec.runs // 5))[0]
    elif spec.photo and spec.source == "mediapipe":
        row["end_to_end"]["photo"] = mediapipe_photo(Path(spec.photo), 1, max(3, spec.runs // 5))
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
