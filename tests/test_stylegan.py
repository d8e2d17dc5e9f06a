"""MobileStyleGAN portraits: reproducible per index, photo-like enough for the detector, clear errors."""

import copy

import numpy as np
import pytest

from faceptor_edge import stylegan
from faceptor_edge.errors import UserError

needs_stylegan = pytest.mark.skipif(bool(stylegan.missing()), reason=stylegan.missing() or "installed")


@pytest.fixture(scope="module")
def faces():
    source = stylegan.StyleGANSource(3, seed=7, size=256, threads=2)
    return source, source.batch([2, 0])


@needs_stylegan
def test_a_face_depends_only_on_seed_and_index_in_any_order_or_process(faces):
    source, (second, first) = faces
    assert second.image.shape == (256, 256, 3) and second.image.dtype == np.uint8
    assert (second.box, second.points5, second.name) == (None, None, "stylegan-s7-2")
    assert np.array_equal(source[0].image, first.image)  # alone, after a batch
    assert np.array_equal(copy.deepcopy(source)[2].image, second.image)  # a worker's copy compiles its own graphs
    assert not np.array_equal(first.image, second.image)
    other = stylegan.StyleGANSource(3, seed=8, size=256, threads=2)
    assert other.fingerprint() != source.fingerprint()
    assert stylegan.StyleGANSource(3, seed=7, size=256).fingerprint() == source.fingerprint()


@needs_stylegan
def test_portraits_are_found_by_the_face_detector(faces):
    from faceptor_edge.detection import RetinaFaceDetector, detector_available

    if detector_available():
        pytest.skip(detector_available())
    detector = RetinaFaceDetector.from_package()
    _, samples = faces
    for sample in samples:  # FFHQ-aligned: one face, centred, about half the width
        (face, *_) = detector.detect(sample.image)
        x1, _, x2, _ = face.box
        assert face.score > 0.9 and 0.25 < (x2 - x1) / 256 < 0.75 and abs((x1 + x2) / 2 - 128) < 40


def test_bad_arguments_and_a_missing_wheel_say_what_to_do(monkeypatch):
    if not stylegan.missing():
        for bad, match in (({"count": 0}, "at least 1"), ({"count": 1, "seed": -1}, "seed"),
                           ({"count": 1, "size": 32}, "size")):  # fmt: skip
            with pytest.raises(UserError, match=match):
                stylegan.StyleGANSource(**bad)
    monkeypatch.setattr(stylegan, "package_dir", lambda *_: None)
    with pytest.raises(UserError, match="random-face"):
        stylegan.StyleGANSource(1)
    assert "random-face==2021.7.21.1" in stylegan.missing()
