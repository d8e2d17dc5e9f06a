"""The online path on a CUDA GPU (`pytest -m cuda`; skipped without one): the labels made on the
GPU equal those made on the CPU from the same worker inputs, and a training step never waits on
the GPU (`torch.cuda.set_sync_debug_mode("error")` turns any synchronising call into an error)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceptor_edge.data import FaceSample
from faceptor_edge.distill import trainer
from faceptor_edge.distill.augment import AugmentParams
from faceptor_edge.distill.crops import Plan, collate_inputs, face_inputs, teacher_labels
from faceptor_edge.distill.labels import CropRecipe
from faceptor_edge.distill.losses import LossWeights
from faceptor_edge.student.model import build_student
from faceptor_edge.teacher.demo import build_demo_teacher

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEVICE = torch.device("cuda", 0)
RECIPE = CropRecipe(teacher_dense_size=128, student_size=256, map_grid=64)
POINTS = np.array([[230, 250], [290, 248], [262, 290], [238, 330], [286, 328]], np.float32)  # a face in 512×512


class _Faces:
    """Faces on a textured photo at slightly different places (no detector needed)."""

    def __init__(self, count: int) -> None:
        rng = np.random.default_rng(0)
        self.image = (rng.random((512, 512, 3)) * 255).astype(np.uint8)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def batch(self, indices):
        return [FaceSample(index=i, image=self.image, box=None, points5=POINTS + 3 * i, name=f"face{i}")
                for i in indices]  # fmt: skip


def test_gpu_labels_equal_cpu_labels_of_the_same_inputs():
    teacher = build_demo_teacher(dense_size=RECIPE.teacher_dense_size).eval()
    plan = Plan.of(teacher.config.tasks, RECIPE, features=True)
    faces = _Faces(4)
    move = AugmentParams(flip=True, angle=8.0, scale=0.95, shift=(0.02, 0.01))
    batch = collate_inputs([face_inputs(s, RECIPE, plan, move) for s in faces.batch(range(4))])
    cpu = teacher_labels(teacher, batch, RECIPE, plan)
    gpu = teacher_labels(teacher.to(DEVICE), batch, RECIPE, plan, batch_size=3)  # chunks of 3: 3 + 1
    assert gpu.keys() == cpu.keys()
    for key, value in cpu.items():
        assert gpu[key].device == DEVICE, key
        np.testing.assert_allclose(gpu[key].float().cpu().numpy(), value.float().numpy(), atol=2e-2, rtol=2e-2,
                                   err_msg=key)  # fmt: skip


def test_training_steps_never_wait_on_the_gpu(tmp_path, monkeypatch):
    from faceptor_edge.distill.dataset import OnlineFaces

    teacher = build_demo_teacher(dense_size=RECIPE.teacher_dense_size).eval().to(DEVICE)
    plan = Plan.of(teacher.config.tasks, RECIPE, features=True)
    data = OnlineFaces(_Faces(8), RECIPE, plan, augment=True, seed=0)

    def strict(function, after: int = 0):
        """`function`, with every synchronising CUDA call an error from its call `after` on (the
        labeller's first call labels the statistics' faces, from unpinned memory, before training)."""
        calls = []

        def run(*args, **kwargs):
            calls.append(1)
            if len(calls) <= after:
                return function(*args, **kwargs)
            torch.cuda.set_sync_debug_mode("error")
            try:
                return function(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")

        return run

    monkeypatch.setattr(trainer, "_step", strict(trainer._step))
    labeller = strict(lambda batch: teacher_labels(teacher, batch, RECIPE, plan), after=1)
    model = trainer.DistillModel(build_student("tiny", teacher.config.tasks), {
        "encoder/face512/layer11": (768, 16, 16), "encoder/face112/layer11": (768, 7, 7)})  # fmt: skip
    config = trainer.TrainConfig(steps=6, batch_size=4, warmup=1, checkpoint_every=6, log_every=3, workers=2,
                                 precision="bf16")  # fmt: skip
    records = trainer.train(model, data, config, LossWeights(), tmp_path, identity={}, resume=False, device=DEVICE,
                            labeller=labeller)  # fmt: skip
    assert [r["step"] for r in records] == list(range(1, 7)) and all(np.isfinite(r["loss"]) for r in records)


def test_cache_labelling_on_the_gpu_uses_loader_workers_and_matches_the_cpu_labels(tmp_path):
    from faceptor_edge.distill.cache import ShardCache
    from faceptor_edge.distill.labelling import Teacher, build_cache

    faces = _Faces(6)
    faces.fingerprint = lambda: "test-faces"
    caches = {}
    for device in ("cpu", "cuda"):
        teacher = Teacher("demo", RECIPE.teacher_dense_size, torch.device(device))
        caches[device], labelled = build_cache(device, teacher, faces, RECIPE, root=tmp_path / device, shard_size=4,
                                               features=False, workers=2, rank=0, world=1)  # fmt: skip
        assert labelled == 6 and isinstance(caches[device], ShardCache)
    cpu, gpu = caches["cpu"].load_all(), caches["cuda"].load_all()
    assert cpu.keys() == gpu.keys()
    for task in build_demo_teacher(dense_size=RECIPE.teacher_dense_size).config.tasks:
        if task.head.is_points:  # normalised to the student's crop: 0.005 is 0.5 % of it
            assert np.abs(gpu[task.name] - cpu[task.name]).max() < 0.005, task.name
