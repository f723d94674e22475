"""Upload decoding: every accepted kind of image, and every refusal, on real encoded bytes."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from app.core.decode import (
    SUPPORTED_FORMATS,
    EmptyUploadError,
    NotAnImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
    decode_upload,
    read_header,
)
from model_zoo.images import load_image

LIMIT = 40_000_000


def pil(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def rgb(width: int = 64, height: int = 48) -> Image.Image:
    """A left-to-right red ramp over a constant green, so orientation and channels can be checked."""
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    array = np.stack([ramp, np.full_like(ramp, 120), np.zeros_like(ramp)], axis=-1)
    return Image.fromarray(array, "RGB")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A small PNG claiming width x height (the start of its zlib stream only): a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "data", "fmt"),
    [
        ("jpeg", lambda: pil(rgb(), "JPEG", quality=95), "JPEG"),
        ("png", lambda: pil(rgb(), "PNG"), "PNG"),
        ("webp", lambda: pil(rgb(), "WEBP", lossless=True), "WEBP"),
        ("bmp", lambda: pil(rgb(), "BMP"), "BMP"),
        ("tiff", lambda: pil(rgb(), "TIFF"), "TIFF"),
        ("gif", lambda: pil(rgb().convert("P"), "GIF"), "GIF"),
        ("cmyk jpeg", lambda: pil(rgb().convert("CMYK"), "JPEG"), "JPEG"),
        ("palette png", lambda: pil(rgb().convert("P"), "PNG"), "PNG"),
        ("rgba png", lambda: pil(rgb().convert("RGBA"), "PNG"), "PNG"),
        ("gray png", lambda: pil(rgb().convert("L"), "PNG"), "PNG"),
        ("gray+alpha png", lambda: pil(rgb().convert("LA"), "PNG"), "PNG"),
        ("16-bit gray png", lambda: cv2.imencode(".png", np.full((48, 64), 40000, np.uint16))[1].tobytes(), "PNG"),
        ("16-bit color png", lambda: cv2.imencode(".png", np.full((48, 64, 3), 40000, np.uint16))[1].tobytes(), "PNG"),
        ("16-bit tiff", lambda: pil(Image.new("I;16", (64, 48), 30000), "TIFF"), "TIFF"),
        ("bilevel png", lambda: pil(rgb().convert("1"), "PNG"), "PNG"),
    ],
)
def test_accepted_images_decode_to_bgr_uint8_like_the_cli(name, data, fmt):
    payload = data()
    decoded = decode_upload(payload, max_pixels=LIMIT)
    assert decoded.header.format == fmt
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == (48, 64, 3)
    # the service sees exactly the pixels `attnzoo predict` (model_zoo.images) sees
    np.testing.assert_array_equal(decoded.pixels, load_image(payload))


def test_color_channels_are_bgr():
    decoded = decode_upload(pil(rgb(), "PNG"), max_pixels=LIMIT)
    assert decoded.pixels[0, -1].tolist() == [0, 120, 255]  # B, G, R at the right edge


def test_exif_orientation_is_applied():
    image = rgb(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    decoded = decode_upload(pil(image, "JPEG", quality=95, exif=exif.tobytes()), max_pixels=LIMIT)
    assert (decoded.header.width, decoded.header.height) == (64, 48)  # as stored
    assert decoded.pixels.shape == (64, 48, 3)  # as displayed
    # after the rotation the red ramp runs top to bottom
    red = decoded.pixels[:, 24, 2].astype(int)
    assert red[0] < 30 and red[-1] > 225


def test_gif_first_frame():
    frames = [Image.new("RGB", (32, 32), color) for color in [(255, 0, 0), (0, 255, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_upload(buffer.getvalue(), max_pixels=LIMIT)
    assert decoded.pixels[0, 0].tolist() == [0, 0, 255]  # red, the first frame


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 4000), (4000, 1)])
def test_tiny_and_extreme_aspect_images_decode(width, height):
    decoded = decode_upload(pil(Image.new("RGB", (width, height), (1, 2, 3)), "PNG"), max_pixels=LIMIT)
    assert decoded.pixels.shape == (height, width, 3)


def test_empty_body_is_refused():
    with pytest.raises(EmptyUploadError):
        decode_upload(b"", max_pixels=LIMIT)


@pytest.mark.parametrize(
    "payload",
    [b"hello, this is text and not an image", b"\x00" * 1000, b"\xff\xd8\xff", b"%PDF-1.4\n%..."],
)
def test_not_an_image_is_refused(payload):
    with pytest.raises(NotAnImageError, match="not a recognised image"):
        decode_upload(payload, max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF"])
def test_truncated_images_are_refused(fmt):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8), "RGB")
    payload = pil(image, fmt)
    with pytest.raises(NotAnImageError):
        decode_upload(payload[: len(payload) // 2], max_pixels=LIMIT)


def test_corrupt_pixel_data_is_refused():
    payload = bytearray(pil(rgb(256, 256), "PNG"))
    payload[100:400] = b"\x00" * 300  # inside the IDAT stream
    with pytest.raises(NotAnImageError, match="could not be decoded"):
        decode_upload(bytes(payload), max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA"])
def test_unsupported_formats_name_the_supported_ones(fmt):
    with pytest.raises(UnsupportedFormatError) as refused:
        decode_upload(pil(rgb(), fmt), max_pixels=LIMIT)
    for supported in SUPPORTED_FORMATS:
        assert supported in str(refused.value)


def test_too_many_pixels_is_refused_from_the_header_alone():
    bomb = png_bomb(10_000, 10_000)  # 100 MP (300 MB decoded) in a few dozen bytes
    with pytest.raises(TooManyPixelsError) as refused:
        read_header(bomb, max_pixels=LIMIT)
    assert "10000x10000 = 100000000 pixels" in str(refused.value)
    with pytest.raises(TooManyPixelsError):
        decode_upload(bomb, max_pixels=LIMIT)


def test_pixel_limit_is_the_setting():
    payload = pil(rgb(64, 48), "PNG")
    assert decode_upload(payload, max_pixels=64 * 48).pixels.shape == (48, 64, 3)
    with pytest.raises(TooManyPixelsError, match="limit is 3071 pixels"):
        decode_upload(payload, max_pixels=64 * 48 - 1)


def test_pillow_bomb_guard_becomes_too_many_pixels():
    with pytest.raises(TooManyPixelsError, match="exceeds limit"):
        read_header(png_bomb(200_000, 200_000), max_pixels=10**12)  # above Pillow's own hard limit


def test_random_bytes_never_escape_as_other_errors():
    rng = np.random.default_rng(1)
    seeds = [pil(rgb(), "PNG"), pil(rgb(), "JPEG"), pil(rgb(), "GIF"), pil(rgb(), "BMP")]
    for trial in range(200):
        payload = bytearray(seeds[trial % len(seeds)])
        for _ in range(8):
            payload[int(rng.integers(0, len(payload)))] = int(rng.integers(0, 256))
        try:
            decoded = decode_upload(bytes(payload), max_pixels=LIMIT)
        except (NotAnImageError, UnsupportedFormatError, TooManyPixelsError):
            continue
        assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 3


@pytest.mark.parametrize(
    "payload",
    [
        b"hello",
        b"\x00" * 64,
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"II*\x00\x08\x00\x00\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"BM" + b"\x00" * 20,
        pil(rgb(), "PNG")[:40],
        pil(rgb(), "JPEG")[:40],
    ],
)
def test_refusals_never_show_a_python_repr(payload):
    with pytest.raises(NotAnImageError) as refused:
        decode_upload(payload, max_pixels=LIMIT)
    assert "object at 0x" not in str(refused.value)
    assert str(refused.value).startswith("not a recognised image")
