"""The web page: `/` (upload, jobs, player with a highlighted transcript, live captions) and `/static/*`.

The page and its assets never need an API key; the API calls the page makes send the key the user
types in. Files come from the package's `server/web` directory (no build step, nothing from a CDN).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..errors import APIError

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "connect-src 'self' ws: wss:",
        "media-src 'self' blob:",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["web"], include_in_schema=False)


def _assets() -> dict[str, Path]:
    """The files `/static/` serves: exactly those shipped in the web directory (no path is ever joined)."""
    if not WEB_DIR.is_dir():
        return {}
    return {path.name: path for path in WEB_DIR.iterdir() if path.is_file() and path.suffix in MEDIA_TYPES}


ASSETS = _assets()


@router.get("/", summary="The web page")
async def index() -> FileResponse:
    page = ASSETS.get("index.html")
    if page is None:
        raise APIError(404, "the web page is not installed", code="not_found")
    headers = {**_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return FileResponse(page, media_type=MEDIA_TYPES[".html"], headers=headers)


@router.get("/static/{name}", summary="The web page's scripts and styles")
async def static(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None or name == "index.html":
        raise APIError(404, f"no static file {name!r}", code="not_found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=_HEADERS)
