"""The API's interactive documentation at ``/docs`` (Swagger UI), served entirely by the
control plane.

FastAPI's own page loads Swagger UI from a CDN: on a closed network, or a machine that
cannot reach that CDN, an operator gets a blank page. The fastapi-offline package ships
Swagger UI's files (version 5, which reads the OpenAPI 3.1 FastAPI writes); they are
served from ``/docs/assets`` and FastAPI's own page builder points at them. We use the
files rather than its ``FastAPIOffline`` constructor because the control plane is a
FastAPI subclass (``control.app.ControlPlane``). There is no ``/redoc``: ReDoc still
fetches its logo from its CDN, and one interactive page is enough.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"


def mount(app: FastAPI) -> None:
    """Add ``/docs`` and its assets to ``app`` (made with ``docs_url=None`` and
    ``redoc_url=None``, so that FastAPI adds no CDN-bound pages of its own)."""
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )
