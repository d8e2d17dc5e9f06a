"""Face image sources for distillation, calibration and evaluation.

Sources share one small interface (`FaceSource`): `FolderSource` reads photos
from a directory as `predict` does (upright, pixel-capped; the faces in them are found by
`faceptor_edge.detection.photos`); `SyntheticSource` draws pre-cropped faces from the `gan-face-generate`
DCGAN, reproducibly per index (`faceptor_edge.stylegan.StyleGANSource` draws
photo-like portraits the same way). `open_source` picks one from a command-line spec.
All return `FaceSample`s holding H×W×3 uint8 RGB images.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from faceptor_edge.errors import UserError
from faceptor_edge.images import DEFAULT_MAX_PIXELS, ImageError, Photo, load_photo

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
GAN_INSTALL = "pip install --no-deps gan-face-generate==1.1.1"

# Seeds of the synthetic faces each check draws, all distinct, so no check sees another's
# faces; distillation draws its training and held-out faces from --seed and --seed + 1.
CALIBRATION_SEED = 10_000  # int8 calibration crops
CHECK_SEED = 20_000  # parity checks after export and in `faceptor-edge parity`
VALIDATION_SEED = 30_000  # OpenVINO accuracy control's validation faces
BENCH_SEED = 40_000  # the benchmark's end-to-end face
_PROGRESS_ABOVE = 50  # files; smaller folders scan without a progress bar
_PLACEHOLDER_SIZE = 64  # side of the blank image that stands in for an unreadable one
_GAN_BATCH = 16  # faces per generator call
_GAN_SIZE = 64  # side of the DCGAN's output
_GAN_LATENT = 100  # length of the DCGAN's noise vector
_SEED_STRIDE = 1_000_003  # face i of seed s uses noise seed s * stride + i

Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class FaceSample:
    """One image and what is known about the face in it.

    Attributes:
        index: Position of the sample in its source.
        image: H×W×3 uint8 RGB pixels.
        box: Face box (x1, y1, x2, y2) in pixels, or None when unknown.
        points5: 5×2 float32 landmarks (x, y) in pixels, or None when unknown: the
            image-left eye, the image-right eye, the nose tip, the image-left and the
            image-right mouth corner.
        name: Where the sample came from (relative path or synthetic id).
        problem: Why the image could not be read, for a placeholder sample (a blank image
            with no face) from an unvalidated folder; None for a real one.
    """

    index: int
    image: np.ndarray
    box: Box | None
    points5: np.ndarray | None
    name: str
    problem: str | None = None


class FaceSource(Protocol):
    """What distillation, calibration and evaluation need from an image source."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> FaceSample: ...

    def __iter__(self) -> Iterator[FaceSample]: ...

    def batch(self, indices: Sequence[int]) -> list[FaceSample]: ...

    def fingerprint(self) -> str: ...


