"""The release student: shipped as float16 weights, named `release` wherever a model is taken,
and the default of `predict` and `compare`. A tiny stand-in plays it here; the one the package
ships (when it ships one) is checked to load as a student."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from faceptor_edge import release
from faceptor_edge.backends import load_backend
from faceptor_edge.cli import _student_or_newest, main
from faceptor_edge.errors import UserError
from faceptor_edge.student.io import WEIGHTS, load_student, read_card, save_student
from faceptor_edge.student.model import build_student
from faceptor_edge.targets.artifacts import artifacts_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run's student: the tiny convolutional one, random weights, a specialist teacher on its card."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("run")
    return save_student(root / "student", build_student("tiny", pretrained=False).eval(),
                        {"teacher": {"teacher": "specialists-v2"}}, framing="detected")  # fmt: skip


@pytest.fixture
def shipped(trained, tmp_path, monkeypatch) -> Path:
    """The stand-in shipped as the release student (the package's own folder is left alone)."""
    dest = release.ship_release(trained, "a tiny stand-in, random weights", dest=tmp_path / "release_student")
    monkeypatch.setattr(release, "RELEASE_DIR", dest)
    return dest


def test_shipping_halves_the_weights_and_records_where_they_came_from(trained, shipped):
    assert release.ship_release(trained, "shipped again", dest=shipped) == shipped  # replaces the shipped one
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["release_student"]
    assert read_card(shipped)["release"]["summary"] == "shipped again"
    dtypes = {value.dtype for value in load_file(str(shipped / WEIGHTS)).values()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    student, card = load_student(shipped)
    original, original_card = load_student(trained)
    assert card["release"]["from_weights_sha256"] == original_card["weights_sha256"] != card["weights_sha256"]
    assert card["release"]["weights"] == "float16" and card["teacher"] == {"teacher": "specialists-v2"}
    for (name, value), (_, before) in zip(student.state_dict().items(), original.state_dict().items()):
        expected = before.half().to(before.dtype) if before.is_floating_point() else before
        assert value.dtype == before.dtype and torch.equal(value, expected), name  # fp16 values in the fp32 model


def test_release_names_the_shipped_student_wherever_a_model_is_taken(trained, shipped):
    model = load_backend("release")
    assert model.kind == "student" and model.name.startswith("release")  # not its folder inside site-packages
    side = model.recipe.size
    image = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    ours = model.run({"image": image})
    theirs = load_backend(str(trained)).run({"image": image})
    assert ours.keys() == theirs.keys()
    assert all(np.allclose(ours[key], theirs[key], atol=0.05) for key in ours)  # float16 rounding only
    assert _student_or_newest(Path("release")) == shipped  # export, parity, bench
    assert artifacts_dir(shipped) == Path("runs/release/artifacts")  # not inside the installed package
    assert artifacts_dir(trained) == trained.parent / "artifacts"


def test_the_parity_gate_takes_release_as_its_student(shipped):
    """`pytest tests/parity --student release` judges the shipped student's artifacts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("parity_conftest", Path(__file__).parent / "parity" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)

    class Config:
        def __init__(self, student):
            self.student = student

        def getoption(self, name):
            return self.student

    assert conftest._user_student(Config(Path("release"))) == shipped
    assert conftest._user_student(Config(Path("runs/x/student"))) == Path("runs/x/student")
    assert conftest._user_student(Config(None)) is None


def test_student_info_reads_the_release_student(shipped, capsys):
    assert main(["student-info", "release"]) == 0
    params = sum(p.numel() for p in load_student(shipped)[0].parameters())
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.split()[:2] == ["release", f"{params:,}"]


def test_predict_and_compare_default_to_the_release_student_and_say_so(shipped, capsys):
    from faceptor_edge.detection import detector_available
    from faceptor_edge.evaluation.realfaces import demo_photo

    if detector_available() or demo_photo() is None:
        pytest.skip(detector_available() or "no real photo installed")
    assert main(["predict", str(demo_photo())]) == 0
    out, err = capsys.readouterr()
    assert "model: the release student shipped with faceptor-edge (tiny" in err
    assert "a tiny stand-in, random weights" in err and "release student" not in out
    assert main(["compare", str(demo_photo()), str(demo_photo())]) == 0
    out, err = capsys.readouterr()
    assert "cosine similarity 1.0000" in out and "model: the release student" in err


def test_without_a_shipped_student_release_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(release, "RELEASE_DIR", tmp_path / "empty")
    assert "carries no release student" in release.release_missing()
    with pytest.raises(UserError, match="release: this install carries no release student"):
        load_backend("release")
    assert main(["predict", str(tmp_path / "photo.jpg")]) != 0
    assert "no --model given, and this install carries no release student" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / WEIGHTS).write_bytes(b"")
    (tmp_path / "empty" / "student.json").write_text("{")  # a damaged install
    assert main(["predict", str(tmp_path / "photo.jpg")]) == 2
    assert "release student's card" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_shipped_release_student_loads():
    if release.release_missing():
        pytest.skip(release.release_missing())
    model = load_backend("release")
    card = load_student(release.RELEASE_DIR)[1]
    assert model.kind == "student" and card["release"]["weights"] == "float16"
    assert model.name.startswith("release") and load_backend(release.RELEASE_DIR).name == model.name
    assert card["teacher"]["teacher"].startswith("specialists")


def test_init_starts_a_student_from_the_release_students_weights(shipped, tmp_path):
    from faceptor_edge.distill.run import _init_student, build_parser
    from faceptor_edge.student.io import init_from_student
    from faceptor_edge.tasks import FULL_TASKS

    assert build_parser().parse_args(["--init", "release"]).init == "release"
    torch.manual_seed(1)
    student = build_student("tiny", pretrained=False)
    released, card = load_student(shipped)
    assert _init_student(student, "release") == {"from": "release", "weights_sha256": card["weights_sha256"]}
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), released.state_dict().values()))
    # A student with heads the trained one lacks: those start fresh, the rest are copied.
    fewer = save_student(tmp_path / "fewer", build_student("tiny", FULL_TASKS[:3], pretrained=False), {})
    student = build_student("tiny", pretrained=False)
    before = {key: value.clone() for key, value in student.state_dict().items()}
    _, fresh = init_from_student(student, fewer)
    trained = load_student(fewer)[0].state_dict()
    now = student.state_dict()
    assert set(fresh) == {key for key in now if key not in trained or trained[key].shape != now[key].shape}
    assert "value_heads.affect_affectnet.weight" in fresh and "encoder.stem.0.weight" not in fresh
    assert all(torch.equal(now[key], before[key]) for key in fresh)
    assert all(torch.equal(now[key], value) for key, value in trained.items() if key not in fresh)
    with pytest.raises(UserError, match="cannot start a small one"):
        init_from_student(build_student("small", pretrained=False), shipped)
