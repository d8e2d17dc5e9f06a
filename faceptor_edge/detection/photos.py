"""Every face in a source of photos, as distillation samples: one way to find faces for every
teacher (a Faceptor checkpoint, the stand-in, the specialists).

- Photo folders (`find_faces`): RetinaFace runs once over every photo, read as `predict`
  reads it (upright, pixel-capped); every face above `min_size` (the side of the 300W-tight
  box of its 5 points, in the photo's own pixels) is a sample, up to `max_faces` per photo,
  most confident first; photos without one are counted and skipped. The faces are kept in
  the JSON layout `faceptor-edge predict --json` writes (`FaceIndex.to_json`), so a run's
  faces can be reused, or brought from another detector (`FaceIndex.read`).
- Folders of already aligned crops (`aligned_faces`): each image is one face whose 5 points
  the alignment fixes (`ALIGNMENTS`); nothing is detected.
- Generated portraits (`DetectedSource`): one face each, the most confident detection, found
  as the image is made (a second pass would generate every image twice); an image with none
  is masked out of training and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceptor_edge.data import FaceSample, FolderSource
from faceptor_edge.detection.detector import DetectedFace, FaceDetector, RetinaFaceDetector, face_from_json
from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_json, read_json
from faceptor_edge.images import ImageError
from faceptor_edge.preprocess import ARCFACE_TEMPLATE_112, box_from_points

MAX_FACES = 16  # per photo: keeps a group photo's faces, bounds a crowd's
MIN_FACE_SIZE = 40.0  # px: the 300W-tight box side; smaller faces are upscaled >5× into the 256-px crop
DETECT_PIXELS = 4_000_000  # photos are read this small for detection (RetinaFace looks at ≤ 1024 px anyway)
_SAVE_EVERY = 500  # photos between saves of a detection pass in progress


@dataclass(frozen=True, eq=False)
class PhotoFace:
    """One face of one photo, in the upright photo's original pixels."""

    photo: int
    face: DetectedFace


@dataclass
class FaceIndex:
    """The faces of every photo of a folder (photo name -> faces, most confident first; photos
    that could not be read map to their problem instead).

    JSON layout: the one `faceptor-edge predict --json` writes, `{"images": [{"image": path,
    "error": null | why, "faces": [{"box", "points5", "score", ...}]}]}`, coordinates in the
    upright photo's original pixels; keys other than `box`, `points5` and `score` (a model's
    predictions) are ignored.
    """

    faces: dict[str, list[DetectedFace]]
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        images = [{"image": name, "error": None,
                   "faces": [{"box": [round(v, 2) for v in f.box], "score": round(f.score, 4),
                              "points5": np.round(f.points5, 2).tolist()} for f in faces]}
                  for name, faces in self.faces.items()]  # fmt: skip
        images += [{"image": name, "error": why, "faces": []} for name, why in self.errors.items()]
        return {"detector": "retinaface-mobilenet0.25", "images": images}

    @classmethod
    def read(cls, path: str | Path, root: Path | None = None) -> FaceIndex:
        """Faces from a JSON file in `predict --json`'s layout; image paths are taken relative to
        `root` when they lie under it (predict records the paths it was given).

        Raises:
            UserError: Not readable JSON, or not that layout.
        """
        where = f"face file '{path}'"
        content = read_json(path, where)
        images = content.get("images") if isinstance(content, dict) else None
        if not isinstance(images, list) or not all(isinstance(i, dict) and "image" in i for i in images):
            raise UserError(f"{where}: expected predict --json's layout, {{\"images\": [{{\"image\": path, "
                            "\"faces\": [...]}]}")  # fmt: skip
        index = cls({})
        for i, record in enumerate(images):
            name = _relative(str(record["image"]), root)
            if record.get("error"):
                index.errors[name] = str(record["error"])
                continue
            faces = record.get("faces") or []
            if not isinstance(faces, list):
                raise UserError(f"{where}, image {i}: 'faces' must be a list")
            index.faces[name] = [face_from_json({k: face[k] for k in ("box", "points5", "score") if k in face},
                                                f"{where}, image {i}, face {j}")
                                 for j, face in enumerate(faces) if isinstance(face, dict)]  # fmt: skip
        return index

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_json(), indent=1)


