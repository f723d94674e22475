"""GET / (the try-it page) and GET /static/{name} (its script and style sheet), from app/static/.

Everything the page needs is served from here: no CDN, no web font. The Content-Security-Policy
header makes the browser refuse anything else (``'self'`` only, plus ``blob:`` images for the
attention maps the page fetches).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["page"], include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    """One file of app/static/ (no sub-folders, no hidden files)."""
    path = STATIC_DIR / name
    if name.startswith(".") or not path.is_file():
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, headers=_HEADERS)
