"""The instances of one host: desired state in, processes out, observed state back.

Each instance is a small state machine that ``tick`` advances without ever blocking::

    staging ──version staged──▶ starting ──health ok──▶ ready
       ▲                           │ exits / unhealthy     │
       └─ back-off (1 s … 30 s) ◀──┴── failed ◀────────────┘
    desired "stopped": stopping — shutdown notice, wait for the game's save (or the notice
    deadline), the profile's stop signal, ``stop_timeout_s``, then SIGKILL — ▶ stopped
    unhealthy: the same stop signal, ``stop_timeout_s``, SIGKILL, then back-off and restart

How each process ended is kept (``ended``: exited by itself while being stopped, killed
after the stop timeout, or crashed while meant to run; its exit code or signal) and
reported with the instance.

State on disk: each instance runs in a *slot* of its fleet on this host, which the control
plane assigns (a replacement takes its predecessor's slot when their state must pass on;
see ``runspec.STATE_MODES``). ``CHANGEOVER_STATE_DIR`` (``{state_dir}``) is the slot's own
directory, ``work/slots/<fleet>/<slot>``, kept when its instances come and go;
``CHANGEOVER_SHARED_DIR`` (``{shared_dir}``) is ``work/state/<fleet>``, shared by every
instance of the fleet on the host. An instance never starts while another live process of
this agent holds its slot: two servers never open one world.

``apply`` takes the desired snapshot from the control plane; an instance the control plane
no longer lists is an orphan and is stopped too. Each instance's record is kept in
``work/instances/<id>.json`` (pid and start ticks, ports, SDK token, what its game told the
SDK), so a restarted agent re-adopts live processes: it registers them again with the SDK
server (same port, same token, so ``CHANGEOVER_SDK_URL`` keeps working) and replays their
SDK state (ready, players, labels, notice) through the SDK's own protocol, right after the
SDK server starts. What a game said while the agent was down, or in the few milliseconds of
the replay, is lost — a player who left then still counts as connected until the session
is ended (``DELETE /sessions/{id}``) or the instance stops.

Agones' SDK: with an ``AgonesHost``, every instance also gets Agones' gRPC and REST SDK
servers on ports of its own (``AGONES_SDK_GRPC_PORT``, ``AGONES_SDK_HTTP_PORT``, kept in the
record so a re-adopted game finds them again), over the same SDK state. A game that calls
Agones' Shutdown gets its stop signal; it is then started afresh (a new GameServer) unless
it has a shutdown notice, when it stays down for the control plane to retire.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changeover.agent import health
from changeover.agent.processes import (
    LaunchSpec,
    ProcessControl,
    ProcessInfo,
    find_program,
    port_is_free,
    signal_name,
)
from changeover.agent.staging import Stager
from changeover.agones import gameserver
from changeover.agones.counts import Declared
from changeover.agones.host import GRPC_PORT_ENV, HTTP_PORT_ENV, AgonesHost
from changeover.content.files import atomic_write
from changeover.errors import ChangeoverError, InvalidInput, NotFound
from changeover.runspec import HealthCheck, RunSpec
from changeover.sdk.client import GameServerSDK
from changeover.sdk.server import SDKServer
from changeover.sdk.state import InstanceSDKState

log = logging.getLogger("changeover.agent")

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0
"""An instance that ran this long before exiting starts its back-off afresh."""
SAVE_GRACE_S = 5.0
"""How long a stop waits for the game's save after giving its notice."""
QUICK_EXIT_S = 2.0


