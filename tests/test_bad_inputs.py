"""Bad inputs get one clear error and lose nothing (issue: hardening)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from faceptor_edge import cli
from faceptor_edge.arguments import number, output_file, positive, run_command
from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_json, locked_directory
from faceptor_edge.images import load_photo
from faceptor_edge.label_maps import face_labels, labels_in_image
from faceptor_edge.predict_cli import output_names
from faceptor_edge.preprocess import map_to_image
from faceptor_edge.student.io import read_card, save_student
from faceptor_edge.student.model import build_student

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(orientation, tmp_path):
    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"
    Image.fromarray(pixels).save(path, exif=exif)
    photo = load_photo(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert photo.orientation == orientation and np.array_equal(photo.pixels, expected)
    assert photo.original_size == (expected.shape[1], expected.shape[0]) and photo.scale == 1.0


def test_large_photos_are_downscaled_to_the_pixel_limit(tmp_path):
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), np.full((800, 1200, 3), 128, np.uint8))
    photo = load_photo(path, max_pixels=100_000)
    assert photo.pixels.shape[0] * photo.pixels.shape[1] <= 100_000
    assert photo.original_size == (1200, 800) and photo.scale == pytest.approx(photo.pixels.shape[1] / 1200)
    png = tmp_path / "big.png"
    cv2.imwrite(str(png), np.zeros((800, 1200, 3), np.uint8))
    with pytest.raises(UserError, match="--max-pixels"):
        load_photo(png, max_pixels=10_000)


def test_photos_sharing_a_stem_get_distinct_output_names():
    assert output_names([Path("a/face.jpg"), Path("b/face.jpg"), Path("face-2.png"), Path("c/face.png")]) == [
        "face", "face-2", "face-2-2", "face-3"]  # fmt: skip


def test_parsing_maps_warped_over_the_footprint_equal_the_whole_image_warp():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((32, 32, 5)).astype(np.float32)
    matrix = np.array([[0.4, 0.1, -20.0], [-0.1, 0.4, -10.0], [0, 0, 1]])
    warped = map_to_image(logits, matrix, (300, 400), crop_size=64)
    labels = labels_in_image(logits, matrix, 64, (300, 400))
    # Pixels whose bilinear weights on the crop are ~1e-8 (OpenCV's fixed-point ring) have no
    # meaningful argmax; everywhere else the footprint warp is the whole-image warp.
    meaningful = np.abs(warped).max(-1) > 1e-6
    assert meaningful.sum() > 10_000
    assert np.array_equal(labels[meaningful], np.argmax(warped, -1)[meaningful])
    assert (labels[~meaningful] == 0).mean() > 0.99


def test_a_face_label_map_keeps_only_its_footprint_and_reads_as_the_whole_map():
    logits = np.random.default_rng(1).standard_normal((32, 32, 5)).astype(np.float32)
    matrix = np.array([[0.4, 0.1, -20.0], [-0.1, 0.4, -10.0], [0, 0, 1]])
    compact = face_labels(logits, matrix, 64, (300, 400))
    whole = labels_in_image(logits, matrix, 64, (300, 400))
    assert compact.region.size < whole.size / 2 and np.array_equal(np.asarray(compact), whole)
    assert np.array_equal(compact.counts(5), np.bincount(whole.ravel(), minlength=5))
    big = face_labels(logits, np.diag([0.01, 0.01, 1.0]), 64, (8000, 8000))  # a face filling a 64 MP photo
    assert max(big.region.shape) > 4000 and big.region.dtype == np.uint8


def test_argument_types_name_the_problem():
    with pytest.raises(argparse.ArgumentTypeError, match="≥ 1"):
        positive("0")
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        number(0)("nan")
    with pytest.raises(argparse.ArgumentTypeError, match="directory"):
        output_file(".")


@pytest.mark.parametrize("argv, argument", [
    (["export", "--target", "openvino", "--out", "x.xml", "--check-count", "0"], "--check-count"),
    (["predict", "p.jpg", "--model", "demo", "--threads", "-1"], "--threads"),
    (["predict", "p.jpg", "--model", "demo", "--json", "."], "--json"),
])  # fmt: skip
def test_the_cli_rejects_bad_values_before_any_work(argv, argument, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2 and f"argument {argument}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_distill_rejects_zero_steps_at_the_door(tmp_path):
    run = subprocess.run([sys.executable, "distill/run.py", "--steps", "0", "--out", str(tmp_path / "out")],
                         check=False, capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert run.returncode == 2 and "argument --steps" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("card, problem", [
    (b"[1, 2]", "not an object"), (b"\xff\xfe", "not UTF-8"),
    (json.dumps({"format": "faceptor-edge-student/1", "size": "huge"}).encode(), "'size'"),
])  # fmt: skip
def test_malformed_student_cards_get_one_clear_error(card, problem, tmp_path):
    (tmp_path / "student.json").write_bytes(card)
    with pytest.raises(UserError, match=problem):
        read_card(tmp_path)


def test_a_second_process_cannot_take_a_locked_run_directory(tmp_path):
    code = "import sys; from faceptor_edge.files import locked_directory\nwith locked_directory(sys.argv[1]): pass"
    with locked_directory(tmp_path):
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False, capture_output=True, text=True)
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False).returncode == 0


def test_reports_never_hold_bare_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"value": float("nan")})
    assert not any(tmp_path.iterdir())


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("faceptor_edge.files.os.fsync", _no_space)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(tmp_path / "report.json", {"value": 1})
    assert not any(tmp_path.iterdir())

    def write(args):
        atomic_write_json(tmp_path / "report.json", {"value": 1})
        return 0

    assert run_command("faceptor-edge predict", write, argparse.Namespace(debug=False)) == 2
    assert capsys.readouterr().err.strip() == "faceptor-edge predict: error: No space left on device"
    assert not any(tmp_path.iterdir())
    with pytest.raises(OSError):  # --debug keeps the traceback
        run_command("faceptor-edge predict", write, argparse.Namespace(debug=True))


def test_unexpected_errors_keep_their_traceback():
    def bug(args):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_command("faceptor-edge predict", bug, argparse.Namespace(debug=False))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_outputs_in_a_read_only_directory_are_refused_at_the_door(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(argparse.ArgumentTypeError, match="cannot write"):
        output_file(str(locked / "out.json"))


def test_a_permission_error_while_writing_is_one_line(tmp_path, capsys):
    def write(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "out.json"))

    assert run_command("faceptor-edge predict", write, argparse.Namespace(debug=False)) == 2
    assert (
        capsys.readouterr().err.strip() == f"faceptor-edge predict: error: {tmp_path / 'out.json'}: Permission denied"
    )


def test_a_second_distillation_into_a_busy_run_directory_fails_fast(tmp_path):
    out = tmp_path / "out"
    with locked_directory(out):
        run = subprocess.run([sys.executable, "distill/run.py", "--teacher", "demo", "--student", "tiny", "--out", str(out),
                              "--cache", str(tmp_path / "cache")], check=False, capture_output=True, text=True,
                             cwd=ROOT, timeout=120)  # fmt: skip
    assert run.returncode == 2 and f"pid {os.getpid()}" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock"] and not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    return save_student(tmp_path_factory.mktemp("bad") / "student", build_student("tiny", pretrained=False), {})


def _ctrl_c() -> None:
    """A real Ctrl-C (SIGINT to this process): Python's handler raises KeyboardInterrupt here."""
    signal.raise_signal(signal.SIGINT)


def _last_line(capsys) -> str:
    """stderr's one line from us (toolkits print their own notes above it), and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_ctrl_c_during_export_keeps_nothing_half_written(tiny_student, tmp_path, monkeypatch, capsys):
    # OpenVINO: the cheapest export here (a tiny ExecuTorch lowering costs several times more), and an
    # artifact of two files (.xml and .bin); the Ctrl-C handling is the CLI's, the same for every format.
    pytest.importorskip("openvino")
    from faceptor_edge.targets import export
    from faceptor_edge.targets import openvino as target

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own, as in `faceptor-edge`

    out = tmp_path / "artifacts" / "tiny.xml"
    command = ["export", "--target", "openvino", "--student", str(tiny_student), "--out", str(out),
               "--check-count", "4"]  # fmt: skip
    with monkeypatch.context() as patch:  # Ctrl-C once the artifact is in place: it stays, unchecked
        patch.setattr(export, "check_export", lambda *args: _ctrl_c())
        assert cli.main(command) == 130
    assert _last_line(capsys) == (
        f"faceptor-edge export: interrupted during the parity check; {out} is complete but unchecked: "
        f"run `faceptor-edge parity --artifact {out} --student {tiny_student}`"
    )
    target._verify(out)  # a whole artifact: it loads and its outputs match its metadata
    previous = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    staged = []

    def interrupt_before_verify(built):  # the new artifact is written in staging, not yet checked or moved
        staged.extend(sorted(p.name for p in built.parent.iterdir()))
        _ctrl_c()

    monkeypatch.setattr(target, "_verify", interrupt_before_verify)
    assert cli.main(command) == 130
    assert staged == ["tiny.bin", "tiny.xml"]  # Ctrl-C landed while a staged artifact existed
    assert _last_line(capsys) == "faceptor-edge export: interrupted; nothing half-written was kept"
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == previous  # the earlier artifact, untouched


def test_ctrl_c_on_a_later_artifact_of_export_all_keeps_the_earlier_rows(tmp_path, monkeypatch, capsys):
    # `--target all` over OpenVINO alone (fp32, then int8): fp32 exports and is checked, then Ctrl-C
    # lands in int8's calibration; the fp32 row is in export.json all the same.
    pytest.importorskip("openvino")
    from faceptor_edge.targets import export

    student = save_student(tmp_path / "student", build_student("tiny", pretrained=False), {})
    monkeypatch.setattr(cli, "FORMAT_NAMES", ("openvino",))
    real = export.export_student
    monkeypatch.setattr(export, "export_student", lambda student_dir, target, precision, *args, **kwargs: (
        _ctrl_c() if precision == "int8" else real(student_dir, target, precision, *args, **kwargs)))  # fmt: skip
    command = ["export", "--target", "all", "--student", str(student), "--check-count", "4"]
    assert cli.main(command) == 130
    assert _last_line(capsys) == "faceptor-edge export: interrupted; nothing half-written was kept"
    table = json.loads((tmp_path / "artifacts" / "export.json").read_text())
    assert [(row["target"], row["precision"]) for row in table["artifacts"]] == [("openvino", "fp32")]


@pytest.mark.parametrize("command", [["export", "--target", "openvino"], ["parity"], ["bench"]])
def test_export_parity_and_bench_default_to_the_newest_student(command, capsys):
    assert cli.build_parser().parse_args(command).student is None  # None: _student_or_newest picks it
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*command, "--help"])
    assert "(default: the newest runs/*/student)" in " ".join(capsys.readouterr().out.split())


def test_a_bundle_manifest_cannot_point_outside_its_checked_files(tmp_path):
    from faceptor_edge.backends.artifact import ArtifactError
    from faceptor_edge.backends.bundle import BUNDLE_FORMAT, MANIFEST, file_records, read_manifest

    bundle = tmp_path / "coreml-fp32.bundle"
    (bundle / "student.mlpackage").mkdir(parents=True)
    (bundle / "student.mlpackage" / "weights.bin").write_bytes(b"student")
    (bundle / "detector.xml").write_bytes(b"detector")
    (tmp_path / "elsewhere.xml").write_bytes(b"unchecked")
    manifest = {"format": BUNDLE_FORMAT, "target": "coreml", "files": file_records(bundle),
                "detector": {"file": "detector.xml", "side": 640},
                "student": {"file": "student.mlpackage", "recipe": {}, "tasks": []}}  # fmt: skip
    atomic_write_json(bundle / MANIFEST, manifest)
    assert read_manifest(bundle) == manifest  # a folder artifact is checked through its files
    for entry, name in (("student", "../elsewhere.xml"), ("detector", "detector.bin")):
        atomic_write_json(bundle / MANIFEST, {**manifest, entry: {**manifest[entry], "file": name}})
        with pytest.raises(ArtifactError, match=f"names '{re.escape(name)}', which is not among its checked files"):
            read_manifest(bundle)


def test_an_interrupted_ir_replacement_leaves_no_mixed_pair(tmp_path, monkeypatch):
    from faceptor_edge.targets import base

    path, built = tmp_path / "student.xml", tmp_path / "staging" / "student.xml"
    built.parent.mkdir()
    for xml, text in ((path, "old"), (built, "new")):
        xml.write_text(f"{text} graph")
        xml.with_suffix(".bin").write_text(f"{text} weights")
    real_commit = base.commit

    def interrupted_after_the_bin(source, dest):
        if dest.suffix == ".xml":
            raise KeyboardInterrupt
        real_commit(source, dest)

    monkeypatch.setattr(base, "commit", interrupted_after_the_bin)
    with pytest.raises(KeyboardInterrupt):
        base.commit_ir(built, path)
    assert path.with_suffix(".bin").read_text() == "new weights" and not path.exists()  # no old .xml over it
