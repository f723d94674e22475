"""GET /docs (Swagger UI) and /redoc (ReDoc), with every asset served by this service (no CDN).

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN, so they are blank on a machine
without internet. These are the same pages (FastAPI's ``get_swagger_ui_html`` / ``get_redoc_html``,
its documented recipe for self-hosted docs assets) pointing at copies under :data:`ASSETS_PATH`.

Why the PyPI package ``fastapi-offline`` for the assets: it ships Swagger UI's and ReDoc's
release bundles (Swagger UI 5.32 in 1.7.7) inside the wheel, so ``pip install`` brings them like any
dependency, with no vendoring script or npm step of our own. Its ``FastAPIOffline`` factory is not
used: it builds a plain ``FastAPI`` (not our ``AttnzooAPI``) and requires ``openapi_url``, so
``ATTNZOO_DOCS=false`` could not turn it off.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs-assets"  # Swagger UI's and ReDoc's files, from the fastapi-offline package
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON = "swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"
# No online validator badge (Swagger UI would send the spec to validator.swagger.io).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
# Nothing from elsewhere, even online: ReDoc's bundle shows a "by Redocly" logo from its CDN, which
# this refuses (the logo hides itself). The bundles need inline scripts and styles, eval (ReDoc's
# schema compiler) and blob: workers (ReDoc's search); all of it from this server.
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(tags=["docs"], include_in_schema=False)


def assets() -> StaticFiles:
    """The docs assets, to mount at :data:`ASSETS_PATH`."""
    return StaticFiles(directory=ASSETS_DIR)


def _here(request: Request, path: str) -> str:
    """``path`` on this server, behind a proxy's root path too."""
    return f"{request.scope.get('root_path', '')}{path}"


def _self_only(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(DOCS_HEADERS)
    return page


# The two pages call FastAPI's two builders with their own options; alike in shape only.
@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    return _self_only(
        get_swagger_ui_html(
            openapi_url=_here(request, request.app.openapi_url),
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=_here(request, f"{ASSETS_PATH}/{SWAGGER_JS}"),
            swagger_css_url=_here(request, f"{ASSETS_PATH}/{SWAGGER_CSS}"),
            swagger_favicon_url=_here(request, f"{ASSETS_PATH}/{FAVICON}"),
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
    )


@router.get(REDOC_PATH)
async def redoc(request: Request) -> HTMLResponse:
    return _self_only(
        get_redoc_html(
            openapi_url=_here(request, request.app.openapi_url),
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=_here(request, f"{ASSETS_PATH}/{REDOC_JS}"),
            redoc_favicon_url=_here(request, f"{ASSETS_PATH}/{FAVICON}"),
            with_google_fonts=False,
        )
    )
