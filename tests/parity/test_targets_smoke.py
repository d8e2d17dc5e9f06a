"""Every export target on the tiny student: fp32 and int8 artifacts, run in their own runtime.

ExecuTorch and OpenVINO run for real; Core ML is checked through its spec on Linux and
predicts only on macOS. Each target's pair of exports is built once per module (about
10-40 s each on a 2-core CPU); run with `-s` to see export times and sizes.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from faceptor_edge.backends.artifact import ArtifactError, OutputSpec
from faceptor_edge.backends.formats import FORMATS, artifact_size
from faceptor_edge.errors import UserError
from faceptor_edge.student.model import build_student
from faceptor_edge.targets import get_target
from faceptor_edge.targets.base import ExportWrapper, commit, export_outputs, staging_dir
from faceptor_edge.targets.export import OPENVINO_FLOAT_LAYERS
from faceptor_edge.tasks import AGE_MORPH2, ALIGN_300W, RECOG_MS1MV3

ON_MACOS = sys.platform == "darwin"
macos_only = pytest.mark.skipif(not ON_MACOS, reason="Core ML prediction runs only on macOS")
CALLER_METADATA = {"normalisation": {"mean": [0.48145466, 0.4578275, 0.40821073]}, "note": "smoke"}


def _target(name: str, **options: Any):
    pytest.importorskip(FORMATS[name].toolkit)
    return get_target(name, **options)


@dataclass
class Exported:
    name: str
    target: Any
    paths: dict[str, Path]  # precision -> artifact
    example: torch.Tensor


@pytest.fixture(scope="module")
def wrapper() -> ExportWrapper:
    torch.manual_seed(0)
    return ExportWrapper(build_student("tiny"))


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """Two calibration crops and two check crops (random: only parity matters here)."""
    return torch.randn(4, 3, 256, 256, generator=torch.Generator().manual_seed(1))


# int8 options per target: ExecuTorch and OpenVINO keep the embedding head float (checks
# the keep-float report), OpenVINO also what `export` keeps float for it on every student;
# Core ML takes its default route (weights+activations first).
INT8_OPTIONS = {
    "executorch": {"keep_float": ("student.embedding_head",)},
    "openvino": {"keep_float": ("student.embedding_head", *OPENVINO_FLOAT_LAYERS)},
    "coreml": {},
}
# A random student's raw outputs through int8: a broken int8 path (a wrong scale or layout) gives
# far less. Measured on this tiny student: above 0.99 with VNNI; OpenVINO int8 on AVX2 int8 kernels
# (no VNNI, or ONEDNN_MAX_CPU_ISA=AVX2) 0.961 on biattr_celeba, whose 16-bit sums saturate on
# random weights. Task-level parity of a trained student on both CPU kinds is the gate's
# (test_gate.py; docs/export.md "int8 on x86 CPUs without VNNI").
MIN_INT8_COSINE = 0.95


@pytest.fixture(scope="module", params=list(FORMATS))
def exported(request, wrapper, crops, tmp_path_factory) -> Exported:
    name = request.param
    target = _target(name, **INT8_OPTIONS[name])
    folder = tmp_path_factory.mktemp(name)
    example = wrapper.example_input(1)
    paths = {}
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        path = target.export(
            wrapper, example, folder / f"tiny_{precision}{target.suffix}", CALLER_METADATA,
            precision=precision, calibration=crops[:2],
        )  # fmt: skip
        print(
            f"\n[{name} {precision}] export {time.perf_counter() - start:.1f} s, {artifact_size(path) / 1024:.0f} KiB"
        )
        paths[precision] = path
    return Exported(name, target, paths, example)


def _max_errors(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    return {key: float(np.abs(got[key] - want[key]).max()) for key in want}


def _cosines(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    result = {}
    for key, value in want.items():
        a, b = got[key].ravel().astype(np.float64), value.ravel().astype(np.float64)
        result[key] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return result


def _skip_prediction_off_macos(exported: Exported) -> None:
    if exported.name == "coreml" and not ON_MACOS:
        pytest.skip("Core ML prediction runs only on macOS")


def test_export_outputs_follow_task_order_without_heatmaps():
    student = build_student("tiny", tasks=(RECOG_MS1MV3, AGE_MORPH2, ALIGN_300W))
    wrapper = ExportWrapper(student)
    assert export_outputs(student) == ["recog_ms1mv3", "age_morph2", "align_300w"]
    assert wrapper.output_specs(wrapper.example_input(2)) == [
        OutputSpec("recog_ms1mv3", (2, 512)), OutputSpec("age_morph2", (2, 101)), OutputSpec("align_300w", (2, 68, 2)),
    ]  # fmt: skip
    assert not wrapper.training and not student.training


def test_artifacts_declare_the_wrapper_outputs(exported, wrapper):
    want = wrapper.output_specs(exported.example)
    for precision, path in exported.paths.items():
        runner = exported.target.load(path)
        assert runner.outputs == want, precision
        assert runner.batch_size == 1
    if exported.name == "coreml":
        info = exported.target.load(exported.paths["fp32"]).info
        assert info.inputs == [OutputSpec("image", (1, 3, 256, 256))]
        assert [spec.name for spec in info.outputs] == [spec.name for spec in want]


def test_fp32_matches_pytorch(exported, wrapper, crops):
    _skip_prediction_off_macos(exported)
    got = exported.target.load(exported.paths["fp32"]).run(crops[2:].numpy())
    errors = _max_errors(got, wrapper.reference(crops[2:]))
    worst = max(errors, key=errors.get)
    print(f"\n[{exported.name} fp32] max abs error vs PyTorch: {errors[worst]:.2e} ({worst})")
    assert all(got[key].shape == (2, *spec.shape[1:]) for key, spec in zip(got, wrapper.output_specs(exported.example)))
    assert max(errors.values()) < 1e-4, errors


def test_int8_agrees_with_pytorch(exported, wrapper, crops):
    _skip_prediction_off_macos(exported)
    got = exported.target.load(exported.paths["int8"]).run(crops[2:].numpy())
    want = wrapper.reference(crops[2:])
    cosines, errors = _cosines(got, want), _max_errors(got, want)
    print(f"\n[{exported.name} int8] min cosine {min(cosines.values()):.4f} ({min(cosines, key=cosines.get)}), "
          f"max abs error {max(errors.values()):.3f} ({max(errors, key=errors.get)})")  # fmt: skip
    assert all(np.isfinite(value).all() for value in got.values())
    assert min(cosines.values()) > MIN_INT8_COSINE, cosines


def test_metadata_round_trips(exported):
    for precision, path in exported.paths.items():
        record = exported.target.read_metadata(path)
        assert {key: record[key] for key in CALLER_METADATA} == CALLER_METADATA
        assert record["format"] == exported.name and record["precision"] == precision
        assert record["batch_size"] == 1 and record["input"]["shape"] == [1, 3, 256, 256]
        assert ("int8" in record["quantization"]) == (precision == "int8")
        assert exported.target.load(path).metadata == record


def test_int8_reports_layers_kept_float(exported):
    record = exported.target.read_metadata(exported.paths["int8"])
    if exported.name == "coreml" and "only" in record["quantization"]:
        pytest.skip(f"Core ML fell back to weights-only int8: {record['w8a8_failure']}")
    kept = INT8_OPTIONS[exported.name].get("keep_float", ())
    paths = [layer for layer in record["float_layers"] if layer.startswith("student.")]  # OpenVINO: convs by OV name
    assert all(any(layer.startswith(module) for module in kept) for layer in paths)
    if kept:
        assert {"student.embedding_head.0", "student.embedding_head.2"} <= set(record["float_layers"])


def test_openvino_int8_keeps_the_decoders_attention_float(exported):
    """The decoder is kept float whole: its attention's products too, which OpenVINO renames
    (`bmm_N`), not only its linear layers; only the maps' einsum, outside it, is int8."""
    if exported.name != "openvino":
        pytest.skip("OpenVINO only")
    import openvino as ov

    model = ov.Core().read_model(exported.paths["int8"])
    products = [op for op in model.get_ordered_ops()
                if op.get_type_name() == "MatMul" and "/aten.bmm." in op.get_friendly_name()]  # fmt: skip
    quantized = [op.get_friendly_name() for op in products
                 if any(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs())]  # fmt: skip
    assert len(products) == 4 + 1  # the tiny student's one decoder layer: two attentions of two products; the einsum
    assert quantized == [products[-1].get_friendly_name()]