@dataclass
class Record:
    """One instance as this agent knows it; persisted as JSON."""

    id: int
    fleet: str
    profile: str
    manifest_id: str
    spec: dict[str, Any]
    desired: str
    notice: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None
    """``{"signal", "timeout_s"}`` from the control plane (a patch job's stop method),
    overriding the profile's; ``SIGKILL`` is a hard kill: no notice wait, no grace."""
    phase: str = "staging"
    pid: int | None = None
    start_ticks: int | None = None
    started_at: float | None = None
    ports: dict[str, int] = field(default_factory=dict)
    sdk_token: str | None = None
    restarts: int = 0
    crashes: int = 0
    next_start_at: float = 0.0
    error: str | None = None
    notice_sent: list[Any] | None = None
    stop_began: float | None = None
    stop_signal_at: float | None = None
    killed: bool = False
    health_failures: int = 0
    kill_reason: str | None = None
    """Why this agent killed the process (a failed health check), for the next error."""
    last_check_at: float = 0.0
    sdk: dict[str, Any] = field(default_factory=dict)
    slot: int | None = None
    """The fleet's state slot on this host (from the control plane; fixed once started)."""
    unhealthy_signal_at: float | None = None
    """When the stop signal went to a process that failed its health checks."""
    ended: dict[str, Any] | None = None
    """How the last process ended: ``{"how": exited|killed|crashed, "code", "signal",
    "reason", "at"}``."""
    agones_ports: dict[str, int] = field(default_factory=dict)
    """The ports of its Agones SDK servers (``grpc``, ``http``), kept across agent restarts."""
    uid: str | None = None
    """Its process's GameServer uid (Agones' SDK): a new one for every start."""
    sdk_shutdown: bool = False
    """The game asked to be stopped (Agones' Shutdown) and was sent its stop signal; once
    it has ended it stays down while the instance has a shutdown notice."""
    health_stream_lost_at: float | None = None
    """When this agent re-adopted a game whose heartbeats came on Agones' gRPC Health
    stream, which broke with the previous agent (an Agones SDK never reopens it): until
    the game pings again, its ``sdk`` health is that its process runs (``_health``)."""

    @property
    def sdk_id(self) -> str:
        return f"i{self.id}"

    @property
    def proc(self) -> ProcessInfo | None:
        if self.pid is None:
            return None
        return ProcessInfo(self.pid, self.start_ticks if self.start_ticks is not None else -1)

    def run_spec(self) -> RunSpec:
        return RunSpec.from_dict(self.spec)


@dataclass(frozen=True)
class HostConfig:
    work: Path
    address: str
    port_range: tuple[int, int]


