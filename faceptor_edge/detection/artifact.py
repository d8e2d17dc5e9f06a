"""An exported RetinaFace detector (OpenVINO `.xml`, ExecuTorch `.pte`, Core ML `.mlpackage`)
as a `FaceDetector`.

`targets.detector` writes the network alone, at a static 1×3×S×S input, with a metadata
record in the same place and keys as a student artifact's (`input`, `batch_size`, `outputs`),
so the student's runtimes (`backends.openvino`, `backends.executorch`, `backends.coreml`)
load, check and run it unchanged. The input and the decoding around it are
`detection.decoding`'s, the very functions the PyTorch detector uses. Nothing here imports
torch; the ExecuTorch runtime itself does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.backends.artifact import ArtifactError, Runner
from faceptor_edge.backends.formats import format_for_path
from faceptor_edge.detection.decoding import (
    MAX_SIDE,
    NMS_THRESHOLD,
    SCORE_THRESHOLD,
    DetectedFace,
    RetinaFaceConfig,
    anchor_count,
    check_thresholds,
    detector_input,
    faces_from_outputs,
)
from faceptor_edge.errors import UserError

DETECTOR_MODEL = "retinaface-mobilenet0.25"  # the metadata's "model": what tells a detector from a student
OUTPUTS = (("offsets", 4), ("logits", 2), ("landmarks", 10))  # name, values per anchor, in the network's order


def detector_outputs(config: RetinaFaceConfig, side: int) -> list[dict[str, Any]]:
    """The metadata `outputs` of a detector with a side×side input (batch 1)."""
    count = anchor_count(config, side, side)
    return [{"name": name, "shape": [1, count, values]} for name, values in OUTPUTS]


def check_detector_record(record: dict[str, Any], path: Path) -> tuple[RetinaFaceConfig, int]:
    """The config and input side a detector's metadata gives; ArtifactError unless it is a
    RetinaFace detector whose outputs fit its config and side."""
    if record.get("model") != DETECTOR_MODEL:
        raise ArtifactError(f"{path}: not a face detector of ours (metadata model {record.get('model')!r}, "
                            f"expected {DETECTOR_MODEL!r})")  # fmt: skip
    config = RetinaFaceConfig.from_json(record.get("retinaface"), f"{path} metadata")
    shape = record.get("input", {}).get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and shape[:2] == [1, 3] and shape[2] == shape[3]):
        raise ArtifactError(f"{path}: detector input {shape!r} is not 1×3×S×S")
    side = int(shape[2])
    if record.get("outputs") != detector_outputs(config, side):
        raise ArtifactError(f"{path}: detector outputs {record.get('outputs')!r} do not fit a {side}-px input")
    return config, side


@dataclass
class ArtifactDetector:
    """A loaded detector artifact: photo in, faces in the photo's pixels out.

    Attributes:
        runner: The runtime's runner (`run(x) -> {"offsets", "logits", "landmarks"}`).
        config: Anchors, variances and pixel mean, from the artifact's metadata.
        side: The static square input side.
        score_threshold, nms_threshold, max_side: As `RetinaFaceDetector`'s.
    """

    runner: Runner
    config: RetinaFaceConfig
    side: int
    score_threshold: float = SCORE_THRESHOLD
    nms_threshold: float = NMS_THRESHOLD
    max_side: int = MAX_SIDE

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces in `image` (H×W×3 uint8 RGB), highest score first."""
        prepared = detector_input(image, self.config, max_side=self.max_side, side=self.side)
        raw = self.runner.run(prepared.x)
        outputs = tuple(raw[name][0] for name, _ in OUTPUTS)
        return faces_from_outputs(self.config, outputs, prepared, score_threshold=self.score_threshold,
                                  nms_threshold=self.nms_threshold)  # fmt: skip


def load_detector(
    path: str | Path,
    *,
    threads: int | None = None,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
) -> ArtifactDetector:
    """Load, check and ready a detector artifact in its own runtime.

    Raises:
        ArtifactError: Missing, unreadable or not a detector of ours.
        UserError: Its format cannot run on this platform (Core ML off macOS).
    """
    path = Path(path)
    check_thresholds(score_threshold, nms_threshold)
    fmt = format_for_path(path)
    if not fmt.runs_on(sys.platform):
        raise UserError(f"{path}: {fmt.name} detectors run only on {', '.join(fmt.platforms)}")
    runner = fmt.load_runtime().load(path, threads=threads)
    config, side = check_detector_record(runner.metadata, path)
    return ArtifactDetector(runner, config, side, score_threshold, nms_threshold)
