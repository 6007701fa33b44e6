"""Simulated players for the sample game (examples/arena): allocate, play, move, count.

Each bot is a thread speaking the arena's line protocol over real TCP::

    until the run is over:
        POST /allocations {fleet, players: [bot]}   refused → count the reason, retry soon
        connect to address:port, {"hello": bot, "session": <game session>}
        play {"score": 1} every tick_s for a random session length, and then:
          - a {"notice": …} line   → the server is going away: leave, allocate again and
                                     carry on the same game session elsewhere ("moved")
          - the connection breaks   → "dropped without notice" (what zero-downtime forbids)
          - the length is reached   → leave cleanly: "completed"
        DELETE /sessions/<id>: the backend tells the control plane the party left

When the run ends every bot still playing leaves cleanly, so a run in which no session was
dropped is one in which every session stayed alive to its end.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from changeover.client import ApiClient
from changeover.errors import RemoteError

RETRY_S = 0.5


@dataclass(frozen=True)
class BotConfig:
    server: str
    token: str
    fleet: str
    players: int = 10
    duration_s: float = 30.0
    session_min_s: float = 2.0
    session_max_s: float = 8.0
    tick_s: float = 0.2
    client_version: str | None = None
    regions: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Report:
    players: int
    sessions: int = 0
    completed: int = 0
    dropped_without_notice: int = 0
    moved: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    connect_failures: int = 0
    by_host: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + n)

    def note(self, error: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "players": self.players,
            "sessions": self.sessions,
            "completed": self.completed,
            "dropped_without_notice": self.dropped_without_notice,
            "moved": self.moved,
            "refused": dict(self.refused),
            "connect_failures": self.connect_failures,
            "by_host": dict(self.by_host),
            "errors": self.errors,
        }


class _Left(Exception):
    """How a play ended: "completed", "moved" or "dropped"."""

    def __init__(self, how: str, detail: str = "") -> None:
        super().__init__(how)
        self.how = how
        self.detail = detail


class Bot:
    def __init__(self, n: int, config: BotConfig, report: Report, stop_at: float) -> None:
        self.name = f"bot-{n}"
        self.config = config
        self.report = report
        self.stop_at = stop_at
        # Session lengths, not secrets: a seedable generator is the point.
        self.rng = random.Random(None if config.seed is None else config.seed + n)  # noqa: S311
        self.http = httpx.Client(
            base_url=config.server.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=30,
        )

    def run(self) -> None:
        try:
            game_session, ends_at = self._new_game()
            while time.monotonic() < self.stop_at:
                placed = self._allocate()
                if placed is None:
                    time.sleep(RETRY_S)
                    continue
                how = self._play(placed, game_session, ends_at)
                self._end(placed)
                if how == "completed":
                    game_session, ends_at = self._new_game()
                elif how == "failed":
                    time.sleep(RETRY_S)
        finally:
            self.http.close()

    def _new_game(self) -> tuple[str, float]:
        length = self.rng.uniform(self.config.session_min_s, self.config.session_max_s)
        return f"{self.name}-{self.rng.randrange(10**9)}", time.monotonic() + length

    def _allocate(self) -> dict[str, Any] | None:
        body = {
            "fleet": self.config.fleet,
            "players": [self.name],
            "regions": list(self.config.regions),
            "client_version": self.config.client_version,
        }
        try:
            r = self.http.post("/allocations", json=body)
        except httpx.HTTPError as e:
            self.report.note(f"allocation failed: {e}")
            return None
        if r.status_code == 201:
            placed: dict[str, Any] = r.json()
            return placed
        try:
            reason = r.json().get("reason") or r.json().get("error") or str(r.status_code)
        except ValueError:
            reason = str(r.status_code)
        with self.report.lock:
            self.report.refused[reason] += 1
        return None

    def _end(self, placed: dict[str, Any]) -> None:
        try:
            self.http.delete(f"/sessions/{placed['session_id']}")
        except httpx.HTTPError as e:
            self.report.note(f"ending session {placed['session_id']}: {e}")

    def _play(self, placed: dict[str, Any], game_session: str, ends_at: float) -> str:
        try:
            sock = socket.create_connection((placed["address"], placed["port"]), timeout=10)
        except OSError as e:
            self.report.add("connect_failures")
            self.report.note(f"{self.name}: cannot connect to {placed['host']}: {e}")
            return "failed"
        self.report.add("sessions")
        with self.report.lock:
            self.report.by_host[placed["host"]] += 1
        lines = sock.makefile("rb")
        try:
            self._send(sock, {"hello": self.name, "session": game_session})
            greeting = self._receive(lines)
            if "welcome" not in greeting:
                raise _Left("dropped", f"refused by the game: {greeting}")
            while True:
                now = time.monotonic()
                if now >= ends_at or now >= self.stop_at:
                    raise _Left("completed")
                self._send(sock, {"score": 1})
                while "score" not in (reply := self._receive(lines)):
                    if "notice" in reply:
                        raise _Left("moved", str(reply["notice"].get("reason")))
                    if "error" in reply:
                        raise _Left("dropped", f"the game answered {reply['error']!r}")
                time.sleep(self.config.tick_s)
        except _Left as left:
            how = left.how
            if how == "dropped":
                self.report.note(f"{self.name} on {placed['host']}: {left.detail}")
        except (OSError, ValueError, RemoteError) as e:
            how = "dropped"
            self.report.note(f"{self.name} on {placed['host']} dropped: {e}")
        finally:
            lines.close()
            sock.close()
        counter = {"completed": "completed", "moved": "moved"}.get(how, "dropped_without_notice")
        self.report.add(counter)
        return how

    @staticmethod
    def _send(sock: socket.socket, message: dict[str, Any]) -> None:
        sock.sendall(json.dumps(message).encode() + b"\n")

    @staticmethod
    def _receive(lines: Any) -> dict[str, Any]:
        line = lines.readline()
        if not line:
            raise _Left("dropped", "the server closed the connection without a notice")
        message: dict[str, Any] = json.loads(line)
        return message


def run_bots(config: BotConfig) -> Report:
    """Run ``config.players`` bots for ``config.duration_s`` seconds; returns what happened.

    Raises:
        NotFound: no such fleet. AuthError, Forbidden: the token may not read it.
            RemoteError: the server cannot be reached. All before any bot starts: a run
            that could never place a player fails at once rather than after its duration.
    """
    with ApiClient(config.server, config.token, timeout_s=30) as api:
        api.get(f"/fleets/{config.fleet}")
    report = Report(players=config.players)
    stop_at = time.monotonic() + config.duration_s
    bots = [Bot(n, config, report, stop_at) for n in range(config.players)]
    threads = [threading.Thread(target=b.run, name=b.name, daemon=True) for b in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return report