class Supervisor:
    def __init__(
        self,
        config: HostConfig,
        processes: ProcessControl,
        sdk: SDKServer,
        stager: Stager,
        *,
        clock: Callable[[], float] = time.time,
        port_free: Callable[[int, str], bool] = port_is_free,
        agones: AgonesHost | None = None,
    ) -> None:
        self.config = config
        self.processes = processes
        self.sdk = sdk
        self.agones = agones
        self.stager = stager
        self.clock = clock
        self.port_free = port_free
        self.records: dict[int, Record] = {}
        self.dir = config.work / "instances"
        self.logs = config.work / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._saved: dict[int, str] = {}
        self._checks: dict[int, Future[health.Result]] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- persistence and re-adoption ------------------------------------------------------

    def _save(self, r: Record) -> None:
        raw = json.dumps(dataclasses.asdict(r), sort_keys=True)
        if self._saved.get(r.id) != raw:
            atomic_write(self.dir / f"{r.id}.json", raw.encode())
            self._saved[r.id] = raw

    def _forget(self, r: Record) -> None:
        (self.dir / f"{r.id}.json").unlink(missing_ok=True)
        self._saved.pop(r.id, None)
        self.records.pop(r.id, None)

    def load(self) -> None:
        """Read the records a previous agent left and re-adopt its live processes."""
        for path in sorted(self.dir.glob("*.json")):
            try:
                r = Record(**json.loads(path.read_text()))
            except (ValueError, TypeError) as e:
                log.warning("ignoring unreadable instance record %s: %s", path, e)
                continue
            self.records[r.id] = r
            proc = r.proc
            if proc is not None and self.processes.alive(proc):
                self._adopt(r)
            elif proc is not None:
                r.pid = r.start_ticks = None
                r.phase = "stopped" if r.desired == "stopped" else "failed"
                r.error = "the process ended while the agent was down"
                self._record_end(r, None)
                r.sdk = {}
            self._save(r)

    def _adopt(self, r: Record) -> None:
        self._unregister(r)
        url, _ = self.sdk.register(r.sdk_id, r.sdk_token)
        saved = r.sdk
        try:
            with GameServerSDK(url, r.sdk_token or "") as game:
                if saved.get("ready"):
                    game.ready()
                for player in saved.get("players", []):
                    game.player_connected(player)
                if saved.get("labels"):
                    game.set_labels(saved["labels"])
                if r.notice_sent:
                    self.sdk.notify_shutdown(r.sdk_id, r.notice_sent[0], r.notice_sent[1])
                if saved.get("state_saved"):
                    game.state_saved()
            self.sdk.apply(r.sdk_id, lambda st: _restore_agones_state(st, saved))
        except ChangeoverError as e:
            log.warning("instance %s: could not restore its SDK state: %s", r.id, e.message)
        if saved.get("heartbeat_stream") and r.run_spec().health.type == "sdk":
            # Killing a game with players because its agent restarted would be our fault.
            r.health_stream_lost_at = self.clock()
            log.warning(
                "instance %s pinged on Agones' gRPC Health stream, which broke with the"
                " previous agent: until it pings again, its health check is that its"
                " process runs",
                r.id,
            )
        try:
            self._open_agones(r)
        except ChangeoverError as e:
            log.warning("instance %s: no Agones SDK servers: %s", r.id, e.message)
        log.info("re-adopted instance %s (pid %s)", r.id, r.pid)

    # -- the Agones SDK servers ------------------------------------------------------------

    def _identity(self, r: Record, created_at: float | None) -> gameserver.Identity:
        spec = r.run_spec()
        hc = spec.health
        return gameserver.Identity(
            name=f"{r.fleet}-{r.id}",
            uid=r.uid or str(uuid.uuid4()),
            created_at=created_at or r.started_at or self.clock(),
            address=self.config.address,
            ports=dict(r.ports),
            capacity=spec.capacity,
            labels={
                "agones.dev/fleet": r.fleet,
                "changeover.dev/profile": r.profile,
                "changeover.dev/instance": str(r.id),
            },
            health_period_s=max(1, round(hc.interval_s)),
            health_failures=hc.failures,
            health_initial_delay_s=round(hc.start_grace_s),
            health_disabled=hc.type == "none",
            counts=Declared(spec.counters, spec.lists),
        )

    def _open_agones(self, r: Record, created_at: float | None = None) -> None:
        """Serve Agones' SDK for ``r`` (on its former ports when it has some)."""
        if self.agones is None:
            return
        self.agones.close(r.sdk_id)
        old = r.agones_ports
        grpc_port, http_port = self.agones.open(
            r.sdk_id, self._identity(r, created_at), old.get("grpc", 0), old.get("http", 0)
        )
        r.agones_ports = {"grpc": grpc_port, "http": http_port}

    def _unregister(self, r: Record) -> None:
        """Forget ``r`` in the SDK servers, ours and Agones' (its watch streams end)."""
        with contextlib.suppress(NotFound):
            self.sdk.unregister(r.sdk_id)
        if self.agones is not None:
            self.agones.close(r.sdk_id)

    # -- desired state -------------------------------------------------------------------

    def apply(self, desired: Sequence[Mapping[str, Any]]) -> None:
        """Take the host's whole desired state: what it does not list is stopped."""
        listed = {d["id"] for d in desired}
        self.apply_changes(desired, [i for i in self.records if i not in listed])

    def apply_changes(self, changed: Sequence[Mapping[str, Any]], gone: Sequence[int]) -> None:
        """Take the instances whose desired state changed, and stop those ``gone``."""
        for d in changed:
            r = self.records.get(d["id"])
            if r is None:
                r = Record(
                    id=d["id"],
                    fleet=d["fleet"],
                    profile=d["profile"],
                    manifest_id=d["manifest_id"],
                    spec=d["spec"],
                    desired=d["desired"],
                )
                self.records[r.id] = r
            r.desired = d["desired"]
            r.notice = d.get("notice")
            r.stop = d.get("stop")
            slot = d.get("slot")
            if r.proc is None and isinstance(slot, int) and not isinstance(slot, bool):
                r.slot = slot  # a running process keeps the directory it was started with
            self._save(r)
        for instance_id in gone:
            r = self.records.get(instance_id)
            if r is None:
                continue
            if r.phase == "stopped":
                self._forget(r)
            elif r.desired != "stopped":
                log.info("instance %s is not wanted any more: stopping it", r.id)
                r.desired = "stopped"

    def observed(self) -> list[dict[str, Any]]:
        out = []
        for r in self.records.values():
            first = r.run_spec().ports[0].name
            out.append(
                {
                    "id": r.id,
                    "state": r.phase,
                    "pid": r.pid,
                    "port": r.ports.get(first),
                    "ports": r.ports,
                    "restarts": r.restarts,
                    "error": r.error,
                    "sdk": r.sdk,
                    "slot": r.slot,
                    "exit": r.ended,
                }
            )
        return out

    def wanted_versions(self) -> set[str]:
        return {r.manifest_id for r in self.records.values() if r.phase != "stopped"}

    # -- the state machine ---------------------------------------------------------------

    def tick(self) -> bool:
        """Advance every instance one step; True if any observed state changed."""
        before = [
            (r.phase, r.error, json.dumps(r.sdk, sort_keys=True)) for r in self.records.values()
        ]
        for r in list(self.records.values()):
            now = self.clock()
            try:
                if r.desired == "stopped":
                    self._stop_step(r, now)
                else:
                    self._run_step(r, now)
            except ChangeoverError as e:  # one instance's trouble must not stop the others
                log.warning("instance %s: %s", r.id, e.message)
                r.error = e.message
            self._save(r)
        after = [
            (r.phase, r.error, json.dumps(r.sdk, sort_keys=True)) for r in self.records.values()
        ]
        return before != after

    def _run_step(self, r: Record, now: float) -> None:
        proc = r.proc
        if proc is None:
            if r.sdk_shutdown:
                if r.notice:
                    return  # ended as its game asked, under a notice: stays down
                r.sdk_shutdown, r.phase = False, "staging"  # the notice was withdrawn
            if now < r.next_start_at:
                return
            staged, error = self.stager.status(r.manifest_id)
            if not staged:
                r.phase, r.error = ("failed", error) if error else ("staging", None)
                return
            self._start(r, now)
            return
        if not self.processes.alive(proc):
            self._exited(r, proc, now)
            return
        if r.unhealthy_signal_at is not None:
            self._escalate(r, proc, now, r.unhealthy_signal_at)
            return
        self._refresh_sdk(r)
        if r.sdk.get("shutdown_requested"):
            self._sdk_shutdown(r, proc, now)
            return
        if r.notice and r.notice_sent != [r.notice["reason"], r.notice["deadline"]]:
            self._notify(r, r.notice["reason"], r.notice["deadline"], now)
        self._health(r, proc, now)

    def _sdk_shutdown(self, r: Record, proc: ProcessInfo, now: float) -> None:
        """The game asked to be stopped (Agones' Shutdown): its stop signal, then as any
        stop (``_escalate``); ``_exited`` then starts it afresh, or leaves it down under a
        notice."""
        stop_signal, _ = _stop_method(r, r.run_spec())
        log.info("instance %s asked to shut down: sending %s", r.id, stop_signal)
        self.processes.signal_group(proc, getattr(signal, stop_signal))
        r.sdk_shutdown = True
        r.unhealthy_signal_at = now
        r.killed = stop_signal == "SIGKILL"
        r.phase = "stopping"
        self._checks.pop(r.id, None)

    def _backoff(self, r: Record, now: float, error: str) -> None:
        r.crashes += 1
        r.next_start_at = now + min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (r.crashes - 1))
        r.phase = "failed"
        r.error = error
        log.warning("instance %s failed: %s", r.id, error)

    def _pick_ports(self, r: Record, spec: RunSpec) -> dict[str, int]:
        taken = {
            p
            for other in self.records.values()
            if other.id != r.id and other.phase != "stopped"
            for p in other.ports.values()
        }
        lo, hi = self.config.port_range
        ports: dict[str, int] = {}
        for ps in spec.ports:
            if ps.port is not None:
                if ps.port in taken or not self.port_free(ps.port, ps.protocol):
                    raise InvalidInput(
                        f"port {ps.port}/{ps.protocol} (fixed by profile {r.profile}) is already"
                        " in use on this host"
                    )
                ports[ps.name] = ps.port
                continue
            wanted = [r.ports[ps.name]] if ps.name in r.ports else []
            for p in [*wanted, *range(lo, hi + 1)]:
                if p not in taken and p not in ports.values() and self.port_free(p, ps.protocol):
                    ports[ps.name] = p
                    break
            else:
                raise InvalidInput(f"no free {ps.protocol} port left in {lo}-{hi} on this host")
        return ports

    def _slot_holder(self, r: Record) -> Record | None:
        """Another instance whose process still holds ``r``'s slot directory."""
        for other in self.records.values():
            if (
                other.id != r.id
                and other.fleet == r.fleet
                and other.slot == r.slot
                and other.proc is not None
            ):
                return other
        return None

    def state_dir(self, r: Record) -> Path:
        """The slot's own directory (an instance from before slots: one of its own)."""
        name = str(r.slot) if r.slot is not None else f"instance-{r.id}"
        return self.config.work / "slots" / r.fleet / name

    def shared_dir(self, r: Record) -> Path:
        return self.config.work / "state" / r.fleet

    def _dirs(self, r: Record) -> dict[str, str]:
        return {
            "version_dir": str(self.stager.staging.version_dir(r.manifest_id)),
            "instance_id": r.sdk_id,
            "state_dir": str(self.state_dir(r)),
            "shared_dir": str(self.shared_dir(r)),
        }

    def _start(self, r: Record, now: float) -> None:
        spec = r.run_spec()
        version_dir = self.stager.staging.version_dir(r.manifest_id)
        holder = self._slot_holder(r)
        if holder is not None:
            r.phase = "staging"
            r.error = (
                f"waiting for instance {holder.id} to end: it still holds state slot"
                f" {r.slot} of fleet {r.fleet} ({self.state_dir(r)})"
            )
            return
        try:
            r.ports = self._pick_ports(r, spec)
        except InvalidInput as e:
            self._backoff(r, now, e.message)
            return
        self._unregister(r)
        url, r.sdk_token = self.sdk.register(r.sdk_id, r.sdk_token)
        r.uid = str(uuid.uuid4())
        self._open_agones(r, created_at=now)
        for d in (self.state_dir(r), self.shared_dir(r)):
            d.mkdir(parents=True, exist_ok=True)
        dirs = self._dirs(r)
        argv = spec.render(spec.command, r.ports, dirs)
        argv[0] = find_program(argv[0], version_dir)
        launch = LaunchSpec(argv, version_dir, self._env(r, spec, url, dirs), self._log(r))
        try:
            info = self.processes.start(launch)
        except InvalidInput as e:
            self._unregister(r)
            self._backoff(r, now, e.message)
            return
        if r.started_at is not None:
            r.restarts += 1
        r.pid, r.start_ticks, r.started_at = info.pid, info.start_ticks, now
        r.phase, r.health_failures, r.last_check_at = "starting", 0, 0.0
        r.unhealthy_signal_at, r.killed = None, False
        r.notice_sent = None
        r.sdk, r.sdk_shutdown = {}, False
        log.info("instance %s started: pid %s, ports %s", r.id, info.pid, r.ports)

    def _env(self, r: Record, spec: RunSpec, url: str, dirs: Mapping[str, str]) -> dict[str, str]:
        # The agent's own CHANGEOVER_* (its access token above all) never reach a game.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")}
        env.update(spec.env)
        env.update(
            {
                "CHANGEOVER_SDK_URL": url,
                "CHANGEOVER_SDK_TOKEN": r.sdk_token or "",
                "CHANGEOVER_PORT": str(r.ports[spec.ports[0].name]),
                "CHANGEOVER_HOST": self.config.address,
                "CHANGEOVER_STATE_DIR": dirs["state_dir"],
                "CHANGEOVER_SHARED_DIR": dirs["shared_dir"],
                "CHANGEOVER_INSTANCE_ID": r.sdk_id,
                "CHANGEOVER_VERSION_DIR": dirs["version_dir"],
            }
        )
        for name, port in r.ports.items():
            env[f"CHANGEOVER_PORT_{name.upper().replace('-', '_')}"] = str(port)
        if r.agones_ports:
            env[GRPC_PORT_ENV] = str(r.agones_ports["grpc"])
            env[HTTP_PORT_ENV] = str(r.agones_ports["http"])
        return env

    def _log(self, r: Record) -> Path:
        return self.logs / f"{r.id}.log"

    def _log_tail(self, r: Record) -> str:
        try:
            with open(self._log(r), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 400))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][-200:] if lines else ""

    def _record_end(self, r: Record, code: int | None) -> None:
        """Keep how ``r``'s process ended: ``code`` as its parent saw it (negative: the
        signal that ended it; None: unknown, as for a process an earlier agent started)."""
        if r.sdk_shutdown:
            how, reason = ("killed" if r.killed else "exited"), "sdk shutdown"
        elif r.unhealthy_signal_at is not None:
            how, reason = ("killed" if r.killed else "exited"), "failed health check"
        elif r.stop_began is not None:
            how, reason = ("killed" if r.killed else "exited"), "stop"
        else:
            how, reason = "crashed", None
        sig = signal_name(-code) if code is not None and code < 0 else None
        r.ended = {
            "how": how,
            "code": code if code is not None and code >= 0 else None,
            "signal": sig,
            "reason": reason,
            "at": self.clock(),
        }
        status = f"code {code}" if sig is None else sig
        log.info("instance %s %s (%s)", r.id, how, status if code is not None else "code unknown")

    def _exited(self, r: Record, proc: ProcessInfo, now: float) -> None:
        if r.sdk.get("shutdown_requested"):
            r.sdk_shutdown = True  # it may have exited on its own after asking
        code = self.processes.exit_code(proc)
        self._record_end(r, code)
        r.unhealthy_signal_at, r.killed = None, False
        uptime = now - (r.started_at or now)
        r.pid = r.start_ticks = None
        self._checks.pop(r.id, None)
        self._unregister(r)
        r.sdk = {}
        if r.sdk_shutdown:
            # Agones' Shutdown: the game asked to end. Under a shutdown notice (the control
            # plane is retiring it) it stays down; otherwise a fresh one starts now (a new
            # GameServer, as its fleet would make), with no crash back-off.
            r.kill_reason, r.error, r.next_start_at = None, None, now
            if r.notice:
                r.phase = "stopped"
                log.info("instance %s ended as its game asked, under its notice", r.id)
                return
            r.sdk_shutdown, r.phase = False, "staging"
            log.info("instance %s ended as its game asked (SDK Shutdown): starting afresh", r.id)
            return
        if uptime >= STABLE_S:
            r.crashes = 0
        how = f"exited with code {code}" if code is not None else "exited"
        if uptime < QUICK_EXIT_S:
            how = how.replace("exited", "exited at once")
        if r.kill_reason is not None:
            error, r.kill_reason = r.kill_reason, None
        else:
            tail = self._log_tail(r)
            error = f"{how} (log {self._log(r)}{': ' + tail if tail else ''})"
        self._backoff(r, now, error)

    def _refresh_sdk(self, r: Record) -> None:
        try:
            st = self.sdk.state(r.sdk_id)
        except NotFound:
            r.sdk = {}
            return
        if st.reserved and st.reserved_until is not None and st.reserved_until <= self.clock():
            # A reservation whose time is up ends here too (the Agones host's timer may be
            # gone with an agent restart), so every view agrees the instance takes players.
            self.sdk.apply(r.sdk_id, InstanceSDKState.end_reservation)
            st = self.sdk.state(r.sdk_id)
        r.sdk = {
            "ready": st.ready,
            "players": sorted(st.players),
            "labels": dict(st.labels),
            "state_saved": st.state_saved,
            "annotations": dict(st.annotations),
            "allocated": st.allocated,
            "reserved": st.reserved,
            "reserved_until": st.reserved_until,
            "player_capacity": st.player_capacity,
            "shutdown_requested": st.shutdown_requested,
            "heartbeat_stream": st.heartbeat_stream,
            "counters": {k: dict(v) for k, v in st.counters.items()},
            "lists": {k: {**v, "values": list(v["values"])} for k, v in st.lists.items()},
        }

    def _notify(self, r: Record, reason: str, deadline: float, now: float) -> None:
        with contextlib.suppress(NotFound):
            self.sdk.notify_shutdown(r.sdk_id, reason, deadline)
        r.notice_sent = [reason, deadline]
        log.info(
            "instance %s: shutdown notice (%s), deadline in %.0f s", r.id, reason, deadline - now
        )

    def _health(self, r: Record, proc: ProcessInfo, now: float) -> None:
        spec = r.run_spec()
        hc = spec.health
        if now - r.last_check_at < hc.interval_s:
            return
        if hc.type == "none":
            ok, why = True, ""
        elif hc.type == "sdk":
            try:
                st = self.sdk.state(r.sdk_id)
            except NotFound:
                ok, why = False, "not registered with the SDK server"
            else:
                ok, why = self._sdk_health(r, hc, st)
        else:
            pending = self._checks.get(r.id)
            if pending is None:
                cwd = self.stager.staging.version_dir(r.manifest_id)
                argv = spec.render(hc.command, r.ports, self._dirs(r))
                if argv:
                    argv[0] = find_program(argv[0], cwd)
                port = r.ports[spec.ports[0].name]
                self._checks[r.id] = self._pool.submit(
                    health.network_check,
                    hc,
                    self.config.address,
                    port,
                    argv,
                    cwd,
                    dict(os.environ),
                )
                return
            if not pending.done():
                return
            del self._checks[r.id]
            ok, why = pending.result()
        r.last_check_at = now
        if ok:
            if r.phase != "ready":
                log.info("instance %s is ready", r.id)
            r.phase, r.health_failures, r.error = "ready", 0, None
            return
        if r.phase == "ready":
            r.health_failures += 1
            if r.health_failures >= hc.failures:
                self._kill(r, proc, f"unhealthy {r.health_failures} times in a row: {why}")
        elif now - (r.started_at or now) > hc.start_grace_s:
            self._kill(r, proc, f"not ready after {hc.start_grace_s:g} s: {why}")

    def _sdk_health(self, r: Record, hc: HealthCheck, st: InstanceSDKState) -> tuple[bool, str]:
        lost_at = r.health_stream_lost_at
        if lost_at is not None:
            if st.last_heartbeat is None or st.last_heartbeat <= lost_at:
                return st.ready, "" if st.ready else "the game is not ready"
            r.health_stream_lost_at = None  # it pings again: its heartbeats count again
            log.info("instance %s pings again: its SDK health check applies again", r.id)
        return health.sdk_check(hc, st)

    def _kill(self, r: Record, proc: ProcessInfo, why: str) -> None:
        """Stop an unhealthy process as any stop does (its stop signal, the stop timeout,
        then SIGKILL: ``_escalate``); it is restarted once it has ended."""
        r.kill_reason = r.error = f"{why}; restarted"
        stop_signal, _ = _stop_method(r, r.run_spec())
        log.warning("instance %s: %s; sending %s", r.id, why, stop_signal)
        self.processes.signal_group(proc, getattr(signal, stop_signal))
        r.unhealthy_signal_at = self.clock()
        r.killed = stop_signal == "SIGKILL"
        self._checks.pop(r.id, None)

    def _escalate(self, r: Record, proc: ProcessInfo, now: float, signalled_at: float) -> None:
        """SIGKILL once the stop timeout has passed since the stop signal."""
        stop_signal, stop_timeout_s = _stop_method(r, r.run_spec())
        if not r.killed and now - signalled_at >= stop_timeout_s:
            log.warning(
                "instance %s ignored %s for %g s: killing it", r.id, stop_signal, stop_timeout_s
            )
            self.processes.signal_group(proc, signal.SIGKILL)
            r.killed = True

    def _stop_step(self, r: Record, now: float) -> None:
        proc = r.proc
        if proc is None or not self.processes.alive(proc):
            if proc is not None:
                self._record_end(r, self.processes.exit_code(proc))  # reaps it too
                r.unhealthy_signal_at = None
                log.info("instance %s stopped", r.id)
            if r.phase != "stopped":
                self._unregister(r)
                r.pid = r.start_ticks = None
                r.phase, r.sdk = "stopped", {}
                self._checks.pop(r.id, None)
            return
        spec = r.run_spec()
        stop_signal, _ = _stop_method(r, spec)
        self._refresh_sdk(r)
        r.phase = "stopping"
        if stop_signal == "SIGKILL":
            if not r.killed:
                log.info("instance %s: hard kill (SIGKILL)", r.id)
                self.processes.signal_group(proc, signal.SIGKILL)
                r.killed = True
                r.stop_began = r.stop_signal_at = now
            return
        talks = bool(r.sdk.get("ready"))
        notice = r.notice or {"reason": "server stopping", "deadline": now}
        if r.stop_began is None:
            r.stop_began = now
            if talks and r.notice_sent != [notice["reason"], notice["deadline"]]:
                self._notify(r, notice["reason"], notice["deadline"], now)
        if r.stop_signal_at is None:
            wait_until = max(notice["deadline"], r.stop_began + SAVE_GRACE_S) if talks else now
            if r.sdk.get("state_saved") or r.sdk.get("shutdown_requested") or now >= wait_until:
                log.info("instance %s: sending %s", r.id, stop_signal)
                self.processes.signal_group(proc, getattr(signal, stop_signal))
                r.stop_signal_at = now
        else:
            self._escalate(r, proc, now, r.stop_signal_at)


