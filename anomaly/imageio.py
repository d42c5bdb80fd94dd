"""One image loader for every path into the project (training, scoring, evaluation, service).

Reads PNG, JPEG, BMP and TIFF, 8- or 16-bit, gray or colour, from a path or from bytes,
and returns a plain numpy array:

* gray images as ``(H, W)``, colour images as ``(H, W, 3)`` in **RGB** order
  (an alpha channel is dropped);
* dtype ``uint8`` or ``uint16``, exactly as stored.

The image header is read first (Pillow, which does not decode pixels to do so) so that a
decompression bomb is refused before any pixel memory is allocated; decoding itself is
done by OpenCV, which keeps 16-bit colour. Truncated PNG and JPEG files are detected by
their missing end markers, because libjpeg only warns on them and returns a grey tail.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image

from anomaly.errors import ImageTooLargeError, InvalidImageError

#: Default cap on decoded pixels (width x height): 64 megapixels, about a 8000 x 8000 image.
DEFAULT_MAX_PIXELS = 64_000_000
#: Default cap on encoded bytes.
DEFAULT_MAX_BYTES = 200 * 1024 * 1024

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

ImageLike = Union[np.ndarray, str, os.PathLike, bytes]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SUPPORTED_FORMATS = {"PNG", "JPEG", "BMP", "TIFF", "MPO"}


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of the image extensions the loader reads."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Read an image file or encoded bytes into an array.

    Args:
        source: A file path, or the encoded bytes of an image file.
        max_pixels: Largest accepted ``width * height``; larger images are refused
            before decoding.
        max_bytes: Largest accepted encoded size.

    Returns:
        Array of shape ``(H, W)`` (gray) or ``(H, W, 3)`` (RGB), dtype uint8 or uint16.

    Raises:
        InvalidImageError: empty, truncated, undecodable or unsupported input.
        ImageTooLargeError: more pixels or bytes than allowed.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "image bytes"
    else:
        path = Path(source)
        label = str(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidImageError(f"cannot read image file {label}: {exc.strerror or exc}") from None
        if size > max_bytes:
            raise ImageTooLargeError(f"{label}: {size} bytes, more than the limit of {max_bytes} bytes")
        data = path.read_bytes()
    return decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes, label=label)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    label: str = "image bytes",
) -> np.ndarray:
    """Decode encoded image bytes; see :func:`read_image` for the contract."""
    if len(data) == 0:
        raise InvalidImageError(f"{label}: empty file (0 bytes); expected a PNG, JPEG, BMP or TIFF image")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{label}: {len(data)} bytes, more than the limit of {max_bytes} bytes")
    fmt, width, height = _peek_header(data, label)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{label}: {width} x {height} = {width * height} pixels, more than the limit of {max_pixels}"
        )
    if width < 1 or height < 1:
        raise InvalidImageError(f"{label}: image has no pixels ({width} x {height})")
    _check_complete(data, fmt, label)
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InvalidImageError(f"{label}: {fmt} data could not be decoded (corrupt or truncated file)")
    return canonical(image, assume_bgr=True, label=label)


def canonical(image: np.ndarray, *, assume_bgr: bool = False, label: str = "image") -> np.ndarray:
    """Bring a decoded or user-supplied array into the loader's canonical form.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array of uint8,
            uint16, bool or float in ``[0, 1]``.
        assume_bgr: Colour channels are in OpenCV's BGR order (decoded files); user
            arrays are taken as RGB.
        label: Name used in error messages.

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` RGB array of dtype uint8 or uint16.

    Raises:
        InvalidImageError: for any other shape or dtype.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"{label}: expected a numpy array, a path or bytes, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InvalidImageError(
            f"{label}: image must have shape (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidImageError(f"{label}: image has no pixels, shape {image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype.kind == "f":
        if not np.all(np.isfinite(image)):
            raise InvalidImageError(f"{label}: float image contains NaN or infinity")
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    elif image.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(f"{label}: expected dtype uint8 or uint16, got {image.dtype}")
    if image.ndim == 3:
        if assume_bgr:
            # OpenCV's own swap: far cheaper than a numpy reversed-channel copy.
            code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
            return cv2.cvtColor(np.ascontiguousarray(image), code)
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def as_image(source: ImageLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Accept an array, a path or bytes and return the canonical array (see :func:`read_image`)."""
    if isinstance(source, np.ndarray):
        image = canonical(source)
        if image.shape[0] * image.shape[1] > max_pixels:
            raise ImageTooLargeError(f"image of shape {image.shape} has more than {max_pixels} pixels")
        return image
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return read_image(source, max_pixels=max_pixels)
    raise InvalidImageError(f"expected an image array, a file path or bytes, got {type(source).__name__}")


def to_float_rgb(image: np.ndarray) -> np.ndarray:
    """Scale a canonical image to float32 RGB in ``[0, 1]``.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 or uint16 array.

    Returns:
        ``(H, W, 3)`` float32 array; gray images are repeated over the three channels.
    """
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    out = image.astype(np.float32) * np.float32(1.0 / scale)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Luminance of a canonical image as float32 in ``[0, 1]``, shape ``(H, W)``."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 2:
        return image.astype(np.float32) * np.float32(1.0 / scale)
    rgb = image.astype(np.float32) * np.float32(1.0 / scale)
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """A canonical image as ``(H, W, 3)`` uint8 RGB, for overlays and display."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a canonical (RGB or gray, uint8/uint16) image as PNG."""
    ok, buf = cv2.imencode(".png", _to_bgr(image))
    if not ok:
        raise InvalidImageError(f"could not encode image of shape {image.shape} as PNG")
    Path(path).write_bytes(buf.tobytes())


def encode_png(image: np.ndarray) -> bytes:
    """Encode a canonical image as PNG bytes."""
    ok, buf = cv2.imencode(".png", _to_bgr(image))
    if not ok:
        raise InvalidImageError(f"could not encode image of shape {image.shape} as PNG")
    return buf.tobytes()


def _to_bgr(image: np.ndarray) -> np.ndarray:
    return image[:, :, ::-1] if image.ndim == 3 else image


def _peek_header(data: bytes, label: str) -> tuple[str, int, int]:
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns; ours below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or "unknown"
                width, height = probe.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{label}: {exc}") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for garbage input
        raise InvalidImageError(
            f"{label}: not a readable image (expected PNG, JPEG, BMP or TIFF, got {len(data)} bytes "
            f"starting {data[:8]!r})"
        ) from None
    if fmt not in _SUPPORTED_FORMATS:
        raise InvalidImageError(f"{label}: unsupported image format {fmt}; expected PNG, JPEG, BMP or TIFF")
    return ("JPEG" if fmt == "MPO" else fmt), int(width), int(height)


def _check_complete(data: bytes, fmt: str, label: str) -> None:
    if fmt == "PNG":
        if not data.startswith(_PNG_SIGNATURE) or b"IEND" not in data[-64:]:
            raise InvalidImageError(f"{label}: truncated PNG file (no IEND chunk at the end)")
    elif fmt == "JPEG":
        # Trailing padding after the end-of-image marker is common; look near the end.
        if b"\xff\xd9" not in data[-4096:]:
            raise InvalidImageError(f"{label}: truncated JPEG file (no end-of-image marker)")
