"""Loading and validating RGB images, with one clear error per bad input.

Every model path in faceptor-edge takes H×W×3 uint8 RGB (SPEC §6: the official data
pipelines all feed RGB). Files are decoded with `cv2.IMREAD_UNCHANGED` so the true
format is visible: greyscale, alpha and 16-bit images are refused unless the caller
asks for them to be converted. `load_image` uses pixels as stored, without EXIF
orientation, as PIL's `.convert('RGB')` does in the official 112-px datasets; `load_photo`
reads photos as people took them: EXIF orientation applied, and bounded in pixels so that
memory stays bounded for any photo. `write_png` writes label maps and overlays, atomically.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_bytes

_CONVERT_HINT = "convert it with --convert-images (convert=True in Python)"
DEFAULT_MAX_PIXELS = 40_000_000  # a 40 MP photo decodes to 120 MB of RGB
# Formats without reduced decoding are decoded whole up to this × max_pixels: 120 MP of
# 8-bit RGB (360 MB) keeps `predict` under 2 GB (measured: 1.5 GB for a 100 MP JPEG).
NON_JPEG_DECODE_FACTOR = 3
EXIF_ORIENTATION = 0x0112
# EXIF orientation tag -> the numpy transform that makes the stored pixels upright (PIL's
# ImageOps.exif_transpose: 6 is "rotate 90° clockwise to view", 8 counter-clockwise).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


class ImageError(UserError):
    """An image file or array that faceptor-edge cannot use as H×W×3 uint8 RGB."""


def load_image(path: str | os.PathLike[str], *, convert: bool = False) -> np.ndarray:
    """Reads an image file as RGB.

    Args:
        path: Image file in any format OpenCV decodes (PNG, JPEG, BMP, TIFF, WebP, ...).
        convert: Repeat greyscale to 3 channels (as the official COFW loader does), drop
            an alpha channel (as PIL's `.convert('RGB')` does) and scale 16-bit to 8-bit
            (rounded `x/257`). Without it such images raise `ImageError`.

    Returns:
        H×W×3 uint8 RGB array.

    Raises:
        ImageError: The file is missing, unreadable, empty, not a decodable image, or
            not 8-bit 3-channel (and `convert` is off or cannot help).
    """
    source = f"image file '{path}'"
    return _standardise(_decode(_read(path, source), source, cv2.IMREAD_UNCHANGED), source, convert)


@dataclass(frozen=True)
class Photo:
    """A photo as its owner sees it.

    Attributes:
        pixels: H×W×3 uint8 RGB, upright, at most the pixel limit.
        orientation: The EXIF orientation tag that was applied (1: none or absent).
        original_size: (width, height) of the upright photo before any downscaling.
        scale: pixels' size over original_size (1.0, or less for a downscaled photo).
    """

    pixels: np.ndarray
    orientation: int
    original_size: tuple[int, int]
    scale: float

    def to_json(self) -> dict[str, object]:
        height, width = self.pixels.shape[:2]
        return {"orientation": self.orientation, "original_size": list(self.original_size),
                "analysed_size": [width, height], "scale": round(self.scale, 6)}  # fmt: skip


def load_photo(path: str | os.PathLike[str], *, convert: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Reads a photo upright (EXIF orientation applied) and at most `max_pixels` pixels.

    Larger photos are downscaled (area interpolation): JPEGs are decoded reduced by libjpeg
    (½, ¼ or ⅛, so a 100 MP JPEG never occupies 300 MB), other formats are decoded whole
    and then shrunk, and refused beyond `NON_JPEG_DECODE_FACTOR` × `max_pixels`.

    Raises:
        ImageError: As `load_image`, and for a non-JPEG photo too large to decode.
    """
    from PIL import Image, UnidentifiedImageError

    source = f"image file '{path}'"
    data = _read(path, source)
    try:
        with Image.open(io.BytesIO(data.tobytes())) as header:  # reads the header only
            (width, height), kind, mode = header.size, header.format, header.mode
            orientation = int(header.getexif().get(EXIF_ORIENTATION, 1))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # Pillow cannot read it; OpenCV may
        width = height = 0
        kind, mode, orientation = None, None, 1
    orientation = orientation if orientation in _UPRIGHT else 1
    flags = cv2.IMREAD_UNCHANGED
    if width * height > max_pixels:
        if kind == "JPEG" and mode in ("RGB", "YCbCr", "L"):
            if mode == "L" and not convert:
                raise ImageError(f"{source} is greyscale; {_CONVERT_HINT} to RGB")
            factor = next((f for f in (2, 4, 8) if width * height / f**2 <= max_pixels), 8)
            flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                     8: cv2.IMREAD_REDUCED_COLOR_8}[factor] | cv2.IMREAD_IGNORE_ORIENTATION  # fmt: skip
        elif width * height > NON_JPEG_DECODE_FACTOR * max_pixels:
            raise ImageError(f"{source} is {width}×{height} ({width * height / 1e6:.0f} MP), more than "
                             f"{NON_JPEG_DECODE_FACTOR} × the pixel limit of {max_pixels / 1e6:g} MP for a "
                             f"{kind or 'non-JPEG'} file; raise --max-pixels or shrink it first")  # fmt: skip
    pixels = _UPRIGHT.get(orientation, lambda a: a)(_standardise(_decode(data, source, flags), source, convert))
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if not width:
        height, width = pixels.shape[:2]
    if pixels.shape[0] * pixels.shape[1] > max_pixels:
        shrink = (max_pixels / (pixels.shape[0] * pixels.shape[1])) ** 0.5
        size = (max(1, int(pixels.shape[1] * shrink)), max(1, int(pixels.shape[0] * shrink)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return Photo(np.ascontiguousarray(pixels), orientation, (width, height), pixels.shape[1] / width)


def _read(path: str | os.PathLike[str], source: str) -> np.ndarray:
    try:
        data = np.fromfile(Path(path), dtype=np.uint8)
    except OSError as error:
        raise ImageError(f"{source} cannot be read: {error.strerror or error}") from error
    if data.size == 0:
        raise ImageError(f"{source} is empty (0 bytes)")
    return data


def _decode(data: np.ndarray, source: str, flags: int) -> np.ndarray:
    """Decoded pixels in RGB(A) order (OpenCV decodes colour as BGR(A))."""
    try:
        decoded = cv2.imdecode(data, flags)
    except cv2.error as error:
        raise ImageError(f"{source} is not a decodable image: {error}") from error
    if decoded is None:
        raise ImageError(f"{source} is not an image or is corrupt (OpenCV cannot decode it)")
    if decoded.ndim == 3 and decoded.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2RGB if decoded.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        decoded = cv2.cvtColor(decoded, code, dst=decoded)  # in place: no second copy of a large photo
    return decoded


def check_image(image: np.ndarray, *, convert: bool = False, source: str = "image array") -> np.ndarray:
    """Validates an in-memory RGB image the way `load_image` validates files.

    Args:
        image: H×W×3 uint8 RGB array. With `convert`, also H×W or H×W×1 grey, H×W×2
            grey+alpha, H×W×4 RGBA, or uint16 versions of these.
        convert: Convert grey, alpha and 16-bit input as `load_image` does.
        source: How error messages name the image.

    Returns:
        The image as a C-contiguous H×W×3 uint8 array (the input itself when it
        already is one).

    Raises:
        ImageError: The array is not a usable RGB image.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{source} must be a numpy array, got {type(image).__name__}")
    return _standardise(image, source, convert)


def _standardise(image: np.ndarray, source: str, convert: bool) -> np.ndarray:
    """Checks or converts an RGB-ordered array to H×W×3 uint8."""
    if image.ndim not in (2, 3) or 0 in image.shape:
        raise ImageError(f"{source} has shape {image.shape}; expected a non-empty H×W×3 image")
    if image.dtype == np.uint16:
        if not convert:
            raise ImageError(f"{source} is 16-bit; {_CONVERT_HINT} to 8-bit")
        image = np.rint(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{source} has dtype {image.dtype}; expected 8-bit (uint8) pixels")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels in (1, 2):
        if not convert:
            what = "greyscale" if channels == 1 else "greyscale with alpha"
            raise ImageError(f"{source} is {what}; {_CONVERT_HINT} to RGB")
        grey = image if image.ndim == 2 else image[:, :, 0]
        image = np.repeat(grey[:, :, None], 3, axis=2)
    elif channels == 4:
        if not convert:
            raise ImageError(f"{source} has an alpha channel (RGBA); {_CONVERT_HINT} to RGB")
        image = image[:, :, :3]
    elif channels != 3:
        raise ImageError(f"{source} has {channels} channels; expected 3 (RGB)")
    return np.ascontiguousarray(image)


def write_png(path: Path, pixels: np.ndarray, *, rgb: bool = False) -> None:
    """Write an H×W label map or H×W×3 image as a PNG, atomically (folders made as needed);
    `rgb` marks RGB pixels (OpenCV writes BGR)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if rgb else pixels)
    if not ok:
        raise UserError(f"{path}: could not encode PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data.tobytes())