def test_executorch_programs_run_whole_in_one_xnnpack_delegate(exported):
    if exported.name != "executorch":
        pytest.skip("delegation is an ExecuTorch notion")
    from faceptor_edge.backends.executorch import delegation_summary

    for precision, path in exported.paths.items():
        delegation = delegation_summary(path)
        assert delegation.subgraphs == {"XnnpackBackend": 1} and not delegation.compute_outside, (precision, delegation)
        assert exported.target.load(path).delegation == delegation


def test_coreml_spec_shows_the_quantization(exported):
    if exported.name != "coreml":
        pytest.skip("Core ML only")
    from faceptor_edge.backends.coreml import inspect_mlpackage

    fp32, int8 = inspect_mlpackage(exported.paths["fp32"]), inspect_mlpackage(exported.paths["int8"])
    quantization = exported.target.read_metadata(exported.paths["int8"])["quantization"]
    print(f"\n[coreml int8] route: {quantization}; layer weights {int8.weight_dtypes}")
    assert fp32.spec_version >= 8 and list(fp32.weight_dtypes) == ["fp32"]
    assert not fp32.weights_quantized and not fp32.activations_quantized
    assert int8.weights_quantized and "int8" in int8.weight_dtypes
    assert int8.activations_quantized == ("weights and activations" in quantization)


