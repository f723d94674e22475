"""Request body → image bytes: a multipart ``file`` (or ``image``) field, or the raw body.

The body size limit is enforced while the body streams in (``middleware.BodyLimitMiddleware``,
``ATTNZOO_MAX_BODY_BYTES``): a request announcing or sending more is answered 413 without being
read whole.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request

from .decode import EmptyUploadError, UploadError

# The multipart field names accepted for the image: ``file`` (FastAPI's and curl's usual name) and
# ``image`` (what Roboflow's and many other detection clients send); one file per request.
FILE_FIELDS = ("file", "image")
FILE_FIELDS_TEXT = " or ".join(map(repr, FILE_FIELDS))  # for messages and the OpenAPI docs
RAW_MEDIA_TYPES = ("image/*", "application/octet-stream")


class BodyTooLargeError(UploadError):
    """The request body is (or announces itself) longer than the limit."""

    def __init__(self, max_bytes: int, announced: int | None = None) -> None:
        size = f"announces {announced} bytes" if announced is not None else "is longer"
        super().__init__(f"the request body {size}; the limit is {max_bytes} bytes (ATTNZOO_MAX_BODY_BYTES)")


class UnsupportedMediaTypeError(UploadError):
    def __init__(self, media_type: str) -> None:
        super().__init__(
            f"Content-Type {media_type!r} is not accepted; send the image as multipart/form-data field "
            f"{FILE_FIELDS_TEXT} (curl -F file=@image.jpg) or as the raw body with Content-Type "
            "image/* or application/octet-stream (curl --data-binary @image.jpg -H 'Content-Type: image/jpeg')"
        )
        self.media_type = media_type


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_image_bytes(request: Request) -> bytes:
    """The uploaded image's bytes.

    Raises:
        UnsupportedMediaTypeError, EmptyUploadError; BodyTooLargeError past the body limit.
    """
    media_type = media_type_of(request)
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            upload = next((form[name] for name in FILE_FIELDS if isinstance(form.get(name), UploadFile)), None)
            if upload is None:
                raise EmptyUploadError(f"the multipart body has no file field {FILE_FIELDS_TEXT}")
            return await upload.read()
    if media_type in ("", "application/octet-stream") or media_type.startswith("image/"):
        return await request.body()
    raise UnsupportedMediaTypeError(media_type)
