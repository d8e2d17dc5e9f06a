"""Image loading: RGB order, conversions, and one clear error per bad file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceptor_edge.errors import UserError
from faceptor_edge.images import ImageError, check_image, load_image

RNG = np.random.default_rng(0)


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    """Writes pixels given in OpenCV channel order (BGR / BGRA) as a PNG."""
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    encoded.tofile(path)
    return path


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_loads_as_rgb(tmp_path: Path) -> None:
    rgb = _rgb()
    path = _write_png(tmp_path / "façe.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, rgb)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"name,age\nalice,31\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "corrupt"),
    ],
    ids=["empty", "text", "corrupt"],
)
def test_bad_bytes_name_file_and_problem(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "face.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=problem) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    _, encoded = cv2.imencode(".png", _rgb(40, 40))
    path = tmp_path / "cut.png"
    path.write_bytes(encoded.tobytes()[: encoded.size // 2])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot be read") as info:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(info.value)
    with pytest.raises(ImageError, match="cannot be read"):
        load_image(tmp_path)


def test_greyscale_refused_then_repeated(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (7, 9), dtype=np.uint8)
    path = _write_png(tmp_path / "grey.png", grey)
    with pytest.raises(ImageError, match="greyscale.*convert=True"):
        load_image(path)
    loaded = load_image(path, convert=True)
    assert loaded.shape == (7, 9, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[:, :, channel], grey)


def test_alpha_refused_then_dropped(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    path = _write_png(tmp_path / "rgba.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    with pytest.raises(ImageError, match="alpha.*convert=True"):
        load_image(path)
    np.testing.assert_array_equal(load_image(path, convert=True), rgba[:, :, :3])


def test_16_bit_refused_then_scaled(tmp_path: Path) -> None:
    values = np.array([0, 128, 129, 257, 32896, 65535], dtype=np.uint16)
    rgb16 = np.repeat(values[None, :, None], 3, axis=2)
    path = _write_png(tmp_path / "deep.png", rgb16)
    with pytest.raises(ImageError, match="16-bit.*convert=True"):
        load_image(path)
    loaded = load_image(path, convert=True)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 0, 1, 1, 128, 255])


def test_float_tiff_refused_even_with_convert(tmp_path: Path) -> None:
    _, encoded = cv2.imencode(".tiff", RNG.random((4, 4, 3), dtype=np.float32))
    path = tmp_path / "float.tiff"
    encoded.tofile(path)
    with pytest.raises(ImageError, match="float32"):
        load_image(path, convert=True)


def test_check_image_accepts_rgb_as_is() -> None:
    rgb = _rgb()
    assert check_image(rgb) is rgb


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((4, 4, 3), np.float32), "dtype float32"),
        (np.zeros((0, 4, 3), np.uint8), "non-empty"),
        (np.zeros((4, 4, 5), np.uint8), "5 channels"),
        (np.zeros((4,), np.uint8), "shape"),
        (np.zeros((4, 4), np.uint8), "greyscale"),
        (np.zeros((4, 4, 4), np.uint8), "alpha"),
        ([[0, 1]], "numpy array"),
    ],
)
def test_check_image_rejects(array: np.ndarray, problem: str) -> None:
    with pytest.raises(ImageError, match=problem):
        check_image(array)


def test_check_image_converts_and_errors_are_value_errors() -> None:
    grey_alpha = np.zeros((3, 3, 2), np.uint8)
    grey_alpha[..., 0] = 7
    np.testing.assert_array_equal(check_image(grey_alpha, convert=True), np.full((3, 3, 3), 7))
    with pytest.raises(ValueError, match="my face") as info:
        check_image(grey_alpha, source="my face")
    assert isinstance(info.value, UserError)