def test_coreml_run_off_macos_raises_clearly(exported):
    if exported.name != "coreml" or ON_MACOS:
        pytest.skip("checks the Linux behaviour of the Core ML runner")
    from faceptor_edge.backends.coreml import UnsupportedPlatformError

    with pytest.raises(UnsupportedPlatformError, match="only on macOS"):
        exported.target.load(exported.paths["fp32"]).run(np.zeros((1, 3, 256, 256), np.float32))


def test_coreml_compute_plan_places_every_op(exported, capsys):
    if exported.name != "coreml":
        pytest.skip("Core ML only")
    from faceptor_edge.backends.coreml import UnsupportedPlatformError, compute_plan, inspect_mlpackage
    from faceptor_edge.cli import main

    path = exported.paths["int8"]
    if not ON_MACOS:  # one clear error from the CLI, before any other work
        assert main(["inspect", str(path), "--compute-plan"]) == 2
        assert "MLComputePlan" in capsys.readouterr().err
        with pytest.raises(UnsupportedPlatformError, match="macOS 14.4"):
            compute_plan(path)
        return
    plan = compute_plan(path)
    layers = sum(inspect_mlpackage(path).weight_dtypes.values())
    assert sum(count for name, devices in plan.ops.items() if "conv" in name or "linear" in name
               for count in devices.values()) >= layers  # fmt: skip
    assert set(plan.by_device()) <= {"neural engine", "gpu", "cpu", "unknown"}


def test_run_rejects_bad_input(exported):
    _skip_prediction_off_macos(exported)
    runner = exported.target.load(exported.paths["fp32"])
    with pytest.raises(UserError, match="N×3×256×256"):
        runner.run(np.zeros((1, 3, 128, 128), np.float32))
    with pytest.raises(UserError, match="float32"):
        runner.run(np.zeros((1, 3, 256, 256), np.uint8))


