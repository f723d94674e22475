"""Fuzzing the upload decoder (app/decode.py) with hypothesis: whatever the bytes, decoding either
returns a valid BGR uint8 image within the pixel limit or raises the project's ``UploadError``
(a 4xx for the client), never anything else.

The inputs are small valid images of every supported format (and some the service refuses),
truncated, overwritten, spliced and extended at random, plus raw bytes. Bounded and deterministic:
``EXAMPLES`` cases, derandomized (the same cases every run).
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.core.decode import UploadError, decode_upload

EXAMPLES = 400
MAX_PIXELS = 256 * 256  # small, so that headers claiming more are refused before decoding


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate on load
    return [
        _encoded(rgb, "JPEG", quality=80),
        _encoded(rgb, "JPEG", exif=exif),
        _encoded(rgb, "PNG"),
        _encoded(rgb.convert("RGBA"), "PNG"),
        _encoded(rgb.convert("L"), "PNG"),
        _encoded(Image.fromarray(np.arange(192, dtype=np.uint16).reshape(12, 16) * 300), "PNG"),  # 16-bit gray
        _encoded(rgb, "WEBP"),
        _encoded(rgb, "BMP"),
        _encoded(rgb, "TIFF"),
        _encoded(rgb.convert("CMYK"), "TIFF"),
        _encoded(rgb.convert("P"), "GIF"),
        _encoded(rgb, "ICO"),  # not a supported format
        _encoded(rgb, "PPM"),  # not a supported format
    ]


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["truncate", "overwrite", "insert", "duplicate"]))
        if action == "truncate":
            del data[at:]
        elif action == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(patch)] = patch
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
    return bytes(data)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(mutated(), st.binary(max_size=512)))
def test_only_upload_errors_escape_decoding(data: bytes) -> None:
    try:
        decoded = decode_upload(data, max_pixels=MAX_PIXELS)
    except UploadError:
        return
    pixels = decoded.pixels
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert 1 <= pixels.shape[0] * pixels.shape[1] <= MAX_PIXELS
