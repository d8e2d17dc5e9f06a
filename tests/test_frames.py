"""Faceptor's framing per dense head (SPEC §6.2) and labels carried into the student's frame.

The references here are written from SPEC §6.2 and Karras et al.'s `create_celebahq` directly
(maps for `cv2.remap`, matrices from their own formulas), not from `faceptor_edge.frames`.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from faceptor_edge.distill.labels import carry_maps
from faceptor_edge.frames import FRAMES, HEAD_FRAMES, Frame, carry_points, head_frame
from faceptor_edge.preprocess import ARCFACE_TEMPLATE_112, box_crop, box_from_points
from faceptor_edge.recipe import InputRecipe

RNG = np.random.default_rng(7)
IMAGE = cv2.GaussianBlur(RNG.integers(0, 256, (420, 500, 3), dtype=np.uint8), (0, 0), 2)
# A face turned 12° in the photo, 2.6× the template's size.
_ANGLE = np.deg2rad(12.0)
_POSE = 2.6 * np.array([[np.cos(_ANGLE), -np.sin(_ANGLE)], [np.sin(_ANGLE), np.cos(_ANGLE)]])
POINTS = np.asarray(ARCFACE_TEMPLATE_112) @ _POSE.T + [150.0, 60.0]


def _remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """The official pipeline: Normalize255, then cv2.remap (bilinear, black border)."""
    return cv2.remap((image / 255.0).astype(np.float32), map_x.astype(np.float32), map_y.astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))


def _sampled_at(inverse: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2], inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]


def _lapa_reference(size: int) -> np.ndarray:
    """SPEC §6.2 LaPa: Umeyama similarity to the template, tanh warp w = 0.8, cv2.remap."""
    from skimage.transform import SimilarityTransform

    std = np.array([(196, 226), (316, 226), (256, 286), (220, 360.4), (292, 360.4)]) / 256 - 1
    template = (std + 1) * (size - 1) / 2
    inverse = np.linalg.inv(SimilarityTransform.from_estimate(POINTS, template).params)
    u, v = _grid(size)
    warped = []
    for p in (u, v):
        n = p / size * 2 - 1
        bent = np.arctanh(np.clip((np.abs(n) - 0.2) / 0.8, -0.999, 0.999)) * 0.8 + 0.2
        warped.append((np.where(np.abs(n) > 0.2, np.sign(n) * bent, n) + 1) / 2 * size)
    return _remap(IMAGE, *_sampled_at(inverse, *warped))


def _celeba_hq_reference(size: int) -> np.ndarray:
    """Karras et al.'s CelebA-HQ quad (PIL coordinates: +0.5) mapped onto a 1024 image, then
    CelebAMask-HQ's resize to `size`; one remap of the composed map."""
    rot90 = lambda v: np.array([-v[1], v[0]])
    lm = POINTS
    eye_avg, mouth_avg = (lm[0] + lm[1]) * 0.5 + 0.5, (lm[3] + lm[4]) * 0.5 + 0.5
    eye_to_eye, eye_to_mouth = lm[1] - lm[0], mouth_avg - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth)
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # PIL QUAD: output (0,0), (0,1024), ...
    u, v = _grid(size)
    s, t = (u + 0.5) * 1024 / size / 1024, (v + 0.5) * 1024 / size / 1024  # output pixel centre, in [0, 1]
    # PIL's QUAD: bilinear in (s, t) over the four corners; a square quad makes it affine.
    point = quad[0] + s[..., None] * (quad[3] - quad[0]) + t[..., None] * (quad[1] - quad[0])
    return _remap(IMAGE, point[..., 0] - 0.5, point[..., 1] - 0.5)


