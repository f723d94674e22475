"""/docs and /redoc: every asset they reference is served by the service itself (they work offline)."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from app.main import create_app
from tests.app.conftest import MISSING_VARIANT


class AssetReferences(HTMLParser):
    """Every ``src``/``href``/``spec-url`` of an HTML page, and the ``url:`` of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls += [part.split("'")[0] for part in data.split("url: '")[1:]]  # SwaggerUIBundle({url: '...'})


def references(html: str) -> list[str]:
    parser = AssetReferences()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/docs-assets/favicon.png", "/openapi.json"}),
        ("/redoc", {"/docs-assets/redoc.standalone.js", "/docs-assets/favicon.png", "/openapi.json"}),
    ],
)
def test_docs_pages_reference_only_assets_the_service_serves(client, page, expected):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    urls = set(references(response.text))
    assert expected <= urls, urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
    assert "cdn" not in response.text.lower() and "fonts.googleapis" not in response.text


def test_docs_assets_have_their_content_types(client):
    for name, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css"), ("redoc.standalone.js", "javascript")):
        response = client.get(f"/docs-assets/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"], name
        assert len(response.content) > 100_000  # the real bundle, not a stub


@pytest.mark.anyio
async def test_docs_off_serves_neither_pages_nor_assets(zoo):
    app = create_app(zoo.settings(variants=[MISSING_VARIANT], docs=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui.css"):
            assert (await http.get(path)).status_code == 404, path
