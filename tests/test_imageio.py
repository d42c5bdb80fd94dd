"""The one image loader: formats, bit depths, and every kind of bad input."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from anomaly.errors import ImageTooLargeError, InvalidImageError
from anomaly.imageio import as_image, canonical, decode_image, read_image, to_float_rgb


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_reads_every_format_gray_and_colour(ext):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (40, 30), dtype=np.uint8)
    bgr = np.stack([gray, gray // 2, 255 - gray], axis=2)
    g = decode_image(_encode(ext, gray))
    c = decode_image(_encode(ext, bgr))
    assert g.shape == (40, 30) and g.dtype == np.uint8
    assert c.shape == (40, 30, 3)
    if ext != ".jpg":  # lossless formats come back exactly, colour in RGB order
        np.testing.assert_array_equal(g, gray)
        np.testing.assert_array_equal(c, bgr[:, :, ::-1])


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_kept(ext):
    img = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    out = decode_image(_encode(ext, img))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, img)
    assert to_float_rgb(out).max() <= 1.0 and to_float_rgb(out).shape == (64, 64, 3)


def test_alpha_dropped_and_path_read(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    path = tmp_path / "a.png"
    path.write_bytes(_encode(".png", rgba))
    out = read_image(path)
    assert out.shape == (8, 8, 3) and out[0, 0, 0] == 200


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="cannot read"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_files_refused(ext):
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _encode(ext, img)
    with pytest.raises(InvalidImageError, match="truncated|decoded"):
        decode_image(data[: len(data) // 2])


def test_garbage_refused():
    with pytest.raises(InvalidImageError, match="not a readable image"):
        decode_image(b"hello, this is text not pixels")


def test_unsupported_format_refused():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    with pytest.raises(InvalidImageError, match="unsupported"):
        decode_image(buf.getvalue())


def test_decompression_bomb_refused_before_decoding():
    # A tiny PNG header claiming 30000 x 30000 pixels: refused from the header alone.
    img = np.zeros((30000, 1), np.uint8)
    data = _encode(".png", img)
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(data, max_pixels=10_000)


def test_one_pixel_image_is_fine():
    assert decode_image(_encode(".png", np.zeros((1, 1), np.uint8))).shape == (1, 1)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((4,), np.uint8),
                                 np.zeros((4, 4), np.int32), np.full((2, 2), np.nan, np.float32)])
def test_bad_arrays(bad):
    with pytest.raises(InvalidImageError):
        canonical(bad)


def test_as_image_rejects_other_types():
    with pytest.raises(InvalidImageError):
        as_image(12345)


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint8, 4), (np.uint16, 3), (np.uint16, 4)])
def test_decoded_colour_images_come_back_rgb_without_alpha(dtype, channels):
    # OpenCV decodes BGR(A); the canonical form is RGB, alpha dropped, contiguous.
    top = 255 if dtype == np.uint8 else 65535
    bgr = np.random.default_rng(channels).integers(0, top, (5, 7, channels)).astype(dtype)
    out = canonical(bgr, assume_bgr=True)
    assert out.shape == (5, 7, 3) and out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, bgr[:, :, 2::-1])
