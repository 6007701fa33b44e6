"""Arena, build 2: a tiny asyncio TCP game server that uses the Changeover game-server SDK.

Build 2 is build 1 with double points and a message of the day in its greeting.

One JSON object per line, both ways:

    -> {"hello": "<player>", "session": "<session>"}       first line
    <- {"welcome": "<player>", "session": ..., "version": "2", "score": n, "motd": ...}
    -> {"score": n}                                        0 <= n <= 1000, any number of times
    <- {"score": total}
    <- {"notice": {"reason": ..., "deadline": ...}}         when the host announces a shutdown
    <- {"error": "..."}                                    on a bad line

Each session (a party; several players may share one) keeps its score in memory. On a
shutdown notice, and on SIGTERM, every session is saved to
``$CHANGEOVER_SHARED_DIR/<session>.json``, which is also where a session is loaded from when a
later build meets it again. Environment: ``CHANGEOVER_PORT`` (7777), ``CHANGEOVER_HOST``
(127.0.0.1), ``CHANGEOVER_SHARED_DIR`` (else ``CHANGEOVER_STATE_DIR``, else ./state), and
the SDK's ``CHANGEOVER_SDK_URL`` / ``CHANGEOVER_SDK_TOKEN``; without the SDK URL the server
runs standalone.

Self-contained on purpose: this directory is shipped as one build.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from changeover.errors import ChangeoverError
from changeover.sdk import SDK_URL_ENV, AsyncGameServerSDK, ShutdownNotice

VERSION = Path(__file__).with_name("VERSION").read_text().strip()
POINTS_PER_SCORE = 2  # build 2: double points
MOTD = "Arena 2: every point counts double!"
SESSION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it names a file, so nothing else
MAX_LINE = 4096
MAX_POINTS = 1000
HEARTBEAT_S = 1.0

log = logging.getLogger("arena")


@dataclass
class Session:
    session: str
    score: int = 0
    messages: int = 0


class Arena:
    def __init__(self, state_dir: Path, sdk: AsyncGameServerSDK | None) -> None:
        self.state_dir = state_dir
        self.sdk = sdk
        self.sessions: dict[str, Session] = {}
        self.players: dict[str, asyncio.StreamWriter] = {}
        self.handlers: set[asyncio.Task[None]] = set()

    async def report(self, call: str, *args: str) -> None:
        # The agent being briefly unreachable must not take the game down with it.
        if self.sdk is None:
            return
        try:
            await getattr(self.sdk, call)(*args)
        except ChangeoverError as exc:
            log.warning("SDK %s failed: %s", call, exc)

    def session(self, session_id: str) -> Session:
        if session_id not in self.sessions:
            path = self.state_dir / f"{session_id}.json"
            try:
                saved = json.loads(path.read_text())
                found = Session(session_id, int(saved["score"]), int(saved["messages"]))
            except FileNotFoundError:
                found = Session(session_id)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable save %s: %s", path, exc)
                found = Session(session_id)
            self.sessions[session_id] = found
        return self.sessions[session_id]

    def save_all(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for s in self.sessions.values():
            data = {**asdict(s), "version": VERSION, "saved_at": time.time()}
            tmp = self.state_dir / f".{s.session}.json.tmp"
            tmp.write_text(json.dumps(data))
            tmp.replace(self.state_dir / f"{s.session}.json")  # readers never see half a file
        log.info("saved %d session(s) to %s", len(self.sessions), self.state_dir)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        player = None
        try:
            player, session = await self.greet(reader, writer)
            if player is None or session is None:
                return
            while line := await reader.readline():
                reply = self.play(session, line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ValueError, ConnectionError) as exc:  # overlong line or peer gone
            log.info("closing player %s: %s", player, exc)
        finally:
            self.handlers.discard(task)
            if player is not None and self.players.get(player) is writer:
                del self.players[player]
                await self.report("player_disconnected", player)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def greet(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str | None, Session | None]:
        line = await reader.readline()
        if not line:  # connected and left without a word, e.g. a port probe
            return None, None
        try:
            hello = json.loads(line)
            player, session_id = hello["hello"], hello["session"]
        except (ValueError, KeyError, TypeError):
            await send(writer, {"error": 'say {"hello": player, "session": session} first'})
            return None, None
        if not isinstance(player, str) or not 0 < len(player) <= 128 or not player.isprintable():
            await send(writer, {"error": "player must be 1-128 printable characters"})
            return None, None
        if not isinstance(session_id, str) or not SESSION_RE.fullmatch(session_id):
            await send(writer, {"error": "session must be 1-64 of [A-Za-z0-9_-]"})
            return None, None
        if player in self.players:
            await send(writer, {"error": f"{player} is already connected"})
            return None, None
        self.players[player] = writer
        await self.report("player_connected", player)
        session = self.session(session_id)
        await send(
            writer,
            {
                "welcome": player,
                "session": session_id,
                "version": VERSION,
                "score": session.score,
                "motd": MOTD,
            },
        )
        return player, session

    def play(self, session: Session, line: bytes) -> dict[str, object]:
        try:
            points = json.loads(line)["score"]
        except (ValueError, KeyError, TypeError):
            return {"error": 'send {"score": n}'}
        if isinstance(points, bool) or not isinstance(points, int) or not 0 <= points <= MAX_POINTS:
            return {"error": f"score must be an integer from 0 to {MAX_POINTS}"}
        session.score += points * POINTS_PER_SCORE
        session.messages += 1
        return {"score": session.score}

    async def on_notice(self, notice: ShutdownNotice) -> None:
        log.info(
            "shutdown notice: %s, deadline in %.0f s", notice.reason, notice.deadline - time.time()
        )
        message = {"notice": {"reason": notice.reason, "deadline": notice.deadline}}
        for writer in list(self.players.values()):
            with contextlib.suppress(ConnectionError):
                await send(writer, message)
        self.save_all()
        await self.report("state_saved")

    async def heartbeat(self) -> None:
        while True:
            await self.report("health")
            await asyncio.sleep(HEARTBEAT_S)

    async def watch_for_shutdown(self, sdk: AsyncGameServerSDK) -> None:
        while True:
            try:
                notice = await sdk.wait_for_shutdown(30)
            except ChangeoverError as exc:
                log.warning("waiting for a shutdown notice failed: %s", exc)
                await asyncio.sleep(HEARTBEAT_S)
                continue
            if notice is not None:
                await self.on_notice(notice)
                return


async def send(writer: asyncio.StreamWriter, message: Mapping[str, object]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


async def main() -> None:
    port = int(os.environ.get("CHANGEOVER_PORT", "7777"))
    host = os.environ.get("CHANGEOVER_HOST", "127.0.0.1")
    # Sessions move between the fleet's instances (a player moved on a notice lands on any
    # of them): their saves go to the fleet's shared directory, not an instance's own.
    state_dir = Path(
        os.environ.get("CHANGEOVER_SHARED_DIR") or os.environ.get("CHANGEOVER_STATE_DIR", "state")
    )
    sdk = AsyncGameServerSDK.from_env() if os.environ.get(SDK_URL_ENV) else None
    arena = Arena(state_dir, sdk)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = await asyncio.start_server(arena.handle, host, port, limit=MAX_LINE)
    log.info(
        "arena v%s listening on %s:%d (%s)", VERSION, host, port, "SDK" if sdk else "standalone"
    )
    background: list[asyncio.Task[None]] = []
    if sdk is not None:
        await arena.report("ready")
        background = [
            asyncio.create_task(arena.heartbeat()),
            asyncio.create_task(arena.watch_for_shutdown(sdk)),
        ]

    await stop.wait()
    log.info("stopping: saving sessions first")
    server.close()
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    arena.save_all()
    await arena.report("state_saved")
    for writer in list(arena.players.values()):
        writer.close()
    if arena.handlers:
        await asyncio.wait(arena.handlers, timeout=5)
    await server.wait_closed()
    if sdk is not None:
        await sdk.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s arena %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    asyncio.run(main())