STOP_SIGNALS = frozenset(
    {"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL"}
)


def _stop_method(r: Record, spec: RunSpec) -> tuple[str, float]:
    """The stop signal and timeout for ``r``: the control plane's override, if it sent a
    sane one, else the profile's."""
    stop = r.stop or {}
    sig = stop.get("signal")
    timeout = stop.get("timeout_s")
    signal_name = sig if isinstance(sig, str) and sig in STOP_SIGNALS else spec.stop_signal
    ok_timeout = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    timeout_s = float(timeout) if ok_timeout and 0 <= timeout <= 3600 else spec.stop_timeout_s
    return signal_name, timeout_s


def _restore_agones_state(st: InstanceSDKState, saved: Mapping[str, Any]) -> None:
    """Put back what a game told Agones' SDK before the agent restarted (its record's
    ``sdk``); the Changeover SDK's own part is replayed through its protocol."""
    if saved.get("annotations"):
        st.set_annotations(saved["annotations"])
    if saved.get("allocated"):
        st.allocate()
    if saved.get("reserved"):
        st.reserved = True
        until = saved.get("reserved_until")
        st.reserved_until = float(until) if isinstance(until, int | float) else None
    capacity = saved.get("player_capacity")
    if capacity is not None:
        st.set_player_capacity(capacity)
    if saved.get("shutdown_requested"):
        st.request_shutdown()
    # Agones' counters and lists as the game left them (checked: the record is a file).
    for name, c in (saved.get("counters") or {}).items():
        if isinstance(c, dict) and all(isinstance(c.get(k), int) for k in ("count", "capacity")):
            st.counters[str(name)] = {"count": c["count"], "capacity": c["capacity"]}
    for name, lst in (saved.get("lists") or {}).items():
        if isinstance(lst, dict) and isinstance(lst.get("capacity"), int):
            values = [v for v in lst.get("values") or [] if isinstance(v, str)]
            st.lists[str(name)] = {"capacity": lst["capacity"], "values": values}
