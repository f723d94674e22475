"""schemathesis against the live app's own OpenAPI document: every operation, with generated
parameters and bodies, valid and invalid, answered over real HTTP by the shared live server.
Every answer must conform to the document: a documented status code, content type, headers and
body schema, no 5xx, valid input accepted and invalid input refused.

Bounded and deterministic: ``MAX_EXAMPLES`` per operation and mode, derandomized (the same cases
every run), no shrinking (a failure shows the first case found).
"""

from __future__ import annotations

import base64
import io

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode

from app.core.decode import SUPPORTED_FORMATS
from app.main import create_app
from app.settings import Settings

MAX_EXAMPLES = 20


def encoded_image(image_format: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 60, 200)).save(buffer, format=image_format)
    return buffer.getvalue()


# The document's image bodies are `format: binary` described as "the image (JPEG, PNG, WebP, BMP,
# TIFF, GIF)"; prose schemathesis cannot read, so its valid binary data are images of those formats
# (by default it would also send a PDF or a ZIP as "valid"). Non-images: test_bad_uploads, test_decode.
VALID_IMAGES = [encoded_image(f, size) for f in SUPPORTED_FORMATS for size in ((1, 1), (64, 48))]
schemathesis.openapi.format("binary", st.sampled_from(VALID_IMAGES))
# The JSON image body's field is `format: byte` (base64) described the same way: base64 of those images.
schemathesis.openapi.format("byte", st.sampled_from([base64.b64encode(image).decode() for image in VALID_IMAGES]))
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def cases_to_generate() -> list[tuple[str, GenerationMode]]:
    """(``METHOD /path``, mode) for every operation the app documents (its OpenAPI, built without
    starting it): valid input for each, invalid input for those that rule some out."""
    document = create_app(Settings(variants=None)).openapi()
    pairs = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            label = f"{method.upper()} {path}"
            pairs.append((label, GenerationMode.POSITIVE))
            if takes_invalid_input(operation):
                pairs.append((label, GenerationMode.NEGATIVE))
    return pairs


def takes_invalid_input(operation: dict) -> bool:
    """Whether the document rules out some input: a body, a required query parameter, or a
    parameter with a type or constraint (an unconstrained string path parameter takes anything)."""
    if operation.get("requestBody"):
        return True
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter["in"] != "path" and parameter.get("required"):
            return True
        if schema.get("type") != "string" or set(schema) - {"type", "title", "description"}:
            return True
    return False


@pytest.fixture(scope="module")
def live_openapi(live_server):
    return schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")


@pytest.mark.parametrize(
    ("label", "mode"),
    cases_to_generate(),
    ids=lambda value: "valid" if value is GenerationMode.POSITIVE else "invalid" if value is GenerationMode.NEGATIVE else value,
)
def test_every_answer_is_documented(live_openapi, live_server, label, mode):
    operation = live_openapi.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live server's document"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def answered_as_documented(case):
        case.call_and_validate(base_url=live_server.base_url, timeout=120)

    answered_as_documented()
