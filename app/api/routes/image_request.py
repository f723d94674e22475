"""What the image routes (``/detect``, ``/compare``, ``/attention``) share: the request body's
documentation, the route options and the detection filters' query parameters.

Each route still declares its own dependencies in its signature, FastAPI's way of saying what it
needs; those signatures look alike (``duplicates`` lists them) and are left so on purpose.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import WithJsonSchema

from model_zoo import COCO_CATEGORY_IDS, COCO_CLASSES

from ..upload import FILE_FIELDS, FILE_FIELDS_TEXT, JSON_IMAGE_FIELD, JSON_MEDIA_TYPE, RAW_MEDIA_TYPES

VARY = {"Vary": "Accept"}  # the Accept header picks JSON or an image

ScoreThrQuery = Annotated[float, Query(ge=0.0, le=1.0, description="keep detections with score > score_thr")]
MaxDetsQuery = Annotated[int | None, Query(ge=0, description="keep at most this many (highest scores first)")]


def _classes_pattern() -> str:
    """What ``parse_classes`` accepts, as a regular expression for the OpenAPI document: COCO names
    (any case) or category ids, comma-separated, blanks around them and empty items ignored."""
    names = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name) for name in COCO_CLASSES]
    ids = [f"0*{category_id}" for category_id in COCO_CATEGORY_IDS]
    item = rf"(?:{'|'.join(names + ids)})"
    return rf"^\s*(?:{item}\s*)?(?:,\s*(?:{item}\s*)?)*$"


# documented precisely; the check itself is parse_classes', whose message lists the valid values
ClassItem = Annotated[str, WithJsonSchema({"type": "string", "pattern": _classes_pattern()})]
ClassesQuery = Annotated[
    list[ClassItem] | None,
    Query(description="keep only these classes: COCO names (person) or category ids (1); repeat or comma-separate"),
]

_BINARY = {"type": "string", "format": "binary"}
IMAGE_REQUEST_BODY = {
    "required": True,
    "description": "the image (JPEG, PNG, WebP, BMP, TIFF, GIF) as the raw body, as multipart field "
    f"{FILE_FIELDS_TEXT} (either name, one file), or base64 in a JSON body's field {JSON_IMAGE_FIELD!r}",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {name: {**_BINARY, "description": f"the image (send {FILE_FIELDS_TEXT})"} for name in FILE_FIELDS},
                "minProperties": 1,  # an empty form carries no image: 400 empty_body
                "maxProperties": 1,
            }
        },
        **{media_type: {"schema": _BINARY} for media_type in RAW_MEDIA_TYPES},
        JSON_MEDIA_TYPE: {
            "schema": {
                "type": "object",
                "properties": {
                    JSON_IMAGE_FIELD: {
                        "type": "string",
                        "format": "byte",
                        "description": "the image, base64-encoded (a data: URL of it too)",
                    }
                },
                "required": [JSON_IMAGE_FIELD],
            }
        },
    },
}

# The route options of an image route: ``@router.post("", ..., openapi_extra=IMAGE_OPENAPI, responses=IMAGE_RESPONSES)``.
IMAGE_OPENAPI: dict[str, Any] = {"requestBody": IMAGE_REQUEST_BODY}
