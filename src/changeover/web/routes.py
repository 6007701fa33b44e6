"""The dashboard: a small single-page app served at ``/ui`` by the control plane.

The page is static (HTML, one plain JavaScript file, one stylesheet, no build step): it
logs in with an access token kept in the tab's ``sessionStorage`` and calls the JSON API
with it as a Bearer token, so the API's scopes decide what it may do. The only server code
here is the mount and the live patch-job stream (``web.stream``).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from changeover.web import stream

STATIC = resources.files("changeover.web") / "static"


def mount(app: FastAPI) -> None:
    """Serve the dashboard at ``/ui`` (``/`` redirects there) and the job stream."""
    app.include_router(stream.router)
    index = str(STATIC / "index.html")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    def ui_bare() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    def ui() -> FileResponse:
        # Always revalidated: a new release's page must not meet an old cached script.
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")
