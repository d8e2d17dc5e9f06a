"""The parity suite's student, its seven artifacts and the release gate that judges them.

Without options: a small student distilled from the demo teacher in seconds, its artifacts
exported into a temporary folder, the gate on 16 synthetic faces (fast, for CI);
`FACEPTOR_EDGE_PARITY_STUDENT=lite0 pytest tests/parity` builds the default EfficientNet-Lite0
student instead of `tiny` (minutes longer).

With `--student DIR` (the options are in tests/conftest.py): that student's artifacts in
`--artifacts` (default: runs/<run>/artifacts), exported where missing or exported from other
weights, judged by the release gate (test_gate.py) on 112 real faces; the package's own tests
of this folder are deselected. `--report DIR` gets report.json and report.html, and pytest's
exit code agrees with the report's "passed".
"""

import os
from pathlib import Path

import pytest

from faceptor_edge.backends.formats import FORMAT_NAMES, FORMATS

ARTIFACTS = [(target, precision) for target in FORMAT_NAMES for precision in FORMATS[target].precisions]
HERE = Path(__file__).parent
GATE_TESTS = "test_gate.py"
_REPORT = pytest.StashKey[tuple]()


def _user_student(config: pytest.Config) -> Path | None:
    """The student `--student` names: a folder, or `release` (the shipped student's folder)."""
    from faceptor_edge.release import resolve_model

    given = config.getoption("student")
    return None if given is None else Path(resolve_model(given))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With --student only the gate runs here: the other tests check the package on its own student."""
    if _user_student(config) is None:
        return
    deselected = [item for item in items if item.path.parent == HERE and item.path.name != GATE_TESTS]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(scope="session")
def student_dir(pytestconfig, tmp_path_factory):
    given = _user_student(pytestconfig)
    if given is not None:
        from faceptor_edge.student.io import read_card

        read_card(given)  # one clear error for a folder that is not a student
        return given
    pytest.importorskip(
        "gan_face_generate", reason="synthetic faces need: pip install --no-deps gan-face-generate==1.1.1"
    )
    from faceptor_edge.distill import run as distill_run

    root = tmp_path_factory.mktemp("parity-student")
    size = os.environ.get("FACEPTOR_EDGE_PARITY_STUDENT", "tiny")
    args = ["--teacher", "demo", "--student", size, "--workers", "0", "--count", "48", "--holdout", "8", "--dense-size", "64", "--batch-size", "16",
            "--steps", "40", "--checkpoint-every", "40", "--no-real-faces", "--out", str(root / "run"), "--cache", str(root / "cache")]  # fmt: skip
    assert distill_run.main(args) == 0
    return root / "run" / "student"


@pytest.fixture(scope="session")
def artifacts_folder(pytestconfig, student_dir, tmp_path_factory) -> Path:
    from faceptor_edge.targets.artifacts import artifacts_dir

    if _user_student(pytestconfig) is None:
        return tmp_path_factory.mktemp("artifacts")
    return pytestconfig.getoption("artifacts") or artifacts_dir(student_dir)


@pytest.fixture(scope="session", params=ARTIFACTS, ids=lambda tp: "-".join(tp))
def exported(request, student_dir, artifacts_folder):
    """(target, precision, the artifact's path or why there is none), exported when missing."""
    from faceptor_edge.targets.artifacts import ensure_artifacts

    target, precision = request.param
    user = _user_student(request.config) is not None
    found = ensure_artifacts(student_dir, artifacts_folder, targets=(target,), precisions=(precision,),
                             calibration_count=64 if user else 32, log=print if user else lambda *_: None)  # fmt: skip
    return target, precision, found[target, precision]


@pytest.fixture(scope="session")
def artifact(exported):
    target, precision, path = exported
    if isinstance(path, str):
        pytest.skip(path)
    return target, precision, path


@pytest.fixture(scope="session")
def gate(pytestconfig, student_dir, artifacts_folder, tmp_path_factory):
    """The release gate of the student; at the end of the session it writes its report."""
    from faceptor_edge.targets.gate import Gate, GateOptions
    from faceptor_edge.targets.report import write_gate_report

    user = _user_student(pytestconfig) is not None
    option = pytestconfig.getoption
    options = GateOptions(images=option("images") or ("real" if user else "synthetic"),
                          count=option("count") or (112 if user else 16), teacher=option("teacher"),
                          min_gap=option("min_gap"))  # fmt: skip
    judge = Gate(student_dir, options)
    yield judge
    out = option("report") or (artifacts_folder / "parity" if user else tmp_path_factory.mktemp("parity-report"))
    report = judge.report()
    write_gate_report(report, judge.runs, judge.inputs.tasks, out)
    pytestconfig.stash[_REPORT] = (out, report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With --student, pytest's exit code agrees with report.json: a report that did not pass never exits 0."""
    _, report = session.config.stash.get(_REPORT, (None, None))
    user = _user_student(session.config) is not None
    if user and report is not None and not report["passed"] and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from faceptor_edge.targets.gate import gate_table

    out, report = config.stash.get(_REPORT, (None, None))
    if report is not None:
        terminalreporter.write_sep("=", "release gate")
        terminalreporter.write_line(gate_table(report))
        terminalreporter.write_line(f"report: {out / 'report.json'} and {out / 'report.html'}")
