"""Loading and validating RGB images, with one clear error per bad input.

Every model path in faceptor-edge takes H×W×3 uint8 RGB (SPEC §6: the official data
pipelines all feed RGB). Files are decoded with `cv2.IMREAD_UNCHANGED` so the true
format is visible: greyscale, alpha and 16-bit images are refused unless the caller
asks for them to be converted. EXIF orientation is not applied; pixels are used as
stored, as PIL's `.convert('RGB')` does in the official 112-px datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from faceptor_edge.errors import UserError

_CONVERT_HINT = "pass convert=True to convert it"


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
    try:
        data = np.fromfile(Path(path), dtype=np.uint8)
    except OSError as error:
        raise ImageError(f"{source} cannot be read: {error.strerror or error}") from error
    if data.size == 0:
        raise ImageError(f"{source} is empty (0 bytes)")
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageError(f"{source} is not a decodable image: {error}") from error
    if decoded is None:
        raise ImageError(f"{source} is not an image or is corrupt (OpenCV cannot decode it)")
    if decoded.ndim == 3 and decoded.shape[2] in (3, 4):
        # OpenCV decodes colour as BGR(A).
        code = cv2.COLOR_BGR2RGB if decoded.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        decoded = cv2.cvtColor(decoded, code)
    return _standardise(decoded, source, convert)


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
