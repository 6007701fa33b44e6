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


REPEATABLE = frozenset({"GET", "HEAD", "PUT", "DELETE"})
"""Methods whose request may be sent again to another replica after one broke off: the
same request twice has the effect of once."""
SINGLE_URL_TRIES = 3
"""Tries of a request through a single URL (a balancer): one more replica's death or
restart than the first try met."""
RETRY_PAUSE_S = 0.25
"""The pause before the second try through a single URL, doubled before each next one."""
UNAVAILABLE = frozenset({502, 503, 504})
"""What a balancer or a replica going down answers: another replica may serve it."""


def server_urls(server: str) -> list[str]:
    """The control plane's URLs: one, or several replicas separated by commas.

    Raises:
        InvalidInput: none given, or one that is not an http(s) URL.
    """
    urls = [u.strip().rstrip("/") for u in server.split(",") if u.strip()]
    if not urls:
        raise errors.InvalidInput("no server given: pass --server URL or set CHANGEOVER_URL")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise errors.InvalidInput(f"server URL {url!r} must start with http:// or https://")
    return urls


class ApiClient:
    """The API of one control plane, reached through any of its replicas' URLs.

    It keeps to the replica that last answered. When that one cannot be reached (the
    request was not sent), the next is tried, whatever the method; when it broke off or
    answered 502/503/504, the next is tried only for a request that is safe to send again
    (``REPEATABLE``, or ``retry=True`` from a caller that knows, like the agent's sync).
    """

    def __init__(self, server: str, token: str | None, *, timeout_s: float = 60.0) -> None:
        self.servers = server_urls(server)
        self._current = 0
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.has_token = bool(token)
        self.http = httpx.Client(headers=headers, timeout=timeout_s)

    @property
    def server(self) -> str:
        """The replica in use."""
        return self.servers[self._current]

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> Any:
        repeatable = (method in REPEATABLE if retry is None else retry) and _replayable(kwargs)
        failures: list[str] = []
        # Each replica once; a single URL (a balancer, which sends the next try to another
        # replica, or one server restarting) gets a few tries a moment apart.
        tries = len(self.servers) if len(self.servers) > 1 else SINGLE_URL_TRIES
        for attempt in range(tries):
            if attempt and len(self.servers) == 1:
                time.sleep(RETRY_PAUSE_S * 2 ** (attempt - 1))  # a backoff, not a wait
            server = self.server
            try:
                r = self.http.request(method, f"{server}/api/v1{path}", **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # nothing was sent
                failures.append(f"{server}: {transport_reason(e)}")
            except httpx.TransportError as e:
                failures.append(f"{server}: {transport_reason(e)}")
                if not repeatable:
                    break
            else:
                if r.status_code not in UNAVAILABLE or not repeatable or attempt == tries - 1:
                    return self._answer(r)
                failures.append(f"{server}: {r.status_code} {r.reason_phrase}")
            self._current = (self._current + 1) % len(self.servers)
        if len(self.servers) == 1:  # its last try says it: the others said the same or less
            raise errors.RemoteError(f"cannot reach the server at {failures[-1]}")
        raise errors.RemoteError(f"cannot reach any replica; {'; '.join(failures)}")

    def _answer(self, r: httpx.Response) -> Any:
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
            retry=True,  # content-addressed: sent twice, stored once
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


def _replayable(kwargs: dict[str, Any]) -> bool:
    """Whether the request's body can be sent again: not a stream read as it goes."""
    content = kwargs.get("content")
    return content is None or isinstance(content, bytes | str)


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