class FolderSource:
    """Face photos in a directory tree.

    Image files (by suffix, case-insensitive) are found recursively and sorted by
    relative path, with their size and modification time (the listing, `manifest`).
    With `validate` each is decoded once at opening, and the ones that cannot be used are
    listed in `skipped` instead of failing the whole folder. Without it (distillation over
    100k+ photos) nothing is decoded until it is used: an unusable image then reads as a
    placeholder sample that names its `problem`. Either way a file that changed since the
    listing is an error. Photos are read as `predict` reads them (`images.load_photo`:
    EXIF orientation applied, at most `max_pixels`); samples carry no face box or points
    (`faceptor_edge.detection.photos` finds the faces).

    Attributes:
        root: The directory.
        skipped: (relative path, reason) for every image file left out by validation.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        convert: bool = False,
        validate: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        """Lists (and with `validate`, checks) the folder.

        Args:
            root: Directory of images.
            convert: Accept greyscale, alpha and 16-bit images by converting them
                (see `load_image`); without it they are unusable.
            validate: Decode every image now and leave out the unusable ones.
            max_pixels: Larger photos are downscaled to this many pixels (`load_photo`).

        Raises:
            UserError: `root` is not a directory, or the folder holds no (validated: no
                readable) image.
        """
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"image folder '{self.root}' does not exist or is not a directory")
        self._convert, self._max_pixels = convert, max_pixels
        listing = _list_images(self.root)
        if not listing:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise UserError(f"image folder '{self.root}' has no image files ({suffixes})")
        self.skipped: list[tuple[str, str]] = []
        names = list(listing)
        if validate:
            names = []
            progress = tqdm(listing, desc="Checking images", unit="image", disable=len(listing) <= _PROGRESS_ABOVE)
            for name in progress:
                try:
                    load_photo(self.root / name, convert=convert, max_pixels=max_pixels)
                except ImageError as error:
                    self.skipped.append((name, str(error)))
                else:
                    names.append(name)
            if not names:
                raise UserError(
                    f"none of the {len(listing)} image files in '{self.root}' can be used; "
                    f"first problem: {self.skipped[0][1]}"
                )
        self._names = names
        self._stats = {name: listing[name] for name in names}
        self._validated = validate

    def __len__(self) -> int:
        return len(self._names)

    def photo(self, index: int, *, max_pixels: int | None = None) -> Photo:
        """Photo `index` as `predict` reads it (`max_pixels`: another pixel limit for this read).

        Raises:
            UserError: The file changed since the listing, or (validated folders) it no longer reads.
            ImageError: It cannot be used (unvalidated folders; `__getitem__` makes a placeholder).
        """
        index = _check_index(index, len(self))
        name = self._names[index]
        path = self.root / name
        if _stat(path) != self._stats[name]:
            raise UserError(f"'{path}' changed or disappeared since the folder was listed; the run uses the "
                            "folder as it was when it started: restore the file, or start again on the new folder")  # fmt: skip
        try:
            return load_photo(path, convert=self._convert, max_pixels=max_pixels or self._max_pixels)
        except ImageError as error:
            if self._validated:
                raise UserError(f"{error} (it was readable when the folder was scanned)") from error
            raise

    def name(self, index: int) -> str:
        """The relative path of photo `index`."""
        return self._names[_check_index(index, len(self))]

    def __getitem__(self, index: int) -> FaceSample:
        index = _check_index(index, len(self))
        try:
            image = self.photo(index).pixels
        except ImageError as error:
            blank = np.zeros((_PLACEHOLDER_SIZE, _PLACEHOLDER_SIZE, 3), np.uint8)
            return FaceSample(index=index, image=blank, box=None, points5=None, name=self._names[index],
                              problem=str(error))  # fmt: skip
        return FaceSample(index=index, image=image, box=None, points5=None, name=self._names[index])

    def __iter__(self) -> Iterator[FaceSample]:
        return (self[index] for index in range(len(self)))

    def batch(self, indices: Sequence[int]) -> list[FaceSample]:
        """Loads several samples.

        Args:
            indices: Sample positions, in any order, repeats allowed.

        Returns:
            The samples, in the order of `indices`.
        """
        return [self[index] for index in indices]

    @property
    def manifest(self) -> list[dict]:
        """The listing of the used files: relative path, size in bytes, mtime in ns."""
        return [{"path": name, "size": size, "mtime_ns": mtime} for name, (size, mtime) in self._stats.items()]

    def fingerprint(self) -> str:
        """Identifies the folder's content as listed, for caching teacher outputs.

        Returns:
            Hex sha256 over the used images' relative paths, sizes and modification
            times, and how they are read (converted, pixel limit).
        """
        digest = hashlib.sha256(b"faceptor-edge folder source v2\n")
        digest.update(json.dumps([self._convert, self._max_pixels]).encode() + b"\n")
        for name, stat in self._stats.items():
            digest.update(json.dumps([name, *stat]).encode() + b"\n")
        return digest.hexdigest()


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None when it is gone."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _list_images(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime in ns) of every image file under `root`, sorted by path."""
    found = {}
    for directory, _, files in os.walk(root):
        for file in files:
            path = Path(directory) / file
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found[path.relative_to(root).as_posix()] = _stat(path)
    return {name: found[name] for name in sorted(found) if found[name] is not None}


