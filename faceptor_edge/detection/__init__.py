"""Finding faces in photos: RetinaFace, faces given by another detector, detected sources."""

from faceptor_edge.detection.detector import (
    INSTALL_HINT,
    DetectedFace,
    DetectedSource,
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
    "DetectedSource",
    "FaceDetector",
    "GivenFaces",
    "RetinaFaceDetector",
    "detector_available",
    "keep_after_nms",
    "weights_path",
]
