"""Fidelity metrics and parity checks on hand-made outputs."""

import numpy as np

from faceptor_edge.metrics import fidelity_score, fidelity_table, head_metrics, mean_output
from faceptor_edge.targets.parity import Trained, against_student, against_teacher, all_passed
from faceptor_edge.tasks import AFFECT_AFFECTNET, AGE_MORPH2, ALIGN_300W, BIATTR_CELEBA, PARSING_LAPA, RECOG_MS1MV3

TASKS = (RECOG_MS1MV3, AGE_MORPH2, BIATTR_CELEBA, AFFECT_AFFECTNET, PARSING_LAPA, ALIGN_300W)


def _raw(seed, n=6):
    rng = np.random.default_rng(seed)
    return {
        "recog_ms1mv3": rng.normal(size=(n, 512)), "age_morph2": rng.normal(size=(n, 101)),
        "biattr_celeba": rng.normal(size=(n, 40)), "affect_affectnet": rng.normal(size=(n, 7)),
        "parsing_lapa": rng.normal(size=(n, 16, 16, 11)), "align_300w": rng.uniform(size=(n, 68, 2)),
    }  # fmt: skip


def test_identical_outputs_score_perfectly():
    raw = _raw(0)
    metrics = {task.name: head_metrics(task, raw[task.name], raw[task.name]) for task in TASKS}
    assert (
        metrics["recog_ms1mv3"]["mean_cosine"] > 0.9999 and metrics["recog_ms1mv3"]["similarity_correlation"] > 0.9999
    )
    assert metrics["age_morph2"]["mae_years"] == 0 and metrics["age_morph2"]["r2"] == 1
    assert metrics["biattr_celeba"]["mean_agreement"] == 1 and metrics["affect_affectnet"]["top1_agreement"] == 1
    assert metrics["parsing_lapa"]["pixel_agreement"] == 1 and metrics["parsing_lapa"]["mean_iou"] == 1
    assert metrics["align_300w"]["nme_crop_pct"] == 0
    assert fidelity_score(TASKS, raw, raw) == 1.0


def test_landmark_nme_is_in_percent_of_the_crop():
    ref = np.full((1, 68, 2), 0.5)
    assert abs(head_metrics(ALIGN_300W, ref + [0.03, 0.04], ref)["nme_crop_pct"] - 5.0) < 1e-9


def test_parsing_on_a_coarser_grid_is_compared_at_the_reference_grid():
    ref = np.zeros((1, 8, 8, 11))
    ref[..., 3] = 1
    coarse = np.zeros((1, 4, 4, 11))
    coarse[..., 3] = 1
    assert head_metrics(PARSING_LAPA, coarse, ref)["pixel_agreement"] == 1


def test_fidelity_table_scores_the_mean_baseline():
    ref, noisy = _raw(0), {k: v + 0.01 * np.random.default_rng(1).normal(size=v.shape) for k, v in _raw(0).items()}
    heads = fidelity_table(TASKS, noisy, ref, mean_output(_raw(2)))
    for row in heads.values():
        better = row["student"] > row["baseline"] if row["higher_is_better"] else row["student"] < row["baseline"]
        assert better, row


def test_parity_checks_pass_and_fail_where_they_should():
    student = _raw(0)
    assert all(c.passed for c in against_student(TASKS, student, student, "fp32").values())
    assert all(c.passed for c in against_student(TASKS, student, student, "int8").values())
    broken = dict(student, biattr_celeba=-student["biattr_celeba"])
    checks = against_student(TASKS, broken, student, "int8")
    assert not checks["biattr_celeba"].passed and checks["affect_affectnet"].passed
    assert not against_student(TASKS, broken, student, "fp32")["biattr_celeba"].passed
    rows = against_teacher(TASKS, broken, student, _raw(3))
    assert set(rows) == {t.name for t in TASKS} and rows["recog_ms1mv3"]["drop"] == 0


def test_parity_judges_only_what_the_teacher_trained():
    student = _raw(0)
    broken = dict(student, align_300w=student["align_300w"] + 0.2, biattr_celeba=student["biattr_celeba"].copy())
    broken["biattr_celeba"][:, 1:] *= -1  # every attribute but the first flipped
    trained = Trained.from_teacher({"untrained_heads": ["align_300w"],
                                    "covered_labels": {"biattr_celeba": [BIATTR_CELEBA.labels[0]]}})  # fmt: skip
    checks = against_student(TASKS, broken, student, "int8", trained)
    assert not checks["align_300w"].passed and not checks["align_300w"].judged  # shown, not judged
    assert checks["biattr_celeba"].passed and checks["biattr_celeba"].value == 1.0  # judged on its covered label
    assert all_passed(checks) and not all_passed(against_student(TASKS, broken, student, "int8"))
    assert checks["align_300w"].to_json()["judged"] is False
    broken["biattr_celeba"][:, 0] *= -1
    assert not all_passed(against_student(TASKS, broken, student, "int8", trained))
    rows = against_teacher((BIATTR_CELEBA,), broken, student, student, trained)
    assert rows["biattr_celeba"]["artifact"] == 0.0 and rows["biattr_celeba"]["student"] == 1.0
