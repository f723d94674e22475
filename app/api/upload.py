"""Request body → image bytes: a multipart ``file`` (or ``image``) field, the raw body, or a JSON
body ``{"image": "<base64>"}`` (a data URL too, as browsers make them).

The body size limit is enforced while the body streams in (``server.middleware.BodyLimitMiddleware``,
``ATTNZOO_MAX_BODY_BYTES``): a request announcing or sending more is answered 413 without being
read whole. The pixel limit and admission apply to the image, whichever body carried it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..core.decode import EmptyUploadError, NotAnImageError, UploadError

# The multipart field names accepted for the image: ``file`` (FastAPI's and curl's usual name) and
# ``image`` (what Roboflow's and many other detection clients send); one file per request.
FILE_FIELDS = ("file", "image")
FILE_FIELDS_TEXT = " or ".join(map(repr, FILE_FIELDS))  # for messages and the OpenAPI docs
RAW_MEDIA_TYPES = ("image/*", "application/octet-stream")
JSON_MEDIA_TYPE = "application/json"
JSON_IMAGE_FIELD = "image"
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)


class UnsupportedMediaTypeError(UploadError):
    def __init__(self, media_type: str) -> None:
        super().__init__(
            f"Content-Type {media_type!r} is not accepted; send the image as multipart/form-data field "
            f"{FILE_FIELDS_TEXT} (curl -F file=@image.jpg), as the raw body with Content-Type "
            "image/* or application/octet-stream (curl --data-binary @image.jpg -H 'Content-Type: image/jpeg'), "
            f'or as JSON {{"{JSON_IMAGE_FIELD}": "<base64>"}} with Content-Type {JSON_MEDIA_TYPE}'
        )
        self.media_type = media_type


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_image_bytes(request: Request) -> bytes:
    """The uploaded image's bytes.

    Raises:
        UnsupportedMediaTypeError, EmptyUploadError, NotAnImageError (a JSON body that carries no
        base64 image); BodyTooLargeError past the body limit.
    """
    media_type = media_type_of(request)
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            upload = next((field for name in FILE_FIELDS if isinstance(field := form.get(name), UploadFile)), None)
            if upload is None:
                raise EmptyUploadError(f"the multipart body has no file field {FILE_FIELDS_TEXT}")
            return await upload.read()
    if media_type in ("", "application/octet-stream") or media_type.startswith("image/"):
        return await request.body()
    if media_type == JSON_MEDIA_TYPE:
        return image_from_json(await request.body())
    raise UnsupportedMediaTypeError(media_type)


def image_from_json(body: bytes) -> bytes:
    """The image of a JSON body ``{"image": "<base64 or data URL>"}``.

    Raises:
        EmptyUploadError (an empty body or image), NotAnImageError (not that JSON, not base64).
    """
    if not body.strip():
        raise EmptyUploadError("the request carries no image (empty JSON body)")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAnImageError(f'the JSON body is not valid JSON ({exc}); send {{"{JSON_IMAGE_FIELD}": "<base64>"}}') from None
    encoded = document.get(JSON_IMAGE_FIELD) if isinstance(document, dict) else None
    if not isinstance(encoded, str):
        raise NotAnImageError(f'the JSON body has no string field "{JSON_IMAGE_FIELD}"; send {{"{JSON_IMAGE_FIELD}": "<base64>"}}')
    data_url = _DATA_URL.match(encoded)
    if data_url is not None:
        encoded = encoded[data_url.end() :]
    try:
        image = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotAnImageError(f'field "{JSON_IMAGE_FIELD}" is not valid base64 ({exc})') from None
    if not image:
        raise EmptyUploadError(f'the request carries no image (field "{JSON_IMAGE_FIELD}" is empty)')
    return image