def find_faces(
    photos: FolderSource,
    *,
    cache: Path | None = None,
    given: FaceIndex | None = None,
    detector: FaceDetector | None = None,
    workers: int = 0,
) -> FaceIndex:
    """The faces of every photo: from `given` where it names the photo, else detected.

    A detection pass saves its progress to `cache` (a JSON file in `FaceIndex`'s layout) every
    few hundred photos and resumes from it, so an interrupted run detects each photo once.

    Args:
        photos: The folder.
        cache: Where the detections are kept between runs (None: nowhere).
        given: Faces found elsewhere (`FaceIndex.read`).
        detector: Default: RetinaFace from the installed weights.
        workers: Processes that read and detect (0: this one).
    """
    index = FaceIndex.read(cache) if cache is not None and cache.is_file() else FaceIndex({})
    if given is not None:
        unknown = sorted((set(given.faces) | set(given.errors)) - {photos.name(i) for i in range(len(photos))})
        if unknown:
            raise UserError(f"the face file names {len(unknown)} photo(s) that are not in '{photos.root}', e.g. "
                            f"'{unknown[0]}' (paths relative to the folder)")  # fmt: skip
        index.faces.update(given.faces)
        index.errors.update(given.errors)
    todo = [i for i in range(len(photos)) if photos.name(i) not in index.faces and photos.name(i) not in index.errors]
    if not todo:
        return index
    loader = torch.utils.data.DataLoader(_Detecting(photos, todo, detector), batch_size=None, num_workers=workers)
    for done, (name, faces, error) in enumerate(tqdm(loader, desc="finding faces", unit="photo", total=len(todo)), 1):
        if error is None:
            index.faces[name] = faces
        else:
            index.errors[name] = error
        if cache is not None and (done % _SAVE_EVERY == 0 or done == len(todo)):
            index.write(cache)
    return index


class _Detecting(torch.utils.data.Dataset):
    """Photo `todo[i]` read small and its faces found, in a loader worker."""

    def __init__(self, photos: FolderSource, todo: list[int], detector: FaceDetector | None) -> None:
        self.photos, self.todo, self.detector = photos, todo, detector

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> tuple[str, list[DetectedFace], str | None]:
        if torch.utils.data.get_worker_info() is not None:  # a loader worker: one thread, as many as workers
            torch.set_num_threads(1)
        if self.detector is None:
            self.detector = RetinaFaceDetector.from_package()
        index = self.todo[i]
        try:
            photo = self.photos.photo(index, max_pixels=DETECT_PIXELS)  # read small: detection needs no more
        except ImageError as error:
            return self.photos.name(index), [], str(error)
        back = 1.0 / photo.scale  # detections in the original photo's pixels
        faces = [DetectedFace(tuple(v * back for v in f.box), f.points5 * back, f.score)
                 for f in self.detector.detect(photo.pixels)]  # fmt: skip
        return self.photos.name(index), faces, None


def face_size(face: DetectedFace) -> float:
    """Side of the 300W-tight box of a face's 5 points, in its photo's pixels."""
    x1, _, x2, _ = box_from_points(face.points5)
    return x2 - x1


class PhotoFaces:
    """A `FaceSource` with one sample per face of a folder's photos (`faces_of`).

    Sample i is face i's whole photo (upright, pixel-capped) with the face's 5 points in its
    pixels and no box: the student's crop is framed on the points, as `predict` frames it.
    """

    def __init__(self, photos: FolderSource, faces: Sequence[PhotoFace], identity: str) -> None:
        self.photos, self.faces, self._identity = photos, list(faces), identity
        seen: dict[int, int] = {}
        self._ranks = []  # each face's place among its photo's faces (1 = most confident)
        for face in self.faces:
            seen[face.photo] = seen.get(face.photo, 0) + 1
            self._ranks.append(seen[face.photo])

    def __len__(self) -> int:
        return len(self.faces)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.photos.fingerprint()}:{self._identity}".encode()).hexdigest()

    @property
    def manifest(self) -> list[dict]:
        return self.photos.manifest

    def batch(self, indices: Sequence[int]) -> list[FaceSample]:
        loaded: dict[int, Any] = {}  # each photo read once per batch
        samples = []
        for i in indices:
            face = self.faces[i]
            if face.photo not in loaded:
                loaded[face.photo] = self.photos.photo(face.photo)
            photo = loaded[face.photo]
            points = (face.face.points5 * photo.scale).astype(np.float32)
            samples.append(FaceSample(index=i, image=photo.pixels, box=None, points5=points,
                                      name=f"{self.photos.name(face.photo)}#{self._ranks[i]}"))  # fmt: skip
        return samples


