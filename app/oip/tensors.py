"""Tensor data of the Open Inference Protocol in its two encodings, shared by both transports.

- **raw**: the elements flattened in row-major order, little-endian, without padding; a BYTES
  element is a 4-byte little-endian length followed by its bytes. The HTTP binary tensor data
  extension and gRPC's ``raw_input_contents`` / ``raw_output_contents`` carry this form.
- **JSON**: an HTTP tensor's ``data`` array, flat or nested in row-major order; a BYTES element
  is a base64 string, a number a JSON number.
- **typed**: gRPC's ``InferTensorContents`` (``bytes_contents`` for BYTES), flattened.

Only what this service exchanges is here: BYTES in (encoded images), INT32 and FP32 out.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import TensorDataError

_LENGTH = struct.Struct("<I")  # the length prefix of a raw BYTES element
DATATYPES = {np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}  # numpy dtype → v2 datatype


def element_count(shape: Sequence[int]) -> int:
    """Elements of a tensor of ``shape`` (1 for a scalar shape ``[]``)."""
    return math.prod(shape)


def bytes_from_raw(name: str, raw: bytes, count: int) -> list[bytes]:
    """The ``count`` elements of a raw BYTES tensor.

    Raises:
        TensorDataError: a length prefix cut short, an element longer than the data, or a number
        of elements other than ``count``.
    """
    view = memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + _LENGTH.size > len(view):
            raise TensorDataError(f"input {name!r}: the raw BYTES data ends inside the 4-byte length of element {len(elements)}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise TensorDataError(
                f"input {name!r}: element {len(elements)} announces {length} bytes, {len(view) - offset} follow"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    _check_count(name, count, len(elements), "raw data")
    return elements


def bytes_from_json(name: str, data: Any, count: int) -> list[bytes]:
    """The ``count`` elements of a BYTES tensor's JSON ``data``: base64 strings, flat or nested.

    Raises:
        TensorDataError: data that is not a list, an element that is not a base64 string, or a
        number of elements other than ``count``.
    """
    if not isinstance(data, list):
        raise TensorDataError(f"input {name!r}: 'data' must be an array of base64 strings")
    elements: list[bytes] = []
    for index, element in enumerate(_flattened(data)):
        if not isinstance(element, str):
            raise TensorDataError(
                f"input {name!r}: BYTES elements in JSON are base64 strings; element {index} is {type(element).__name__}"
            )
        try:
            elements.append(base64.b64decode(element, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise TensorDataError(f"input {name!r}: element {index} is not valid base64 ({exc})") from None
    _check_count(name, count, len(elements), "'data'")
    return elements


def bytes_from_list(name: str, elements: Sequence[bytes], count: int) -> list[bytes]:
    """The ``count`` elements of a BYTES tensor in typed form. Raises TensorDataError (count)."""
    _check_count(name, count, len(elements), "contents")
    return list(elements)


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of an output array (INT32 or FP32)."""
    return DATATYPES[array.dtype]


def to_raw(array: np.ndarray) -> bytes:
    """An INT32/FP32 array as raw tensor data (row-major, little-endian)."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_json(array: np.ndarray) -> list[int] | list[float]:
    """An INT32/FP32 array as a flat JSON ``data`` list; an FP32 element becomes the Python
    float of exactly that float32 value."""
    return array.ravel().tolist()


def _flattened(data: list[Any]) -> Iterator[Any]:
    for item in data:
        if isinstance(item, list):
            yield from _flattened(item)
        else:
            yield item


def _check_count(name: str, expected: int, found: int, where: str) -> None:
    if found != expected:
        raise TensorDataError(f"input {name!r}: its shape holds {expected} elements, its {where} {found}")
