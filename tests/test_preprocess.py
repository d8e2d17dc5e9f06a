"""Face crops: alignment, the official box crop, pre-cropped mode, and the way back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceptor_edge.preprocess import (
    ARCFACE_TEMPLATE_112,
    CLIP_MEAN,
    CLIP_STD,
    Crop,
    align_112,
    box_crop,
    box_from_points,
    crop_112,
    map_to_image,
    points_to_image,
    to_tensor_input,
    whole_image_crop,
)
from faceptor_edge.recipe import InputRecipe

RNG = np.random.default_rng(0)
TEMPLATE = np.asarray(ARCFACE_TEMPLATE_112)


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """3×3 matrix of a rotation by angle, uniform scale and shift."""
    c, s = np.cos(np.radians(angle_deg)) * scale, np.sin(np.radians(angle_deg)) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]], [0.0, 0.0, 1.0]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _blob_image(h: int, w: int, centre: tuple[float, float], sigma: float) -> np.ndarray:
    """uint8 RGB image of one Gaussian dot at a sub-pixel (x, y) centre."""
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.rint(255 * blob).astype(np.uint8)[:, :, None], 3, axis=2)


def _centroid(pixels: np.ndarray) -> np.ndarray:
    """Intensity-weighted (x, y) centre of the first channel."""
    weights = pixels[:, :, 0].astype(np.float64)
    yy, xx = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    return np.array([(xx * weights).sum(), (yy * weights).sum()]) / weights.sum()


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Reference least-squares similarity (Umeyama 1991), as InsightFace estimates it."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    u, sing, vt = np.linalg.svd((dst - mu_d).T @ (src - mu_s) / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    scale = np.trace(np.diag(sing) @ d) / ((src - mu_s) ** 2).sum(1).mean()
    rotation = scale * u @ d @ vt
    return np.vstack([np.c_[rotation, mu_d - rotation @ mu_s], [0, 0, 1]])


def test_template_aligned_to_itself_is_identity() -> None:
    image = RNG.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    crop = align_112(image, TEMPLATE)
    np.testing.assert_allclose(crop.matrix, np.eye(3), atol=1e-9)
    np.testing.assert_array_equal(crop.pixels, (image / 255.0).astype(np.float32))
    assert crop.size == 112 and crop.pixels.dtype == np.float32


def test_alignment_inverts_a_known_similarity_and_is_least_squares() -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    pose = _similarity(25.0, 2.3, (120.0, 80.0))
    crop = align_112(image, _apply(pose, TEMPLATE))
    np.testing.assert_allclose(crop.matrix, np.linalg.inv(pose), atol=1e-9)
    noisy = _apply(pose, TEMPLATE) + RNG.normal(0, 6.0, (5, 2))
    np.testing.assert_allclose(align_112(image, noisy).matrix, _umeyama(noisy, TEMPLATE), atol=1e-9)


def test_box_crop_matrix_matches_the_official_formula() -> None:
    image = np.zeros((600, 600, 3), np.uint8)
    np.testing.assert_allclose(
        box_crop(image, (0, 0, 512, 512), scale=1.0).matrix,
        [[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]],
    )
    x1, y1, x2, y2 = 40.0, 30.0, 240.0, 280.0
    crop = box_crop(image, (x1, y1, x2, y2), size=512, scale=0.8)
    u = (100.0 - x1) * 512 / (x2 - x1) - 0.5
    v = (50.0 - y1) * 512 / (y2 - y1) - 0.5
    expected = [0.8 * (u - 255.5) + 255.5, 0.8 * (v - 255.5) + 255.5]
    point = _apply(crop.matrix, np.array([[100.0, 50.0]]))[0]
    np.testing.assert_allclose(point, expected, atol=1e-9)


@pytest.mark.parametrize("box", [(100.3, 50.7, 280.1, 230.5), (-50.0, -20.0, 350.0, 380.0)])
def test_box_crop_equals_official_remap(box: tuple[float, float, float, float]) -> None:
    image = RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = box_crop(image, box, size=512, scale=0.8)
    # Official: cv2.remap sampling M⁻¹[u, v, 1] at every crop pixel of the [0, 1] image.
    vv, uu = np.mgrid[0:512, 0:512].astype(np.float64)
    source = np.stack([uu, vv, np.ones_like(uu)], axis=-1) @ np.linalg.inv(crop.matrix).T
    official = cv2.remap(
        (image / 255.0).astype(np.float32),
        source[..., 0].astype(np.float32), source[..., 1].astype(np.float32),
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip
    # remap samples at fixed-point 1/32-px positions, whose rounding moved between OpenCV
    # releases by up to 1.6e-5 (5.0 -> 5.1); 4e-5 is a hundredth of one grey level.
    np.testing.assert_allclose(crop.pixels, official, rtol=0, atol=4e-5)


def test_box_crop_puts_a_dot_where_the_matrix_says() -> None:
    dot = (181.3, 117.6)
    image = _blob_image(300, 400, dot, sigma=3.0)
    crop = box_crop(image, (100.0, 50.0, 280.0, 230.0), size=256, scale=0.8)
    expected = _apply(crop.matrix, np.array([dot]))[0]
    np.testing.assert_allclose(_centroid(crop.pixels), expected, atol=0.1)
    np.testing.assert_allclose(points_to_image(expected[None], crop.matrix)[0], dot, atol=1e-9)


def test_whole_image_crop_matrix_follows_cv2_resize() -> None:
    dot = (251.4, 87.8)
    image = _blob_image(300, 400, dot, sigma=8.0)
    crop = whole_image_crop(image, 128)
    assert crop.pixels.shape == (128, 128, 3)
    expected = _apply(crop.matrix, np.array([dot]))[0]
    np.testing.assert_allclose(_centroid(crop.pixels), expected, atol=0.1)


def test_points_round_trip_through_alignment() -> None:
    points = _apply(_similarity(-15.0, 1.7, (60.0, 90.0)), TEMPLATE)
    crop = align_112(np.zeros((300, 300, 3), np.uint8), points)
    np.testing.assert_allclose(_apply(crop.matrix, points), TEMPLATE, atol=1e-9)
    np.testing.assert_allclose(points_to_image(TEMPLATE, crop.matrix), points, atol=1e-9)


def test_box_from_points_scales_and_follows_the_face() -> None:
    assert box_from_points(TEMPLATE) == pytest.approx((14.0, 38.0, 98.0, 122.0))
    x1, y1, x2, y2 = box_from_points(_apply(_similarity(0.0, 3.0, (10.0, 20.0)), TEMPLATE))
    assert (x1, y1, x2, y2) == pytest.approx((52.0, 134.0, 304.0, 386.0))
    rotation = _similarity(30.0, 1.0, (0.0, 0.0))
    rx1, ry1, rx2, ry2 = box_from_points(_apply(rotation, TEMPLATE))
    assert rx2 - rx1 == pytest.approx(84.0) and ry2 - ry1 == pytest.approx(84.0)
    centre = _apply(rotation, np.array([[56.0, 80.0]]))[0]
    assert ((rx1 + rx2) / 2, (ry1 + ry2) / 2) == pytest.approx(tuple(centre))


def test_box_only_framing_matches_alignment_for_upright_faces() -> None:
    image = RNG.integers(0, 256, (360, 360, 3), dtype=np.uint8)
    points = _apply(_similarity(0.0, 2.5, (30.0, 10.0)), TEMPLATE)
    by_points = crop_112(image, points5=points)
    by_box = crop_112(image, box=box_from_points(points))
    np.testing.assert_allclose(by_box.matrix, by_points.matrix, atol=1e-9)
    recipe = InputRecipe(512, face112=True)
    np.testing.assert_allclose(recipe.prepare(image, box=box_from_points(points))[1].matrix,
                               recipe.prepare(image, points5=points)[1].matrix)  # fmt: skip


def test_to_tensor_input_normalises_per_group() -> None:
    pixels = np.empty((4, 4, 3), np.float32)
    pixels[:] = CLIP_MEAN
    crop = Crop(pixels=pixels, matrix=np.eye(3), size=4)
    np.testing.assert_allclose(to_tensor_input(crop, "face512"), 0.0, atol=1e-6)
    face112 = to_tensor_input(crop, "face112")
    assert face112.shape == (3, 4, 4) and face112.dtype == np.float32
    np.testing.assert_allclose(face112[:, 0, 0], (np.asarray(CLIP_MEAN) - 0.5) / 0.5, rtol=1e-6)
    pixels[:] = 1.0
    white = (1 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    np.testing.assert_allclose(to_tensor_input(crop, "face512")[:, 2, 3], white, rtol=1e-6)
    with pytest.raises(ValueError, match="input group"):
        to_tensor_input(crop, "face256")  # type: ignore[arg-type]


def test_both_groups_modes_and_sizes() -> None:
    image = RNG.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    whole, crop = InputRecipe(256, face112=True).prepare(image)
    assert whole["face112"].shape == (1, 3, 112, 112) and whole["image"].shape == (1, 3, 256, 256)
    np.testing.assert_allclose(crop.matrix, whole_image_crop(image, 256).matrix)
    np.testing.assert_allclose(crop_112(image).matrix, whole_image_crop(image, 112).matrix)
    _, boxed = InputRecipe(512, crop_scale=1.0, face112=True).prepare(image, box=(10, 10, 60, 60))
    expected = box_crop(image, (10, 10, 60, 60), scale=1.0).matrix
    np.testing.assert_allclose(boxed.matrix, expected)
    for bad in (100, 0, -16):
        with pytest.raises(ValueError, match="multiple of 16"):
            InputRecipe(bad, face112=True).check()
    with pytest.raises(ValueError, match="positive integer"):
        box_crop(image, (10, 10, 60, 60), size=512.0)  # type: ignore[arg-type]


def test_bad_geometry_is_rejected() -> None:
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="empty"):
        box_crop(image, (30, 10, 20, 40))
    with pytest.raises(ValueError, match="5×2"):
        align_112(image, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        align_112(image, np.ones((5, 2)))


def test_map_to_image_equals_official_remap() -> None:
    image_hw = (120, 150)
    crop = box_crop(np.zeros((*image_hw, 3), np.uint8), (20.0, 15.0, 110.0, 105.0), size=64)
    logits = RNG.normal(size=(64, 64, 5)).astype(np.float32)
    yy, xx = np.mgrid[0 : image_hw[0], 0 : image_hw[1]].astype(np.float64)
    target = np.stack([xx, yy, np.ones_like(xx)], axis=-1) @ crop.matrix.T
    # Official cv2.remap of M·[x, y, 1], one channel at a time: with more than 4
    # channels OpenCV's zero border is wrong within 1 px outside the crop.
    official = np.stack(
        [
            cv2.remap(
                np.ascontiguousarray(logits[:, :, c]),
                target[..., 0].astype(np.float32), target[..., 1].astype(np.float32),
                cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
            )
            for c in range(logits.shape[2])
        ],
        axis=-1,
    )  # fmt: skip
    mapped = map_to_image(logits, crop.matrix, image_hw)
    assert mapped.shape == (*image_hw, 5)
    np.testing.assert_allclose(mapped, official, rtol=0, atol=1e-4)  # float rounding only
    assert map_to_image(logits[:, :, 0], crop.matrix, image_hw).shape == image_hw


def test_map_to_image_rescales_a_larger_value_grid() -> None:
    crop = box_crop(np.zeros((100, 100, 3), np.uint8), (10.0, 20.0, 90.0, 100.0), size=32)
    # A 64×64 grid over the 32-px crop holding each pixel's crop u coordinate.
    u_of_pixel = (np.arange(64) + 0.5) * 32 / 64 - 0.5
    values = np.repeat(u_of_pixel[None, :], 64, axis=0)
    mapped = map_to_image(values, crop.matrix, (100, 100), crop_size=32)
    # Bilinear sampling reproduces a linear function exactly inside the grid.
    expected_u = crop.matrix[0, 0] * np.arange(100) + crop.matrix[0, 2]
    np.testing.assert_allclose(mapped[60, 30:70], expected_u[30:70], atol=0.01)  # 1/32-px sampling
