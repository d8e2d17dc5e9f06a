"""Random bytes, images, cards and metadata fed to every loader: each ends in a clean error
(`UserError`) or a valid result, and leaves nothing behind (issue: hardening)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceptor_edge.backends.artifact import Runner
from faceptor_edge.errors import UserError
from faceptor_edge.files import file_sha256
from faceptor_edge.images import load_image, load_photo
from faceptor_edge.student.io import CARD, WEIGHTS, card_recipe, load_student, read_card, save_student
from faceptor_edge.student.model import build_student
from faceptor_edge.teacher.checkpoint import read_checkpoint

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _refused_and_left_alone(load, name: str, data: bytes) -> None:
    """`load` of a file holding `data` raises UserError and leaves only that file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        with pytest.raises(UserError):
            load(path)
        assert _listing(Path(tmp)) == [name]


def _valid_photo(photo) -> bool:
    height, width = photo.pixels.shape[:2]
    return (photo.pixels.dtype == np.uint8 and photo.pixels.shape[2] == 3 and photo.pixels.flags.c_contiguous
            and 0 < photo.scale <= 1 and width <= photo.original_size[0] and height <= photo.original_size[1])  # fmt: skip


def _image_bytes(pixels: np.ndarray, suffix: str) -> bytes:
    ok, encoded = cv2.imencode(suffix, pixels)
    assert ok
    return encoded.tobytes()


@st.composite
def images(draw) -> tuple[bytes, str]:
    """An encoded image of a random size, depth and channel count, whole or truncated."""
    suffix = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tiff", ".webp"]))
    depth = draw(st.sampled_from([np.uint8, np.uint16])) if suffix in (".png", ".tiff") else np.uint8
    channels = draw(st.sampled_from([1, 3, 4] if suffix != ".jpg" else [1, 3]))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, np.iinfo(depth).max, (height, width, channels), dtype=depth)
    data = _image_bytes(pixels, suffix)
    cut = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
    return data[:cut], suffix


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".jpg", ".png", ".txt", ""]), convert=st.booleans())
def test_random_bytes_as_a_photo(data, suffix, convert):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"photo{suffix}"
        path.write_bytes(data)
        try:
            assert _valid_photo(load_photo(path, convert=convert))
        except UserError:
            pass
        assert _listing(Path(tmp)) == [path.name]


@FUZZ
@given(image=images(), convert=st.booleans(), max_pixels=st.sampled_from([100, 400, 40_000_000]))
def test_random_images_load_or_are_refused(image, convert, max_pixels):
    data, suffix = image
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"image{suffix}"
        path.write_bytes(data)
        try:
            photo = load_photo(path, convert=convert, max_pixels=max_pixels)
        except UserError:
            photo = None
        if photo is not None:
            assert _valid_photo(photo) and photo.pixels.shape[0] * photo.pixels.shape[1] <= max_pixels
        try:
            pixels = load_image(path, convert=convert)
            assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        except UserError:
            pass
        assert _listing(Path(tmp)) == [path.name]


@FUZZ
@given(card=JSON)
def test_random_json_as_a_student_card(card):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / CARD).write_text(json.dumps(card))
        try:
            read = read_card(tmp)
            card_recipe(read, tmp)
        except UserError:
            pass
        assert _listing(Path(tmp)) == [CARD]


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory) -> Path:
    return save_student(tmp_path_factory.mktemp("fuzz") / "student", build_student("tiny", pretrained=False), {})


FIELDS = ["format", "size", "tasks", "input", "weights_sha256", "encoder"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON, subfield=st.sampled_from(["size", "mean", "std", "crop_scale",
                                                                           "framing", "pixels"]))  # fmt: skip
def test_a_valid_card_with_one_field_replaced(saved_student, tmp_path, field, value, subfield):
    directory = tmp_path / "student"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(saved_student, directory)
    card = json.loads((directory / CARD).read_text())
    if field == "input":
        card["input"][subfield] = value
    else:
        card[field] = value
    (directory / CARD).write_text(json.dumps(card))
    try:
        student, _ = load_student(directory)
        assert student.config.size == card["size"]
    except UserError:
        pass
    assert _listing(directory) == sorted([CARD, WEIGHTS])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_student_weights(saved_student, tmp_path, data):
    directory = tmp_path / "student"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(saved_student, directory)
    (directory / WEIGHTS).write_bytes(data)
    card = json.loads((directory / CARD).read_text())
    (directory / CARD).write_text(json.dumps({**card, "weights_sha256": file_sha256(directory / WEIGHTS)}))
    with pytest.raises(UserError):
        load_student(directory)


@FUZZ
@given(data=st.binary(max_size=4096), prefix=st.sampled_from([b"", b"\x80\x02", b"PK\x03\x04"]),
       suffix=st.sampled_from([".pth", ".pth.tar", ".safetensors"]))  # fmt: skip
def test_random_bytes_as_a_teacher_checkpoint(data, prefix, suffix):
    _refused_and_left_alone(read_checkpoint, f"faceptor{suffix}", prefix + data)


@FUZZ
@given(record=st.dictionaries(st.sampled_from(["outputs", "input", "batch_size", "tasks"]), JSON, max_size=4))
def test_random_artifact_metadata(record):
    try:
        fields = Runner.fields_from(record, Path("model.xml"))
    except UserError:
        return
    shape = fields["input_shape"]
    assert len(shape) == 4 and shape[1] == 3 and shape[0] == fields["batch_size"] >= 1


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".xml", ".pte"]),
       prefix=st.sampled_from([b"", b"<?xml version='1.0'?><net name='x' version='11'>", b"\x00\x00\x00\x00ET12"]))  # fmt: skip
def test_random_bytes_as_an_artifact(data, suffix, prefix):
    from faceptor_edge.backends import load_backend

    _refused_and_left_alone(load_backend, f"student{suffix}", prefix + data)


RECIPE_KEYS = ["size", "mean", "std", "crop_scale", "framing", "pixels", "face112"]


@FUZZ
@given(record=st.fixed_dictionaries({}, optional={key: JSON for key in RECIPE_KEYS}))
def test_random_input_recipes(record):
    from faceptor_edge.recipe import InputRecipe

    try:
        recipe = InputRecipe.from_json(record, "student.json")
    except UserError:
        return
    assert InputRecipe.from_json(recipe.to_json(), "student.json") == recipe
