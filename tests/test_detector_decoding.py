"""RetinaFace's shared numpy input and decoding (`detection.decoding`) and the detector
artifact's metadata check, on constructed outputs (no weights needed)."""

from pathlib import Path

import numpy as np
import pytest

from faceptor_edge.backends.artifact import ArtifactError
from faceptor_edge.detection.artifact import check_detector_record, detector_outputs
from faceptor_edge.detection.decoding import (
    RetinaFaceConfig,
    anchor_count,
    anchors,
    detector_input,
    faces_from_outputs,
)

CONFIG = RetinaFaceConfig()


def test_fixed_side_input_shrinks_to_fit_and_pads_with_the_mean():
    image = np.full((50, 100, 3), 200, np.uint8)
    prepared = detector_input(image, CONFIG, side=64)
    assert prepared.x.shape == (1, 3, 64, 64) and prepared.x.dtype == np.float32
    assert prepared.to_original == (100 / 64, 50 / 32)
    assert np.all(prepared.x[0, :, 32:] == 0)  # the pad: the mean pixel, zero after subtraction
    assert np.allclose(prepared.x[0, :, :32, :], 200 - np.reshape(CONFIG.pixel_mean_bgr, (3, 1, 1)))
    small = detector_input(np.zeros((40, 30, 3), np.uint8), CONFIG, side=64)
    assert small.to_original == (1.0, 1.0) and small.x.shape == (1, 3, 64, 64)  # padded, never enlarged
    native = detector_input(np.zeros((40, 30, 3), np.uint8), CONFIG)
    assert native.x.shape == (1, 3, 40, 30)


@pytest.mark.parametrize("size", [(64, 64), (40, 30), (33, 97)])
def test_anchor_count_is_the_number_of_anchors(size):
    assert anchor_count(CONFIG, *size) == len(anchors(CONFIG, *size))


def _outputs(count: int, faces: dict[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero offsets (boxes and points at their anchors); logits making `faces` {anchor: score}."""
    logits = np.tile(np.float32([4.0, -4.0]), (count, 1))
    for index, score in faces.items():
        logits[index] = [0.0, np.log(score / (1 - score))]
    return np.zeros((count, 4), np.float32), logits, np.zeros((count, 10), np.float32)


def test_faces_are_decoded_suppressed_and_scaled_to_the_photo():
    image = np.zeros((128, 256, 3), np.uint8)
    prepared = detector_input(image, CONFIG, side=64)  # scale 1/4
    priors = anchors(CONFIG, 64, 64)
    first = 2 * (3 * 8 + 4)  # stride-8 cell (row 3, column 4), its 16-px anchor
    offsets, logits, landmarks = _outputs(len(priors), {first: 0.9, first + 1: 0.8, len(priors) - 1: 0.7})
    offsets[first + 1, 2:] = np.log(0.5) / CONFIG.variances[1]  # the 32-px anchor's box shrunk onto the 16-px one
    faces = faces_from_outputs(CONFIG, (offsets, logits, landmarks), prepared)
    assert [round(face.score, 3) for face in faces] == [0.9, 0.7]
    cx, cy = (4 + 0.5) * 8 * 4, (3 + 0.5) * 8 * 4  # the anchor centre in photo pixels
    assert np.allclose(faces[0].box, (cx - 32, cy - 32, cx + 32, cy + 32))
    assert np.allclose(faces[0].points5, np.tile([cx, cy], (5, 1)))


def test_outputs_of_another_input_size_are_refused():
    prepared = detector_input(np.zeros((64, 64, 3), np.uint8), CONFIG, side=64)
    with pytest.raises(ValueError, match="anchors for a 64×64 input"):
        faces_from_outputs(CONFIG, _outputs(10, {}), prepared)


def test_detector_record_is_checked():
    record = {"model": "retinaface-mobilenet0.25", "retinaface": CONFIG.to_json(),
              "input": {"shape": [1, 3, 64, 64]}, "outputs": detector_outputs(CONFIG, 64)}  # fmt: skip
    assert check_detector_record(record, Path("d.xml")) == (CONFIG, 64)
    with pytest.raises(ArtifactError, match="not a face detector"):
        check_detector_record({**record, "model": None}, Path("student.xml"))
    with pytest.raises(ArtifactError, match="do not fit a 96-px input"):
        check_detector_record({**record, "input": {"shape": [1, 3, 96, 96]}}, Path("d.xml"))
    with pytest.raises(ValueError, match="malformed RetinaFace config"):
        check_detector_record({**record, "retinaface": {"steps": [8]}}, Path("d.xml"))
