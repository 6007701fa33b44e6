"""The control plane's HTTP API as Python calls, with errors translated to ours.

The CLI, the agent and the tests use this one client; a non-2xx answer becomes the error
class the server named (``error`` field of the body), so callers branch on types.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from changeover import errors
from changeover.control.states import JobState

BY_CODE: dict[str, type[errors.ChangeoverError]] = {
    "invalid_input": errors.InvalidInput,
    "unsafe_path": errors.InvalidInput,
    "not_found": errors.NotFound,
    "conflict": errors.Conflict,
    "image_locked": errors.Conflict,
    "unauthorized": errors.AuthError,
    "forbidden": errors.Forbidden,
    "integrity": errors.InvalidInput,
    "too_large": errors.InvalidInput,
}


NO_TOKEN = "no access token: set CHANGEOVER_TOKEN or pass --token"  # noqa: S105 (a message)
"""What a caller without a token is told (the server's own words speak of HTTP headers)."""


def transport_reason(exc: httpx.TransportError) -> str:
    """Why a request got no answer, in a few words on one line (``[Errno 111] Connection
    refused`` becomes ``connection refused``)."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time (timed out)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text[:1].lower() + text[1:]


class ApiClient:
    def __init__(self, server: str, token: str | None, *, timeout_s: float = 60.0) -> None:
        if not server:
            raise errors.InvalidInput("no server given: pass --server URL or set CHANGEOVER_URL")
        if not server.startswith(("http://", "https://")):
            raise errors.InvalidInput(f"server URL {server!r} must start with http:// or https://")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.has_token = bool(token)
        self.server = server.rstrip("/")
        self.http = httpx.Client(
            base_url=self.server + "/api/v1", headers=headers, timeout=timeout_s
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise errors.RemoteError(
                f"cannot reach the server at {self.server}: {transport_reason(e)}"
            ) from e
        if r.is_success:
            return r.json()
        if r.status_code == 401 and not self.has_token:
            raise errors.AuthError(NO_TOKEN, status=401)
        raise _error_from(r)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def upload(self, sha256: str, offset: int, size: int, body: Iterator[bytes]) -> Any:
        """Send the bytes of a file from ``offset`` on; returns where the upload stands."""
        return self.put(f"/uploads/{sha256}", params={"offset": offset, "size": size}, content=body)

    def upload_status(self, sha256: str) -> Any:
        """``{"complete": bool, "offset": int}``: where the upload of a file stands."""
        return self.get(f"/uploads/{sha256}")

    def upload_batch(self, files: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Send whole small files in one request; returns one result per file, in order.

        The body is a line of JSON listing ``(sha256, size)``, then the bytes back to back
        (see ``POST /api/v1/uploads/batch``). A file the server refused has
        ``complete: false`` and the error's ``error`` and ``message``.
        """
        header = {"files": [{"sha256": sha, "size": len(data)} for sha, data in files]}
        body = b"".join([json.dumps(header).encode(), b"\n", *(data for _, data in files)])
        out = self.post(
            "/uploads/batch",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        results: list[dict[str, Any]] = out["files"]
        return results

    def wait_job(self, path: str, *, timeout_s: float = 3600, poll_s: float = 0.2) -> Any:
        """Poll a job until it completes or fails; returns its last state."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(path)
            if JobState(job["status"]).done:
                return job
            if time.monotonic() > deadline:
                raise errors.RemoteError(f"timed out waiting for {path} ({job['status_name']})")
            time.sleep(poll_s)


def _error_from(r: httpx.Response) -> errors.ChangeoverError:
    try:
        body = r.json()
        code, message = body.get("error", ""), body.get("message") or r.text
    except ValueError:
        code, message = "", r.text[:500] or r.reason_phrase
    kind = BY_CODE.get(code)
    if kind is None:
        kind = {401: errors.AuthError, 403: errors.Forbidden, 404: errors.NotFound}.get(
            r.status_code, errors.RemoteError
        )
        if kind is errors.RemoteError:
            message = f"server answered {r.status_code}: {message}"
    return kind(message, status=r.status_code)
