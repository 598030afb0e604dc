"""``/dashboard/``: the operators' web page (live sessions, transcripts, latency, cost, documents).

The page and its two static files are public: they hold no data. Everything the page shows it
fetches from the REST API with the API key the operator types in, so what a key may read is
what the page may show. The files are plain HTML, JavaScript and CSS shipped inside the
package (no build step, nothing from a CDN: it works offline), read once when the router is
made.

Every response carries a strict Content-Security-Policy: scripts, styles and connections come
from this server only, and no inline script runs, a second line of defence behind the page's
own rule of inserting server strings as text, never as markup.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

if TYPE_CHECKING:
    from mindbot.api.app import Api

DASHBOARD_PATH = "/dashboard"

FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
"""The dashboard's files (in ``mindbot/dashboard/``) and their media types: nothing else is
served from the folder."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate on every load, so an upgraded server never runs with yesterday's script.
    "Cache-Control": "no-cache",
}


def read_files() -> dict[str, bytes]:
    """The dashboard's files by name, read from the installed package."""
    folder = resources.files("mindbot") / "dashboard"
    return {name: (folder / name).read_bytes() for name in FILES}


def dashboard_router(api: Api) -> APIRouter:
    """The dashboard's page and static files, at ``/dashboard/`` (public: no data in them).

    Args:
        api: The API the page reads (unused here: the browser calls it with its own key).
    """
    router = APIRouter(include_in_schema=False)
    files = read_files()

    def serve(name: str) -> Response:
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    @router.get(DASHBOARD_PATH)
    async def dashboard_redirect() -> RedirectResponse:
        # Relative, so the page's relative links (and a reverse proxy's path prefix) hold.
        return RedirectResponse("dashboard/", status_code=308)

    @router.get(DASHBOARD_PATH + "/")
    async def dashboard_page() -> Response:
        return serve("index.html")

    @router.get(DASHBOARD_PATH + "/{name}")
    async def dashboard_file(name: str) -> Response:
        if name not in FILES:
            raise HTTPException(404, "Not Found")
        return serve(name)

    return router
