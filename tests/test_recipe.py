"""The input recipe: stored and read back exactly, malformed records refused, one normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from faceptor_edge.errors import UserError
from faceptor_edge.preprocess import align_112, box_crop, box_from_points, normalise_pixels, to_tensor_input
from faceptor_edge.recipe import InputRecipe

POINTS5 = np.array([[90, 110], [160, 108], [125, 150], [98, 190], [152, 188]], np.float32)


def _photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)


def test_a_recipe_round_trips_through_its_json_record():
    recipe = InputRecipe(192, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), crop_scale=1.0, framing="detected")
    assert InputRecipe.from_json(recipe.to_json(), "card") == recipe


@pytest.mark.parametrize(
    "record, problem",
    [
        ([], "expected a JSON object"),
        ({"size": 256}, "lacks mean, std, crop_scale, framing"),
        ({"size": float("inf"), "mean": [0, 0, 0], "std": [1, 1, 1], "crop_scale": 0.8, "framing": "given"}, "whole"),
        ({"size": 256, "mean": "012", "std": [1, 1, 1], "crop_scale": 0.8, "framing": "given"}, "list of finite"),
        ({"size": 2**20, "mean": [0, 0, 0], "std": [1, 1, 1], "crop_scale": 0.8, "framing": "given"}, "1024"),
        ({"size": 250, "mean": [0, 0, 0], "std": [1, 1, 1], "crop_scale": 0.8, "framing": "given"}, "multiple of 16"),
        ({"size": 256, "mean": [0, 0, 0], "std": [1, 1, 0], "crop_scale": 0.8, "framing": "given"}, "std > 0"),
        ({"size": 256, "mean": [0, 0, 0], "std": [1, 1, 1], "crop_scale": 0.8, "framing": "guessed"}, "framing"),
    ],
)
def test_a_malformed_recipe_is_one_clear_error_naming_where(record, problem):
    with pytest.raises(UserError, match=problem) as error:
        InputRecipe.from_json(record, "student.json")
    assert "student.json" in str(error.value)


def test_normalise_equals_the_per_pixel_formula_exactly():
    recipe = InputRecipe(64)
    crops = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    expected = normalise_pixels(crops.astype(np.float32) / 255.0, recipe.mean, recipe.std).transpose(0, 3, 1, 2)
    assert np.array_equal(recipe.normalise(crops), expected)
    with pytest.raises(UserError, match="uint8"):
        recipe.normalise(crops.astype(np.float32))


def test_prepare_frames_a_face_on_the_box_fitted_to_its_points():
    image = _photo()
    recipe = InputRecipe(64, crop_scale=0.8)
    inputs, crop = recipe.prepare(image, points5=POINTS5)
    expected = box_crop(image, box_from_points(POINTS5), size=64, scale=0.8)
    assert np.array_equal(crop.matrix, expected.matrix)
    assert inputs["image"].shape == (1, 3, 64, 64)
    assert np.array_equal(inputs["image"], recipe.normalise(expected.uint8()[None]))


def test_prepare_gives_each_kind_of_model_its_inputs():
    image = _photo()
    teacher, _ = InputRecipe(64, face112=True).prepare(image, points5=POINTS5)
    assert teacher["face112"].shape == (1, 3, 112, 112) and teacher["image"].shape == (1, 3, 64, 64)
    specialists, _ = InputRecipe(64, pixels="uint8").prepare(image, points5=POINTS5)
    assert specialists["image"].dtype == np.uint8 and specialists["image"].shape == (1, 64, 64, 3)
    x1, y1, x2, y2 = specialists["box"][0]
    assert 0 < x1 < x2 < 64 and 0 < y1 < y2 < 64  # the face box, in crop pixels
    whole, _ = InputRecipe(64, pixels="uint8").prepare(image)  # a pre-cropped face: the central box
    assert tuple(whole["box"][0]) == pytest.approx(InputRecipe(64).central_box())


def test_the_teachers_inputs_follow_its_recipe():
    """The 112 group aligned on the points with its fixed 0.5/0.5; the dense crop's float
    pixels normalised with the recipe's own mean and std (CLIP's for Faceptor)."""
    image, mean, std = _photo(), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    clip, crop = InputRecipe(64, face112=True).prepare(image, points5=POINTS5)
    assert np.array_equal(crop.matrix, box_crop(image, box_from_points(POINTS5), size=64).matrix)
    assert np.array_equal(clip["image"][0], to_tensor_input(crop, "face512"))
    assert np.array_equal(clip["face112"][0], to_tensor_input(align_112(image, POINTS5), "face112"))
    other, _ = InputRecipe(64, mean=mean, std=std, face112=True).prepare(image, points5=POINTS5)
    expected = normalise_pixels(crop.pixels.astype(np.float32), mean, std).transpose(2, 0, 1)
    assert np.array_equal(other["image"][0], expected) and np.array_equal(other["face112"], clip["face112"])