@pytest.mark.parametrize("head", sorted(HEAD_FRAMES))
def test_each_dense_head_sees_the_crop_spec_6_2_gives(head):
    size = 256
    frame = head_frame(head).frame(POINTS, size)
    if head in ("align_300w", "align_cofw", "align_wflw", "align_aflw"):
        scale = 1.0 if head == "align_aflw" else 0.8
        expected = box_crop(IMAGE, box_from_points(POINTS), size=size, scale=scale).pixels
    elif head == "parsing_lapa":
        expected = _lapa_reference(size)
    else:
        expected = _celeba_hq_reference(size)
    got = frame.crop(IMAGE)
    # cv2.remap quantises sample positions to 1/32 px: up to 1/32 of a neighbour difference
    assert np.abs(got - expected).max() < 0.02 and np.abs(got - expected).mean() < 1e-3


def test_the_celeba_hq_frame_puts_the_eyes_level_and_centred():
    frame = FRAMES["celeba-hq"].frame(POINTS, 512)
    eyes = frame.image_to_crop(POINTS[:2])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.1  # the 12° turn undone (up to the eyes→mouth correction)
    assert abs(eyes.mean(0)[0] - 255.5) < 4  # horizontally centred (only the mouth's offset moves it)


def _student_frame(size: int = 256) -> Frame:
    crop = InputRecipe(size=size, crop_scale=0.8).crop(IMAGE, points5=POINTS)
    return Frame(crop.matrix, size)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_points_carried_into_the_student_frame_land_where_the_teacher_put_them(name):
    source, target = FRAMES[name].frame(POINTS, 512), _student_frame()
    landmarks = POINTS[[0, 2, 4]] + RNG.normal(0, 6, (3, 2))  # image pixels
    teacher = (source.image_to_crop(landmarks) + 0.5) / 512  # as the teacher reports them
    carried = carry_points(teacher, source, target)
    truth = (target.image_to_crop(landmarks) + 0.5) / target.size
    assert np.abs(carried - truth).max() < 0.005  # 0.5 % of the crop (exact up to float error)


def _labels_at(points: np.ndarray) -> np.ndarray:
    """A class map defined on the photo: rings about the face centre, split left/right."""
    centre = POINTS.mean(0)
    radius = np.hypot(*(points - centre).T)
    return (np.minimum(radius // 25, 4) * 2 + (points[:, 0] > centre[0])).astype(int)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_maps_carried_into_the_student_frame_keep_their_labels(name):
    size, grid, classes = 512, 64, 10
    source, target = FRAMES[name].frame(POINTS, size), _student_frame()
    cells = np.stack(_grid(size // 4), -1).reshape(-1, 2) * 4 + 1.5  # the teacher's 128-grid cell centres
    teacher = np.eye(classes)[_labels_at(source.crop_to_image(cells))].reshape(size // 4, size // 4, classes)
    logits = torch.from_numpy(8 * teacher.transpose(2, 0, 1)[None]).float()  # 1×C×128×128
    carried, coverage = carry_maps(logits, [source], [target], grid)
    centres = np.stack(_grid(grid), -1).reshape(-1, 2) * (target.size / grid) + (target.size / grid - 1) / 2
    truth = _labels_at(target.crop_to_image(centres)).reshape(grid, grid)
    half = target.size / grid / 2 - 0.01  # a cell whose corners hold its centre's label is unambiguous
    corners = [_labels_at(target.crop_to_image(centres + [dx, dy])).reshape(grid, grid)
               for dx in (-half, half) for dy in (-half, half)]  # fmt: skip
    seen = (coverage[0].numpy() > 0) & np.all([c == truth for c in corners], axis=0)
    assert seen.mean() > 0.5
    assert (carried[0].argmax(0).numpy()[seen] == truth[seen]).mean() >= 0.99


def test_coverage_is_where_the_source_frame_saw_the_face():
    box = FRAMES["box1.0"].frame(POINTS, 512)  # tighter than the student's ×0.8 frame
    _, coverage = carry_maps(torch.zeros(1, 1, 128, 128), [box], [_student_frame()], 64)
    assert 0.5 < coverage.mean() < 0.75  # (0.8 / 1.0)² of the student frame, plus the edge cells
    assert coverage[0, 32, 32] == 1 and coverage[0, 0, 0] == 0
