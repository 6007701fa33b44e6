"""The Python client a game server uses to talk to its host agent's SDK endpoint.

The agent starts every game process with two environment variables, ``CHANGEOVER_SDK_URL``
(this instance's base URL on localhost) and ``CHANGEOVER_SDK_TOKEN`` (its bearer token).
``GameServerSDK`` is the blocking client, ``AsyncGameServerSDK`` the asyncio one; both
speak the protocol in ``docs/sdk-protocol.md`` and raise ``changeover.errors`` types:
``RemoteError`` when the agent cannot be reached, otherwise the type the status maps to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self

import httpx

from changeover.errors import (
    AuthError,
    ChangeoverError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RemoteError,
)
from changeover.sdk.state import ShutdownNotice

SDK_URL_ENV: Final = "CHANGEOVER_SDK_URL"
SDK_TOKEN_ENV: Final = "CHANGEOVER_SDK_TOKEN"  # noqa: S105 (a variable name, not a secret)

# The server caps one long-poll at 60 s; staying under it keeps every poll answered by the
# server, not cut off by our own read timeout.
POLL_CHUNK_S: Final = 30.0
DEFAULT_TIMEOUT_S: Final = 5.0

_STATUS_ERRORS: Final[dict[int, type[ChangeoverError]]] = {
    400: InvalidInput,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
}


def _settings_from_env(environ: Mapping[str, str] | None) -> tuple[str, str]:
    env = os.environ if environ is None else environ
    url, token = env.get(SDK_URL_ENV), env.get(SDK_TOKEN_ENV)
    if not url or not token:
        raise InvalidInput(
            f"{SDK_URL_ENV} and {SDK_TOKEN_ENV} must both be set; the Changeover agent sets "
            "them when it starts a game server (run standalone without the SDK otherwise)"
        )
    return url, token


def _base_url(url: str) -> str:
    # httpx appends relative paths to the base URL only if it ends with a slash.
    return url if url.endswith("/") else url + "/"


def _labels_arg(labels: Mapping[str, str] | None, more: Mapping[str, str]) -> dict[str, str]:
    # Keyword arguments cannot spell keys such as "map.name", hence the optional mapping.
    return {**(labels or {}), **more}


def _poll_timeout(wait: float, timeout: float) -> httpx.Timeout:
    return httpx.Timeout(timeout, read=wait + timeout)


def _connection_error(url: str, exc: httpx.TransportError) -> RemoteError:
    return RemoteError(
        f"cannot reach the Changeover SDK at {url} ({type(exc).__name__}: {exc}); "
        "is the host agent running?",
        url=url,
    )


def _read(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful response, or the matching ChangeoverError."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    else:
        message = f"HTTP {response.status_code}: {response.text[:200]}"
    if response.is_success:
        raise RemoteError(f"the SDK endpoint answered with something not JSON: {message}")
    error = _STATUS_ERRORS.get(response.status_code, RemoteError)
    raise error(message, status=response.status_code)


def _notice(body: Mapping[str, Any]) -> ShutdownNotice | None:
    raw = body.get("notice")
    if raw is None:
        return None
    try:
        return ShutdownNotice.from_dict(raw)
    except InvalidInput as exc:
        raise RemoteError(f"the SDK endpoint sent a malformed shutdown notice: {exc}") from exc


class GameServerSDK:
    """Blocking client for one instance's SDK endpoint."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=_base_url(url),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """Build from ``CHANGEOVER_SDK_URL`` and ``CHANGEOVER_SDK_TOKEN``.

        Raises:
            InvalidInput: either variable is missing.
        """
        url, token = _settings_from_env(environ)
        return cls(url, token, **kwargs)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _connection_error(self.url, exc) from exc
        return _read(response)

    def ready(self) -> None:
        """The server is listening and can take players."""
        self._call("POST", "ready")

    def health(self) -> None:
        """A heartbeat; send one every few seconds."""
        self._call("POST", "health")

    def player_connected(self, player_id: str) -> None:
        self._call("POST", "players/connect", json={"player_id": player_id})

    def player_disconnected(self, player_id: str) -> None:
        self._call("POST", "players/disconnect", json={"player_id": player_id})

    def set_labels(self, labels: Mapping[str, str] | None = None, /, **more: str) -> None:
        """Add or overwrite labels, e.g. ``set_labels(mode="ranked")`` or
        ``set_labels({"map.name": "dust"})``; labels not named are kept."""
        self._call("PUT", "labels", json=_labels_arg(labels, more))

    def wait_for_shutdown(self, timeout: float) -> ShutdownNotice | None:
        """Block up to ``timeout`` seconds for a shutdown notice; None if none came.

        Returns at once if a notice was already given. ``timeout=0`` just checks.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), POLL_CHUNK_S)
            body = self._call(
                "GET",
                "shutdown",
                params={"wait": f"{wait:.3f}"},
                timeout=_poll_timeout(wait, self._timeout),
            )
            notice = _notice(body)
            if notice is not None or time.monotonic() >= deadline:
                return notice

    def state_saved(self) -> None:
        """Acknowledge that the game saved its state after a shutdown notice."""
        self._call("POST", "state-saved")

    def state(self) -> dict[str, Any]:
        """Everything the agent knows about this instance (``GET /state``)."""
        return self._call("GET", "state")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncGameServerSDK:
    """The asyncio twin of ``GameServerSDK``: same methods, awaited."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=_base_url(url),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """Build from ``CHANGEOVER_SDK_URL`` and ``CHANGEOVER_SDK_TOKEN``.

        Raises:
            InvalidInput: either variable is missing.
        """
        url, token = _settings_from_env(environ)
        return cls(url, token, **kwargs)

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _connection_error(self.url, exc) from exc
        return _read(response)

    async def ready(self) -> None:
        await self._call("POST", "ready")

    async def health(self) -> None:
        await self._call("POST", "health")

    async def player_connected(self, player_id: str) -> None:
        await self._call("POST", "players/connect", json={"player_id": player_id})

    async def player_disconnected(self, player_id: str) -> None:
        await self._call("POST", "players/disconnect", json={"player_id": player_id})

    async def set_labels(self, labels: Mapping[str, str] | None = None, /, **more: str) -> None:
        await self._call("PUT", "labels", json=_labels_arg(labels, more))

    async def wait_for_shutdown(self, timeout: float) -> ShutdownNotice | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), POLL_CHUNK_S)
            body = await self._call(
                "GET",
                "shutdown",
                params={"wait": f"{wait:.3f}"},
                timeout=_poll_timeout(wait, self._timeout),
            )
            notice = _notice(body)
            if notice is not None or time.monotonic() >= deadline:
                return notice

    async def state_saved(self) -> None:
        await self._call("POST", "state-saved")

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "state")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
