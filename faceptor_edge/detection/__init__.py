"""Finding faces in photos: RetinaFace, faces given by another detector; `photos` turns the
faces of a photo source into distillation samples."""

from faceptor_edge.detection.detector import (
    INSTALL_HINT,
    DetectedFace,
    FaceDetector,
    GivenFaces,
    RetinaFaceDetector,
    detector_available,
    keep_after_nms,
    weights_path,
)

__all__ = [
    "INSTALL_HINT",
    "DetectedFace",
    "FaceDetector",
    "GivenFaces",
    "RetinaFaceDetector",
    "detector_available",
    "keep_after_nms",
    "weights_path",
]
