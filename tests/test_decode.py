"""Decoding raw outputs (SPEC §5): hand-computed values and the per-face API."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from faceptor_edge.decode import (
    AgePrediction,
    AttributesPrediction,
    EmbeddingPrediction,
    ExpressionPrediction,
    LandmarksPrediction,
    ParsingPrediction,
    age_years,
    attributes,
    decode,
    expression,
    l2_normalize,
    landmarks_to_crop_pixels,
    parsing_labels,
)
from faceptor_edge.preprocess import box_crop, points_to_image
from faceptor_edge.tasks import (
    AFFECT_AFFECTNET,
    AGE_MORPH2,
    AGE_UTKFACE,
    ALIGN_300W,
    BIATTR_CELEBA,
    CELEBA_ATTRIBUTES,
    PARSING_LAPA,
    RECOG_MS1MV3,
    heatmap_key,
)

NEG = -1e4  # sigmoid is exactly 0 in float64


def test_age_is_l1_normalised_sigmoid_expectation_not_softmax() -> None:
    logits = np.full((2, 101), NEG)
    logits[0, 20] = 0.0  # sigmoid 0.5
    logits[0, 50] = math.log(3.0)  # sigmoid 0.75
    logits[1, :] = 0.0  # uniform
    # Weights 0.5 : 0.75 -> 0.4 : 0.6, so 0.4·20 + 0.6·50 = 38 (softmax would give 42.5).
    np.testing.assert_allclose(age_years(logits), [38.0, 50.0], atol=1e-12)


def test_age_of_all_zero_probabilities_is_finite() -> None:
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        assert age_years(np.full((1, 101), NEG))[0] == 0.0


def test_expression_probabilities_and_first_argmax() -> None:
    logits = np.zeros((2, 7))
    logits[0, 1] = math.log(4.0)  # Happy: 4 / (6 + 4)
    logits[1, [2, 5]] = 1.0  # tie: first wins
    probabilities, labels = expression(logits)
    np.testing.assert_allclose(probabilities[0, 1], 0.4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(labels, [1, 2])


def test_attributes_threshold_is_strictly_above_half_in_float32() -> None:
    logits = np.array([[0.0, 1e-9, 1e-3, -1e-3, 100.0, -100.0]], dtype=np.float32)
    with np.errstate(over="raise"):
        probabilities, present = attributes(logits)
    assert probabilities[0, 0] == 0.5 and probabilities[0, 1] == 0.5
    np.testing.assert_array_equal(present[0], [False, False, True, False, True, False])


def test_parsing_labels_are_uint8_argmax() -> None:
    logits = np.zeros((1, 2, 3, 11), dtype=np.float32)
    logits[0, 1, 2, 10] = 5.0
    logits[0, 0, 1, 4] = 1.0
    labels = parsing_labels(logits)
    assert labels.dtype == np.uint8 and labels.shape == (1, 2, 3)
    np.testing.assert_array_equal(labels[0], [[0, 4, 0], [0, 0, 10]])


def test_landmark_pixel_formula() -> None:
    heatmap_x = 10.0  # soft-argmax on the 128 grid -> normalised (x + 0.5) / 128
    normalised = np.array([[[0.0, 1.0], [0.5, (heatmap_x + 0.5) / 128]]])
    pixels = landmarks_to_crop_pixels(normalised, 512)
    np.testing.assert_allclose(pixels[0], [[-0.5, 511.5], [255.5, 4 * heatmap_x + 1.5]])
    per_face = landmarks_to_crop_pixels(np.full((2, 1, 2), 0.5), [512, 256])
    np.testing.assert_allclose(per_face[:, 0, 0], [255.5, 127.5])


def test_l2_normalize_and_torch_input() -> None:
    embeddings = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    np.testing.assert_allclose(l2_normalize(embeddings), [[0.6, 0.8], [0.0, 0.0]])


def test_batched_functions_reject_wrong_rank() -> None:
    with pytest.raises(ValueError, match="2 dimensions"):
        age_years(np.zeros(101))
    with pytest.raises(ValueError, match="B×N×2"):
        landmarks_to_crop_pixels(np.zeros((1, 5, 3)), 512)


def _raw(batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        RECOG_MS1MV3.name: rng.normal(size=(batch, 512)).astype(np.float32),
        AGE_MORPH2.name: rng.normal(size=(batch, 101)).astype(np.float32),
        BIATTR_CELEBA.name: rng.normal(size=(batch, 40)).astype(np.float32),
        AFFECT_AFFECTNET.name: rng.normal(size=(batch, 7)).astype(np.float32),
        PARSING_LAPA.name: rng.normal(size=(batch, 8, 8, 11)).astype(np.float32),
        ALIGN_300W.name: rng.random((batch, 68, 2)).astype(np.float32),
        heatmap_key(ALIGN_300W.name): np.zeros((batch, 68, 32, 32), np.float32),
    }


TASKS = (RECOG_MS1MV3, AGE_MORPH2, BIATTR_CELEBA, AFFECT_AFFECTNET, PARSING_LAPA, ALIGN_300W)


def test_decode_gives_one_dict_of_predictions_per_face() -> None:
    raw = _raw()
    faces = decode(raw, TASKS)
    assert len(faces) == 2 and set(faces[0]) == {task.name for task in TASKS}
    face = faces[1]
    embedding = face[RECOG_MS1MV3.name]
    assert isinstance(embedding, EmbeddingPrediction)
    assert embedding.vector.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding.vector), 1.0, rtol=1e-6)
    age = face[AGE_MORPH2.name]
    assert isinstance(age, AgePrediction)
    assert age.years == pytest.approx(age_years(raw[AGE_MORPH2.name])[1])
    attrs = face[BIATTR_CELEBA.name]
    assert isinstance(attrs, AttributesPrediction)
    assert list(attrs.present) == list(CELEBA_ATTRIBUTES)
    assert attrs.present["Male"] == (raw[BIATTR_CELEBA.name][1, 20] > 0)
    expr = face[AFFECT_AFFECTNET.name]
    assert isinstance(expr, ExpressionPrediction)
    assert expr.label == AFFECT_AFFECTNET.labels[int(np.argmax(raw[AFFECT_AFFECTNET.name][1]))]
    parsing = face[PARSING_LAPA.name]
    assert isinstance(parsing, ParsingPrediction) and parsing.labels.shape == (8, 8)
    np.testing.assert_array_equal(parsing.labels, np.argmax(raw[PARSING_LAPA.name][1], axis=-1))
    landmarks = face[ALIGN_300W.name]
    assert isinstance(landmarks, LandmarksPrediction) and landmarks.image_points is None
    # Without crops the 32×32 heatmap says the crop was 4·32 = 128 px.
    expected = 128 * raw[ALIGN_300W.name][1].astype(np.float64) - 0.5
    np.testing.assert_allclose(landmarks.crop_points, expected)


def test_decode_maps_landmarks_through_the_dense_crops() -> None:
    raw = _raw()
    image = np.zeros((200, 300, 3), np.uint8)
    crops = [
        box_crop(image, (50, 20, 150, 120), size=128),
        box_crop(image, (0, 0, 64, 64), size=64),
    ]
    faces = decode(raw, [ALIGN_300W], dense_crops=crops)
    for i, (face, crop) in enumerate(zip(faces, crops)):
        landmarks = face[ALIGN_300W.name]
        expected = crop.size * raw[ALIGN_300W.name][i].astype(np.float64) - 0.5
        np.testing.assert_allclose(landmarks.crop_points, expected)
        np.testing.assert_allclose(landmarks.image_points, points_to_image(expected, crop.matrix))


def test_decode_defaults_landmarks_to_512_without_crop_or_heatmap() -> None:
    raw = {ALIGN_300W.name: np.full((1, 68, 2), 0.5, np.float32)}
    np.testing.assert_allclose(decode(raw, [ALIGN_300W])[0][ALIGN_300W.name].crop_points, 255.5)


def test_to_json_is_json_safe() -> None:
    crop = box_crop(np.zeros((9, 9, 3), np.uint8), (0, 0, 9, 9), size=32)
    faces = decode(_raw(1), TASKS, dense_crops=[crop])
    data = json.loads(json.dumps({name: p.to_json() for name, p in faces[0].items()}))
    assert isinstance(data[AGE_MORPH2.name]["years"], float)
    assert len(data[PARSING_LAPA.name]["labels"]) == 8
    assert len(data[ALIGN_300W.name]["image_points"]) == 68
    assert set(data[BIATTR_CELEBA.name]["present"]) == set(CELEBA_ATTRIBUTES)


def test_predictions_are_read_only() -> None:
    face = decode(_raw(1), [RECOG_MS1MV3])[0]
    with pytest.raises(ValueError):
        face[RECOG_MS1MV3.name].vector[0] = 1.0


def test_decode_rejects_bad_raw_outputs() -> None:
    raw = _raw()
    with pytest.raises(KeyError, match="age_utkface"):
        decode(raw, [AGE_UTKFACE])
    with pytest.raises(ValueError, match=r"B×68×2"):
        decode({ALIGN_300W.name: np.zeros((2, 98, 2))}, [ALIGN_300W])
    with pytest.raises(ValueError, match="batch size"):
        decode({**raw, AGE_MORPH2.name: np.zeros((3, 101))}, TASKS)
    with pytest.raises(ValueError, match="dense crops"):
        decode(raw, [ALIGN_300W], dense_crops=[])
