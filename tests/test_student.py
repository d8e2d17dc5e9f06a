"""The student: teacher-compatible raw outputs, trainable everywhere, exportable with static shapes."""

import pytest
import torch

from faceptor_edge.distill.trainer import start_at_teacher_mean
from faceptor_edge.errors import UserError
from faceptor_edge.student.io import load_student, save_student
from faceptor_edge.student.model import build_student, student_sizes
from faceptor_edge.tasks import BASE_TASKS, FULL_TASKS, heatmap_key
from faceptor_edge.teacher.model import build_faceptor_full as build_full_teacher


def test_raw_outputs_share_the_teacher_keys_and_layouts():
    student = build_student("tiny").eval()
    with torch.no_grad():
        raw = student(torch.randn(2, 3, 256, 256))
    for task in FULL_TASKS:
        out = raw[task.name]
        if task.task_type == "parsing":
            assert out.shape == (2, 64, 64, task.num_queries)  # channels last, stride 4
        elif task.task_type == "landmarks":
            assert out.shape == (2, task.num_queries, 2)
            assert raw[heatmap_key(task.name)].shape == (2, task.num_queries, 64, 64)
            assert ((out >= 0) & (out <= 1)).all()
        else:
            assert out.shape == (2, *task.raw_shape)
        assert torch.isfinite(out).all()


def test_student_keeps_only_its_teachers_heads():
    student = build_student("tiny", BASE_TASKS)
    assert student.task_names == tuple(t.name for t in BASE_TASKS)


def test_every_parameter_receives_a_gradient():
    student = build_student("tiny").train()
    raw = student(torch.randn(2, 3, 256, 256))
    sum(v.float().pow(2).mean() for v in raw.values()).backward()
    missing = [name for name, p in student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("size", student_sizes)
def test_sizes_are_small(size):
    params = sum(p.numel() for p in build_student(size, pretrained=False).parameters())
    limits = {"lite0": 5e6, "tiny": 0.5e6, "small": 3e6, "medium": 5e6}
    assert params <= limits[size]


def test_default_student_is_far_smaller_than_the_teacher():
    with torch.device("meta"):
        teacher_params = sum(p.numel() for p in build_full_teacher().parameters())
    student_params = sum(p.numel() for p in build_student(pretrained=False).parameters())
    assert student_params * 20 < teacher_params


def test_exports_with_static_shapes():
    student = build_student("tiny").eval()
    program = torch.export.export(student, (torch.randn(1, 3, 256, 256),), strict=False)
    out = program.module()(torch.ones(1, 3, 256, 256))
    with torch.no_grad():
        ref = student(torch.ones(1, 3, 256, 256))
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)


def test_save_and_load_round_trip(tmp_path):
    student = build_student("tiny").eval()
    student.value_heads["age_morph2"].scale.fill_(0.25)  # buffers travel with the weights
    save_student(tmp_path / "student", student, {"teacher": {"teacher": "test"}})
    loaded, card = load_student(tmp_path / "student")
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["age_morph2"], student(x)["age_morph2"])
    assert card["size"] == "tiny" and card["input"]["size"] == 256


def test_tampered_weights_are_refused(tmp_path):
    save_student(tmp_path / "student", build_student("tiny"), {})
    weights = tmp_path / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(UserError, match="checksum"):
        load_student(tmp_path / "student")


def test_not_a_student_directory(tmp_path):
    with pytest.raises(UserError, match="not a student directory"):
        load_student(tmp_path)


def test_distillation_starts_at_the_teacher_mean_with_readouts_in_units_of_its_spread():
    torch.manual_seed(0)
    images = torch.randn(6, 3, 256, 256)
    with torch.no_grad():
        raw = build_student("tiny").eval()(images)  # stands in for teacher outputs: same keys and layouts
    teacher = dict(raw)  # the cache holds every output in the models' own layout
    teacher["affect_ferplus"] = teacher["affect_ferplus"] * 1000  # a fresh student's logits barely move
    student = build_student("tiny")
    start_at_teacher_mean(student, teacher)
    with torch.no_grad():
        out = student.eval()(images)
    for name in ("affect_ferplus", "biattr_celeba", "age_utkface", "recog_ms1mv3"):
        torch.testing.assert_close(out[name], teacher[name].mean(0, keepdim=True).expand_as(out[name]))
    logits = teacher["affect_ferplus"].double()
    spread = (logits - logits.mean(1, keepdim=True)).std(0).mean()  # a shift shared by all classes does not count
    assert float(student.value_heads["affect_ferplus"].scale) == pytest.approx(float(spread), rel=1e-4)
    attributes = teacher["biattr_celeba"].double()
    assert float(student.value_heads["biattr_celeba"].scale) == pytest.approx(float(attributes.std(0).mean()), rel=1e-4)
    teacher["biattr_celeba/mask"] = torch.zeros(6, 40)
    teacher["biattr_celeba/mask"][:, 20] = 1  # only Male labelled (the specialists)
    start_at_teacher_mean(student, teacher)
    assert float(student.value_heads["biattr_celeba"].scale) == pytest.approx(float(attributes[:, 20].std()), rel=1e-4)