def faces_of(
    photos: FolderSource, index: FaceIndex, members: Sequence[int], *, max_faces: int, min_size: float
) -> tuple[list[PhotoFace], dict[str, int]]:
    """The sample faces of the photos `members` (positions in `photos`) and what was found:
    {"photos", "faces", "photos_without_faces", "unreadable"}."""
    faces, empty, unreadable = [], 0, 0
    for i in members:
        name = photos.name(i)
        if name in index.errors:
            unreadable += 1
            continue
        kept = sorted((f for f in index.faces.get(name, []) if face_size(f) >= min_size), key=lambda f: -f.score)
        empty += not kept
        faces += [PhotoFace(i, face) for face in kept[:max_faces]]
    counts = {"photos": len(members), "faces": len(faces), "photos_without_faces": empty, "unreadable": unreadable}
    return faces, counts


def _relative(name: str, root: Path | None) -> str:
    """A recorded image path as a path relative to `root` with '/', when it lies under it."""
    if root is None:
        return name
    path = Path(name)
    for base in (root, root.resolve()):
        try:
            return (path if path.is_absolute() else Path.cwd() / path).resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return path.as_posix()


def _celeba_hq_points() -> np.ndarray:
    """Where a frontal face's 5 points (the ArcFace template) fall in its CelebA-HQ alignment."""
    from faceptor_edge.frames import FRAMES

    template = np.asarray(ARCFACE_TEMPLATE_112, np.float64)
    return FRAMES["celeba-hq"].frame(template, 1024).image_to_crop(template)


# Pre-aligned crops: where the 5 points of a face lie in an aligned image, in pixels of its
# side (pixel centres on integers).
ALIGNMENTS = {
    # InsightFace's ArcFace template (112×112 recognition crops: MS1MV3, the verification sets).
    "arcface112": (np.asarray(ARCFACE_TEMPLATE_112), 112),
    # CelebA-HQ (and FFHQ, aligned the same way), of a frontal face; a face turned away moves
    # its points, so this frames each face about as Karras et al. did, not exactly.
    "celeba-hq": (_celeba_hq_points(), 1024),
}


def aligned_points(alignment: str, width: int, height: int) -> np.ndarray:
    """5×2 points of a face in a `width`×`height` image aligned as `alignment` says."""
    if alignment not in ALIGNMENTS:
        raise UserError(f"unknown alignment {alignment!r}; choose from {', '.join(sorted(ALIGNMENTS))}")
    points, side = ALIGNMENTS[alignment]
    return (points + 0.5) * np.array([width, height]) / side - 0.5


def aligned_faces(photos: FolderSource, alignment: str, members: Sequence[int]) -> tuple[list[PhotoFace], dict]:
    """One face per image of a folder of aligned crops (`ALIGNMENTS`), nothing detected."""
    faces, unreadable = [], 0
    for i in members:
        try:
            photo = photos.photo(i)
        except ImageError:
            unreadable += 1
            continue
        width, height = photo.original_size
        points = aligned_points(alignment, width, height)
        faces.append(PhotoFace(i, DetectedFace(box_from_points(points), points, 1.0)))
    counts = {"photos": len(members), "faces": len(faces), "photos_without_faces": 0, "unreadable": unreadable}
    return faces, counts


class DetectedSource:
    """A source of generated portraits whose samples get the 5 points of their most confident
    detection; an image with no face keeps none (distillation masks it out and counts it).
    Samples that already carry a box or points keep them."""

    def __init__(self, source: Any, detector: FaceDetector | None = None) -> None:
        self.source = source
        self._detector = detector

    def __len__(self) -> int:
        return len(self.source)

    def fingerprint(self) -> str:
        return f"{self.source.fingerprint()}+retinaface-mobilenet0.25"

    def batch(self, indices: Sequence[int]) -> list[FaceSample]:
        if self._detector is None:
            self._detector = RetinaFaceDetector.from_package()
        samples = []
        for sample in self.source.batch(indices):
            if sample.box is None and sample.points5 is None and sample.problem is None:
                faces = self._detector.detect(sample.image)
                if faces:
                    sample = dataclasses.replace(sample, points5=faces[0].points5.astype(np.float32))
            samples.append(sample)
        return samples