class SyntheticSource:
    """Pre-cropped synthetic faces from the `gan-face-generate` DCGAN.

    Face i depends only on `seed` and i, so any subset, in any order and in any
    batch, regenerates the same pixels. The whole image is the face: samples carry
    no box and no landmarks.
    """

    def __init__(self, count: int, *, seed: int = 0, size: int = 256) -> None:
        """Describes the faces; the generator is loaded on first use.

        Args:
            count: Number of faces.
            seed: Chooses the faces; 0 <= seed < 2**32.
            size: Side of the square output images in pixels (64 is the DCGAN's
                native size; larger sizes are bicubic upscales).

        Raises:
            UserError: A bad argument, or `gan-face-generate` is not installed.
        """
        if count < 1:
            raise UserError(f"synthetic face count must be at least 1, got {count}")
        if not 0 <= seed < 2**32:
            raise UserError(f"synthetic face seed must be in [0, 2**32), got {seed}")
        if size < _GAN_SIZE:
            raise UserError(f"synthetic face size must be at least {_GAN_SIZE} pixels, got {size}")
        self.count = count
        self.seed = seed
        self.size = size
        self._weights = _gan_weights_path()
        self._generator: nn.Module | None = None
        self._weights_sha256: str | None = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> FaceSample:
        return self.batch([index])[0]

    def __iter__(self) -> Iterator[FaceSample]:
        for start in range(0, self.count, _GAN_BATCH):
            yield from self.batch(range(start, min(start + _GAN_BATCH, self.count)))

    def batch(self, indices: Sequence[int]) -> list[FaceSample]:
        """Generates several faces, `_GAN_BATCH` per generator call.

        Args:
            indices: Face positions, in any order, repeats allowed.

        Returns:
            The samples, in the order of `indices`; images are size×size×3 uint8 RGB.
        """
        indices = [_check_index(index, self.count) for index in indices]
        samples = []
        for start in range(0, len(indices), _GAN_BATCH):
            chunk = indices[start : start + _GAN_BATCH]
            for index, image in zip(chunk, self._generate(chunk)):
                name = f"synthetic-s{self.seed}-{index}"
                samples.append(FaceSample(index=index, image=image, box=None, points5=None, name=name))
        return samples

    def fingerprint(self) -> str:
        """Identifies the faces for caching teacher outputs.

        Returns:
            Hex sha256 over the generator weights' sha256, seed, count and size.
        """
        if self._weights_sha256 is None:
            self._weights_sha256 = hashlib.sha256(self._weights.read_bytes()).hexdigest()
        recipe = ["faceptor-edge synthetic source v1", self._weights_sha256, self.seed, self.count, self.size]
        return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()

    def _generate(self, indices: list[int]) -> list[np.ndarray]:
        """Runs the DCGAN on the faces' noise and upscales its output."""
        noise = torch.stack([_face_noise(self.seed * _SEED_STRIDE + index) for index in indices])
        generator = self._load_generator()
        # oneDNN picks convolution kernels by batch size, and their float results differ
        # in the last bits; the native kernels compute each sample alone, so a face is
        # bit-identical in any batch. (`mkldnn.flags()` would also reset TF32 and warn.)
        previous = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            with torch.inference_mode():
                faces = generator(noise)  # N×100×1×1 -> N×3×64×64 in [-1, 1]
        finally:
            torch.backends.mkldnn.enabled = previous
        pixels = ((faces.permute(0, 2, 3, 1) + 1.0) * 127.5).numpy()  # N×64×64×3 in [0, 255]
        images = []
        for face in pixels:
            if self.size != _GAN_SIZE:
                face = cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_CUBIC)
            images.append(np.clip(np.rint(face), 0, 255).astype(np.uint8))
        return images

    def _load_generator(self) -> nn.Module:
        """Builds the DCGAN generator and loads its weights, once."""
        if self._generator is None:
            try:
                # The package's __init__ is empty and models.py imports only torch, so this
                # stays clear of the matplotlib/torchvision imports in its other modules.
                from gan_face_generate.models import Generator
            except ImportError as error:
                message = f"cannot import gan_face_generate.models ({error}); reinstall: {GAN_INSTALL}"
                raise UserError(message) from error
            generator = Generator(0, 3, _GAN_LATENT, _GAN_SIZE)
            try:
                checkpoint = torch.load(self._weights, map_location="cpu", weights_only=True)
                generator.load_state_dict(checkpoint["netG_state_dict"])
            except (OSError, RuntimeError, KeyError, TypeError) as error:
                raise UserError(
                    f"DCGAN weights '{self._weights}' cannot be loaded ({error}); reinstall: {GAN_INSTALL}"
                ) from error
            self._generator = generator.eval().requires_grad_(False)
        return self._generator


def open_source(
    spec: str, *, count: int = 0, seed: int = 0, convert: bool = False, validate: bool = True
) -> FolderSource | SyntheticSource:
    """Opens the image source a command line names.

    Args:
        spec: "synthetic" for DCGAN faces, otherwise a directory of images (write
            "./synthetic" for a directory of that name).
        count: Number of synthetic faces; unused for folders.
        seed: Seed of the synthetic faces; unused for folders.
        convert: Convert greyscale, alpha and 16-bit folder images instead of
            skipping them; unused for synthetic faces.
        validate: Decode every folder image at opening (`FolderSource`).

    Returns:
        A `SyntheticSource` or a `FolderSource`.

    Raises:
        UserError: The directory does not exist, or the source cannot be opened.
    """
    if spec == "synthetic":
        return SyntheticSource(count, seed=seed)
    return FolderSource(spec, convert=convert, validate=validate)


def _check_index(index: int, length: int) -> int:
    """Returns `index` as a position in [0, length), counting negatives from the end."""
    if not -length <= index < length:
        raise IndexError(f"sample index {index} is out of range for {length} samples")
    return index % length


def _face_noise(seed: int) -> torch.Tensor:
    """The DCGAN input for one face: 100×1×1 standard normal noise."""
    return torch.randn(_GAN_LATENT, 1, 1, generator=torch.Generator().manual_seed(seed))


def _gan_weights_path() -> Path:
    """Finds the DCGAN weights inside the installed `gan_face_generate` package."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"synthetic faces need the gan-face-generate package; install it with: {GAN_INSTALL}")
    weights = Path(next(iter(spec.submodule_search_locations))) / "weights.tar"
    if not weights.is_file():
        raise UserError(f"gan-face-generate is installed without its weights ('{weights}'); reinstall: {GAN_INSTALL}")
    return weights
