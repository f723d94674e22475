"""Uploaded bytes → validated BGR uint8 image, refusing what must not reach the decoder.

Two steps, both pure functions of the bytes (a fuzz target):

1. :func:`read_header` identifies the format and the pixel size with Pillow, which reads only
   the header (``Image.open`` without ``load``). Formats outside :data:`SUPPORTED_FORMATS` and
   images over ``max_pixels`` (decompression bombs) are refused here, before any pixel is decoded.
   :func:`read_headers` does it for every image of a request, whose images share one pixel budget:
   the memory their decoding takes is bounded per request, not per image.
2. :func:`decode_checked` then decodes with OpenCV through ``model_zoo.images``, the decoder of
   record: it applies EXIF orientation, drops alpha, expands gray and scales 16-bit down to 8 bits
   exactly as mmdet's loader does, so the service sees the pixels ``attnzoo predict`` sees.
   OpenCV 4.12 decodes every supported format, GIF (first frame) included.

:func:`decode_upload` is both steps for one image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from model_zoo import decode_image_bytes

# Pillow's format names; MPO is the multi-picture JPEG many phone cameras write.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
_FORMAT_ALIASES = {"MPO": "JPEG"}


class UploadError(ValueError):
    """An upload the service refuses; the message says what was wrong."""


class EmptyUploadError(UploadError):
    pass


class NotAnImageError(UploadError):
    """The bytes are not a recognisable image, or are truncated or corrupt."""


class UnsupportedFormatError(UploadError):
    def __init__(self, image_format: str) -> None:
        super().__init__(f"image format {image_format} is not supported; supported: {', '.join(SUPPORTED_FORMATS)}")
        self.image_format = image_format


class TooManyPixelsError(UploadError):
    """``what`` (e.g. ``image has 100x100 = 10000 pixels``) is over the pixel limit."""

    def __init__(self, what: str, max_pixels: int) -> None:
        super().__init__(f"{what}; the limit is {max_pixels} pixels (ATTNZOO_MAX_PIXELS)")
        self.max_pixels = max_pixels


@dataclass(frozen=True)
class ImageHeader:
    format: str  # one of SUPPORTED_FORMATS
    width: int  # pixels, as stored (before EXIF orientation)
    height: int
    mode: str  # Pillow mode, e.g. "RGB", "CMYK", "P", "I;16"


@dataclass(frozen=True)
class DecodedImage:
    header: ImageHeader
    pixels: NDArray[np.uint8]  # (H, W, 3) BGR uint8, EXIF orientation applied


def read_header(data: bytes, *, max_pixels: int) -> ImageHeader:
    """Identify ``data`` from its header only and check format and pixel count.

    Raises:
        EmptyUploadError, NotAnImageError, UnsupportedFormatError, TooManyPixelsError.
    """
    if not data:
        raise EmptyUploadError("the request carries no image (empty body or empty 'file' field)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
            with Image.open(io.BytesIO(data)) as image:
                header = ImageHeader(str(image.format), int(image.width), int(image.height), str(image.mode))
    except Image.DecompressionBombError as exc:  # beyond Pillow's own hard limit
        raise TooManyPixelsError(f"image has far too many pixels ({_reason(exc)})", max_pixels) from None
    except UnidentifiedImageError:  # its message is the repr of our BytesIO: say what we know instead
        raise NotAnImageError(
            f"not a recognised image ({len(data)} bytes, starting with {_leading_bytes(data)}); "
            f"supported formats: {', '.join(SUPPORTED_FORMATS)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed headers
        raise NotAnImageError(f"not a recognised image ({len(data)} bytes): {_reason(exc)}") from None
    image_format = _FORMAT_ALIASES.get(header.format, header.format)
    if image_format not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(image_format)
    if header.width < 1 or header.height < 1:
        raise NotAnImageError(f"image header says {header.width}x{header.height} pixels")
    if header.width * header.height > max_pixels:
        raise TooManyPixelsError(f"image has {header.width}x{header.height} = {header.width * header.height} pixels", max_pixels)
    return ImageHeader(image_format, header.width, header.height, header.mode)


def read_headers(images: Sequence[bytes], *, max_pixels: int) -> list[ImageHeader]:
    """:func:`read_header` of each of a request's images, whose pixels together must stay within
    ``max_pixels``.

    Raises:
        the errors of :func:`read_header` (the first image that fails); TooManyPixelsError when
        the images together have more pixels than ``max_pixels``.
    """
    headers = [read_header(data, max_pixels=max_pixels) for data in images]
    total = sum(header.width * header.height for header in headers)
    if total > max_pixels:
        raise TooManyPixelsError(f"the request's {len(headers)} images have {total} pixels in all", max_pixels)
    return headers


def decode_checked(data: bytes, header: ImageHeader, *, max_pixels: int) -> NDArray[np.uint8]:
    """Decode ``data``, whose ``header`` :func:`read_header` has checked, with OpenCV (mmdet's
    decoding) into (H, W, 3) BGR uint8.

    Raises:
        NotAnImageError when the pixel data is truncated or corrupt; TooManyPixelsError when the
        decoded image is over ``max_pixels`` after all (a header that lied).
    """
    try:
        pixels = decode_image_bytes(data)
    except Exception as exc:  # noqa: BLE001 - ImageDecodeError, or cv2.error on hostile data
        raise NotAnImageError(f"{header.format} image could not be decoded (truncated or corrupt): {_reason(exc)}") from None
    height, width = pixels.shape[:2]
    if width * height > max_pixels:
        raise TooManyPixelsError(f"image has {width}x{height} = {width * height} pixels", max_pixels)
    return pixels


def decode_upload(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Check ``data`` with :func:`read_header`, then decode it (:func:`decode_checked`).

    Raises:
        the errors of :func:`decode_checked`.
    """
    header = read_header(data, max_pixels=max_pixels)
    return DecodedImage(header, decode_checked(data, header, max_pixels=max_pixels))


def _leading_bytes(data: bytes, count: int = 8) -> str:
    """The first bytes as hex and as text, e.g. ``3c 68 74 6d 6c ("<html")``: enough to tell HTML,
    JSON or a PDF from a damaged image."""
    head = data[:count]
    text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in head)
    return f"{head.hex(' ')} ({text!r})"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
