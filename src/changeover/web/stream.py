"""Live progress of a patch job as server-sent events: ``GET /api/v1/patchjobs/{id}/stream``.

Every ``POLL_S`` the stream asks the JSON API for the job and for its events after the last
one sent, and pushes what is new::

    event: job      data: the job, as GET /api/v1/patchjobs/{id} returns it (when it changed)
    event: event    data: one row of GET .../events (id: the event id, for Last-Event-ID)
    event: end      data: the job, once it is finished and every event was sent
    event: error    data: {"status", "error", "message"} when the API refuses (e.g. revoked)

It reads through the application itself (an in-process ASGI request with the caller's own
``Authorization``), not through the patch-job tables: the stream then says exactly what the
API says, checks the token on every poll (a revoked token ends the stream), and needs no
knowledge of the engine's storage. A stream lasts at most ``MAX_STREAM_S``; a client
reconnects with ``Last-Event-ID`` (or ``?after=``) and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from changeover.control import logs
from changeover.control.auth.views import Reader
from changeover.control.http_input import EdgeRoute, Id
from changeover.control.observability import INTERNAL_CLIENT
from changeover.control.patchjobs.states import FINISHED_EVENT, FINISHED_WAIT_S

POLL_S = 0.5
KEEPALIVE_S = 15.0
MAX_STREAM_S = 600.0
EVENTS_PER_POLL = 200
MAX_EVENT_ID = 2**62
"""Event ids are 64-bit in the database; a bigger ``after`` is refused, not overflowed."""
TERMINAL_FROM = 7
"""Patch-job statuses from 7 (Completed) on are final (``patchjobs.states.JobStatus``)."""

router = APIRouter(prefix="/api/v1", tags=["patchjobs"], route_class=EdgeRoute)


class ApiRefused(Exception):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        super().__init__(response.status_code)

    def body(self) -> dict[str, Any]:
        try:
            data = self.response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return {
            "status": self.response.status_code,
            "error": data.get("error", "error"),
            "message": data.get("message") or data.get("detail") or self.response.text[:300],
        }


class JobReader:
    """GETs against this application with the caller's token."""

    def __init__(self, request: Request, authorization: str) -> None:
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app, client=(INTERNAL_CLIENT, 0)),
            base_url="http://changeover.internal/api/v1",
            headers={"Authorization": authorization, "X-Request-ID": logs.request_id.get() or ""},
            timeout=30,
        )

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.client.get(path, params=params)
        if r.status_code != 200:
            raise ApiRefused(r)
        return r.json()

    async def aclose(self) -> None:
        await self.client.aclose()


def sse(kind: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.get(
    "/patchjobs/{job_id}/stream",
    response_model=None,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The events"}},
)
async def stream_job(
    job_id: Id,
    request: Request,
    _: Reader,
    after: int = Query(default=0, ge=0, le=MAX_EVENT_ID, description="Send events after this id."),
    last_event_id: Annotated[str | None, Header(max_length=18)] = None,
) -> StreamingResponse | JSONResponse:
    """Server-sent events: the job when it changes and each new event, until it ends."""
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    reader = JobReader(request, request.headers.get("authorization", ""))
    try:
        job = await reader.get(f"/patchjobs/{job_id}")
    except ApiRefused as e:
        await reader.aclose()
        body = e.body()
        return JSONResponse(
            {"error": body["error"], "message": body["message"]}, status_code=body["status"]
        )
    return StreamingResponse(
        _events(reader, job_id, job, after),
        media_type="text/event-stream",
        # Proxies must pass each event on at once, not buffer the response.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(reader: JobReader, job_id: int, job: Any, after: int) -> AsyncIterator[bytes]:
    started = quiet_since = time.monotonic()
    last_job: Any = None
    finished = False
    terminal_since: float | None = None
    try:
        while time.monotonic() - started < MAX_STREAM_S:
            sent = False
            try:
                page = await reader.get(
                    f"/patchjobs/{job_id}/events", after=after, limit=EVENTS_PER_POLL
                )
                for ev in page.get("events", []):
                    after = max(after, int(ev["id"]))
                    finished = finished or ev.get("kind") == FINISHED_EVENT
                    yield sse("event", ev, int(ev["id"]))
                    sent = True
                if job != last_job:
                    yield sse("job", job)
                    last_job, sent = job, True
                more = len(page.get("events", [])) >= EVENTS_PER_POLL
                if int(job.get("status", 0)) >= TERMINAL_FROM:
                    terminal_since = terminal_since or time.monotonic()
                    # Wait for the "finished" event (see FINISHED_WAIT_S): a whole timeline.
                    waited = time.monotonic() - terminal_since >= FINISHED_WAIT_S
                    if not more and (finished or waited):
                        yield sse("end", job)
                        return
            except ApiRefused as e:
                yield sse("error", e.body())
                return
            now = time.monotonic()
            if sent:
                quiet_since = now
            elif now - quiet_since >= KEEPALIVE_S:
                yield b": keep-alive\n\n"  # a comment: keeps idle proxies from closing it
                quiet_since = now
            if not more:
                await asyncio.sleep(POLL_S)
            try:
                job = await reader.get(f"/patchjobs/{job_id}")
            except ApiRefused as e:
                yield sse("error", e.body())
                return
    finally:
        await reader.aclose()
