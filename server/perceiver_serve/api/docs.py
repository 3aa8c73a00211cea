"""``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, with their assets served by this server, not a CDN.

FastAPI's pages load Swagger UI and ReDoc from jsDelivr, so behind a firewall they stay
blank. The assets come from the ``fastapi-offline`` wheel (Swagger UI and ReDoc builds,
nothing else of it is used) and are served as plain routes here, so the pages work
air-gapped. Every one is a FastAPI route (FastAPI's own ``/openapi.json`` is not), so
requests to them are counted under their own paths rather than as unmatched.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

ASSET_PREFIX = "/docs/assets"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
OPENAPI = "/openapi.json"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Every path this module serves: open without an API key.
DOC_PATHS = frozenset({OPENAPI, "/docs", "/redoc", OAUTH2_REDIRECT, *(f"{ASSET_PREFIX}/{name}" for name in _ASSETS)})


@functools.cache
def _asset(name: str) -> bytes:
    return (resources.files("fastapi_offline") / "static" / name).read_bytes()


def install_docs(app: FastAPI) -> None:
    title = f"{app.title} {app.version}"
    openapi_url = OPENAPI

    @app.get(OPENAPI, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=title, oauth2_redirect_url=OAUTH2_REDIRECT,
            swagger_js_url=f"{ASSET_PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{ASSET_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{ASSET_PREFIX}/favicon.png")

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=title, redoc_js_url=f"{ASSET_PREFIX}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSET_PREFIX}/favicon.png", with_google_fonts=False)

    for name, media_type in _ASSETS.items():
        def serve(name: str = name, media_type: str = media_type) -> Response:
            return Response(_asset(name), media_type=media_type, headers={"cache-control": "public, max-age=86400"})

        app.add_api_route(f"{ASSET_PREFIX}/{name}", serve, methods=["GET"], include_in_schema=False)
