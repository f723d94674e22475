"""Bad uploads through every image route: a clear 4xx whose text never shows a Python repr."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

REPR_MARK = "object at 0x"  # what a default repr() shows, e.g. <_io.BytesIO object at 0x7f…>


def _encoded(fmt: str) -> bytes:
    pixels = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def _corrupted(fmt: str) -> bytes:
    data = bytearray(_encoded(fmt))
    data[20:400] = b"\xff" * 380
    return bytes(data)


BAD_UPLOADS = {  # name → (bytes, the 4xx status they get)
    "text": (b"hello, this is text and not an image", 422),
    "html": (b"<!doctype html><html><body>404</body></html>", 422),
    "json": (b'{"image": "not here"}', 422),
    "zeros": (b"\x00" * 2048, 422),
    "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", 422),
    "svg": (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", 422),
    "jpeg header only": (b"\xff\xd8\xff\xe0", 422),
    "png signature only": (b"\x89PNG\r\n\x1a\n", 422),
    "gif header only": (b"GIF89a", 422),
    "tiff header only": (b"II*\x00\x08\x00\x00\x00", 422),
    "first 40 bytes of a png": (_encoded("PNG")[:40], 422),
    "half a jpeg": (_encoded("JPEG")[: len(_encoded("JPEG")) // 2], 422),
    "corrupt tiff": (_corrupted("TIFF"), 422),
    "corrupt jpeg": (_corrupted("JPEG"), 422),
    "ico": (_encoded("ICO"), 415),
    "empty": (b"", 400),
}
ROUTES = {  # path → query
    "/detect": {"variant": "attn1111"},
    "/compare": {},
    "/attention": {"variant": "attn1111", "x": 1, "y": 1},
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("how", ["raw", "multipart"])
def test_bad_uploads_get_a_clear_4xx_without_python_reprs(client, route, how):
    for name, (data, status) in BAD_UPLOADS.items():
        if how == "raw":
            response = client.post(route, params=ROUTES[route], content=data, headers={"Content-Type": "application/octet-stream"})
        else:
            response = client.post(route, params=ROUTES[route], files={"image": ("upload.bin", data, "application/octet-stream")})
        assert response.status_code == status, (name, response.text)
        assert REPR_MARK not in response.text, (name, response.text)
        body = response.json()
        assert body["error"] and isinstance(body["detail"], str) and body["detail"], (name, body)


def test_an_unrecognised_upload_says_what_it_starts_with(client):
    response = client.post("/detect", params={"variant": "attn1111"}, content=b"<!doctype html><html>", headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 422 and response.json()["error"] == "invalid_image"
    detail = response.json()["detail"]
    assert detail.startswith("not a recognised image (21 bytes, starting with 3c 21 64 6f 63 74 79 70 ('<!doctyp'))")
    assert "supported formats: JPEG, PNG, WEBP, BMP, TIFF, GIF" in detail