def _corrupt_copies(path: Path, folder: Path) -> list[Path]:
    """A truncated copy and a garbage file, each named like an artifact of this target."""
    truncated, junk = folder / f"truncated{path.suffix}", folder / f"junk{path.suffix}"
    if path.is_dir():  # .mlpackage: truncate the spec, and a plain file where a package should be
        shutil.copytree(path, truncated)
        spec = next(truncated.rglob("model.mlmodel"))
        spec.write_bytes(spec.read_bytes()[: spec.stat().st_size // 2])
        junk.write_bytes(b"not a package")
        return [truncated, junk]
    data = path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    junk.write_bytes(b"\x00garbage" * 64)
    if path.suffix == ".xml":
        for copy in (truncated, junk):
            shutil.copy(path.with_suffix(".bin"), copy.with_suffix(".bin"))
        weights = folder / "short_weights.xml"  # intact IR, half its weights
        shutil.copy(path, weights)
        weights.with_suffix(".bin").write_bytes(path.with_suffix(".bin").read_bytes()[:1000])
        return [truncated, junk, weights, folder / "missing.xml"]
    return [truncated, junk, folder / f"missing{path.suffix}"]


def test_corrupt_artifacts_raise_artifact_error(exported, tmp_path):
    for bad in _corrupt_copies(exported.paths["fp32"], tmp_path):
        with pytest.raises(ArtifactError):
            exported.target.load(bad)
        if bad.name.startswith(("junk", "missing")):
            with pytest.raises(ArtifactError):
                exported.target.read_metadata(bad)


def test_openvino_metadata_that_disagrees_with_the_graph_is_refused(exported, tmp_path):
    if exported.name != "openvino":
        pytest.skip("rewrites an OpenVINO IR's rt_info")
    import json

    import openvino as ov

    from faceptor_edge.backends.openvino import METADATA_KEY

    core = ov.Core()
    for change, problem in [("outputs", "outputs"), ("input", "input")]:
        model = core.read_model(str(exported.paths["fp32"]))
        record = json.loads(model.get_rt_info(METADATA_KEY).astype(str))
        if change == "outputs":
            record["outputs"][0]["shape"] = [1, 7]
        else:
            record["input"]["shape"] = [1, 3, 128, 128]
        model.set_rt_info(json.dumps(record), METADATA_KEY)
        bad = tmp_path / f"bad_{change}.xml"
        ov.save_model(model, str(bad))
        with pytest.raises(ArtifactError, match=problem):
            exported.target.load(bad)


def test_failed_export_leaves_no_partial_files(exported, wrapper, tmp_path, monkeypatch):
    module = sys.modules[type(exported.target).__module__]
    path = tmp_path / f"model{exported.target.suffix}"
    for source, dest in [(exported.paths["fp32"], path)] + (
        [(exported.paths["fp32"].with_suffix(".bin"), path.with_suffix(".bin"))] if path.suffix == ".xml" else []
    ):
        (shutil.copytree if source.is_dir() else shutil.copy)(source, dest)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected failure after writing")

    monkeypatch.setattr(module, "_verify", fail)  # runs once the staged artifact is fully written
    small = ExportWrapper(build_student("tiny", tasks=(RECOG_MS1MV3, AGE_MORPH2)))
    with pytest.raises(RuntimeError, match="injected"):
        exported.target.export(small, small.example_input(), path, {}, precision="fp32", calibration=None)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert exported.target.read_metadata(path)["outputs"][0]["name"] == "recog_ms1mv3"  # old artifact intact


def test_openvino_batch_two_artifact_runs_any_batch(crops, tmp_path):
    target = _target("openvino")
    small = ExportWrapper(build_student("tiny", tasks=(RECOG_MS1MV3, AGE_MORPH2, ALIGN_300W)))
    path = target.export(small, small.example_input(2), tmp_path / "b2.xml", {}, precision="fp32", calibration=None)
    runner = target.load(path)
    assert runner.batch_size == 2 and runner.outputs[0] == OutputSpec("recog_ms1mv3", (2, 512))
    got = runner.run(crops[:3].numpy())  # one full batch, then one padded with zeros
    assert {key: value.shape[0] for key, value in got.items()} == {"recog_ms1mv3": 3, "age_morph2": 3, "align_300w": 3}
    assert max(_max_errors(got, small.reference(crops[:3])).values()) < 1e-4


def test_export_rejects_bad_arguments(wrapper, tmp_path):
    target = _target("openvino")
    example = wrapper.example_input()
    with pytest.raises(UserError, match="must end in .xml"):
        target.export(wrapper, example, tmp_path / "model.onnx", {}, precision="fp32", calibration=None)
    with pytest.raises(UserError, match="calibration"):
        target.export(wrapper, example, tmp_path / "model.xml", {}, precision="int8", calibration=None)
    with pytest.raises(UserError, match="B×3×256×256"):
        target.export(wrapper, torch.zeros(1, 3, 128, 128), tmp_path / "m.xml", {}, precision="fp32", calibration=None)
    with pytest.raises(UserError, match="reserved"):
        target.export(wrapper, example, tmp_path / "model.xml", {"precision": "x"}, precision="fp32", calibration=None)
    assert list(tmp_path.iterdir()) == []


def test_commit_replaces_a_package_directory(tmp_path):
    final = tmp_path / "model.mlpackage"
    final.mkdir()
    (final / "old").write_text("old")
    with staging_dir(final) as tmp:
        built = tmp / final.name
        built.mkdir()
        (built / "new").write_text("new")
        commit(built, final)
    assert [p.name for p in tmp_path.iterdir()] == ["model.mlpackage"]
    assert [p.name for p in final.iterdir()] == ["new"]
