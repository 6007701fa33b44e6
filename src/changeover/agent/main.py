"""The host agent: register, then sync (the heartbeat) and supervise, until told to stop.

    start: lock the work directory; read (or make) its identity — agent_uid and SDK port;
           start the SDK server on that port, and the Agones SDK host beside it (each
           instance gets its own Agones gRPC and REST ports: ``changeover.agones``);
           re-adopt the instances a previous run left
    loop:  tick the supervisor (every ``tick_s``); every ``sync_interval_s``, or at once when
           something changed, POST what it observes to /agents/<id>/sync and apply the
           desired state that comes back; after the first sync, only the observations that
           changed go out, with the revision of the last answer, and only the desired
           changes come back (``control.fleet.desired``; the whole state every
           ``WHOLE_EVERY_S``)
    stop:  (SIGTERM / SIGINT) stop the SDK server and leave: the games keep running, and
           the next agent on this work directory adopts them

A sync that fails (control plane down, network) changes nothing locally: instances keep
running as they were, and the next sync converges. A control plane that no longer knows
the host (a new database) gets a fresh registration; another agent holding the name ends
this one with a clear error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeover import __version__
from changeover.agent.instances import HostConfig, Supervisor
from changeover.agent.processes import ProcessControl, Processes
from changeover.agent.staging import Fetcher, HttpFetcher, Stager, Staging, retained
from changeover.agones.host import AgonesHost
from changeover.client import ApiClient, server_urls
from changeover.content.files import atomic_write
from changeover.errors import Conflict, InvalidInput, NotFound, RemoteError
from changeover.launcher.fetch import DEFAULT_MIN_RATE, Pace
from changeover.sdk.server import SDKServer

log = logging.getLogger("changeover.agent")
WHOLE_EVERY_S = 300.0
"""How often the agent sends every observation and asks for the whole desired state, not
only the changes (``control.fleet.desired``): a safety net that costs one full sync."""


@dataclass(frozen=True)
class AgentConfig:
    server: str
    token: str
    name: str
    region: str
    work: Path
    slots: int = 10
    address: str = "127.0.0.1"
    port_range: tuple[int, int] = (7000, 7999)
    sdk_port: int | None = None
    content_url: str | None = None
    """Where versions are fetched from; default: the control plane's /content."""
    tick_s: float = 0.2
    keep_staged_s: float = 12 * 3600.0
    """How long a version nothing wants any more stays staged (``staging.retained``)."""
    min_rate: int = DEFAULT_MIN_RATE
    """Bytes/s below which a download is cut and retried (``launcher.fetch.Pace``)."""


@contextlib.contextmanager
def work_lock(work: Path) -> Iterator[None]:
    """One agent per work directory: a second one would fight over the same processes."""
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "agent.lock", "w") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another agent is running with the work directory {work}") from None
        yield


def load_identity(work: Path, sdk_port: int | None) -> dict[str, Any]:
    """The agent's uid (same uid = same agent to the control plane) and its SDK port."""
    path = work / "agent.json"
    try:
        ident: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        ident = {"agent_uid": uuid.uuid4().hex, "sdk_port": None}
    except ValueError as e:
        raise InvalidInput(f"{path} is not valid JSON ({e}); move it away to start afresh") from e
    if sdk_port is not None:
        ident["sdk_port"] = sdk_port
    return ident


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        processes: ProcessControl | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.config = config
        self.processes = processes or Processes()
        self.fetcher = fetcher or HttpFetcher(
            config.content_url or server_urls(config.server)[0] + "/content",
            config.work / "objects",
            pace=Pace(min_rate=config.min_rate),
        )
        self.host_id: int | None = None
        self.sync_interval_s = 1.0
        self.revision: float | None = None
        """The revision of the last desired state applied (None: ask for the whole)."""
        self.reported: dict[int, dict[str, Any]] = {}
        """What the control plane last heard of each instance (only changes are sent)."""
        self.versions: list[str] = []
        """The builds the control plane last said this host should hold."""
        self.whole_at = float("-inf")

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set.

        Raises:
            Conflict: the work directory is in use, or the host name is held by another
                live agent. AuthError: a wrong token. NotFound: an unknown region.
        """
        cfg = self.config
        with work_lock(cfg.work):
            ident = load_identity(cfg.work, cfg.sdk_port)
            sdk = SDKServer(port=ident["sdk_port"] or 0)
            try:
                sdk.start()
            except OSError as e:
                raise Conflict(
                    f"cannot listen for the SDK on port {ident['sdk_port']}: {e};"
                    " pass another --sdk-port"
                ) from e
            ident["sdk_port"] = sdk.port
            atomic_write(cfg.work / "agent.json", json.dumps(ident).encode())
            stager = Stager(Staging(cfg.work), self.fetcher)
            host = HostConfig(cfg.work, cfg.address, cfg.port_range)
            agones = AgonesHost(sdk)
            agones.start()
            sup = Supervisor(host, self.processes, sdk, stager, agones=agones)
            try:
                sup.load()
                stager.start()
                with ApiClient(cfg.server, cfg.token, timeout_s=10) as api:
                    if self._register(api, ident["agent_uid"], stop):
                        self._loop(api, sup, stager, ident["agent_uid"], stop)
            finally:
                stager.stop()
                sup.close()
                agones.stop()
                sdk.stop()

    def _register(self, api: ApiClient, uid: str, stop: threading.Event) -> bool:
        """Register with the control plane, retrying while it cannot be reached; False if
        told to stop meanwhile (Ctrl-C must work while the server is down)."""
        cfg = self.config
        body = {
            "name": cfg.name,
            "region": cfg.region,
            "slots": cfg.slots,
            "agent_uid": uid,
            "address": cfg.address,
            "agent_version": __version__,
        }
        delay = 0.5
        while True:
            try:
                # Safe to send again (to another replica): the uid makes it the same host.
                out = api.post("/agents/register", json=body, retry=True)
                break
            except RemoteError as e:  # the control plane may come up after us
                log.warning("cannot register yet: %s", e.message)
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, 10)
        self.host_id = out["id"]
        self.sync_interval_s = float(out.get("sync_interval_s", 1.0))
        log.info("registered as host %s (id %s) in %s", cfg.name, self.host_id, cfg.region)
        return True

    def _loop(
        self, api: ApiClient, sup: Supervisor, stager: Stager, uid: str, stop: threading.Event
    ) -> None:
        next_sync = 0.0
        while not stop.is_set():
            changed = sup.tick()
            if changed or time.monotonic() >= next_sync:
                next_sync = time.monotonic() + self.sync_interval_s
                self._sync(api, sup, stager, uid, stop)
            stop.wait(self.config.tick_s)

    def _sync(
        self, api: ApiClient, sup: Supervisor, stager: Stager, uid: str, stop: threading.Event
    ) -> None:
        observed = sup.observed()
        body: dict[str, Any] = {
            "agent_uid": uid,
            "instances": observed,
            "staged": stager.staging.staged(),
        }
        if time.monotonic() - self.whole_at > WHOLE_EVERY_S:
            self.revision = None  # now and then the whole state, both ways: belt and braces
        if self.revision is None:
            self.whole_at = time.monotonic()
        else:
            # Only what changed since the answer we applied; the control plane keeps the rest.
            body["since"] = self.revision
            body["instances"] = [o for o in observed if self.reported.get(o["id"]) != o]
        try:
            # Safe to send again: a report of what the host runs, answered with what it should.
            desired = api.post(f"/agents/{self.host_id}/sync", json=body, retry=True)
        except RemoteError as e:
            log.warning("sync failed (instances keep running as they are): %s", e.message)
            return
        except NotFound:
            log.warning("the control plane does not know this host any more: registering again")
            self.revision = None
            self._register(api, uid, stop)
            return
        self.reported = {o["id"]: o for o in observed}
        if desired.get("full", True):
            sup.apply(desired["instances"])
        else:
            sup.apply_changes(desired["instances"], desired.get("gone", []))
        revision = desired.get("revision")
        self.revision = float(revision) if isinstance(revision, int | float) else None
        # The control plane stretches the interval when it has many hosts to hear from.
        interval = desired.get("sync_interval_s")
        if isinstance(interval, (int, float)) and 0.1 <= interval <= 60:
            self.sync_interval_s = float(interval)
        versions = desired.get("versions")
        if isinstance(versions, list):  # absent from an answer with nothing new
            self.versions = [str(v) for v in versions]
        wanted = set(self.versions) | sup.wanted_versions()
        stager.want(sorted(wanted), only=True)
        staged = stager.staging.staged()
        if len(staged) <= len(wanted):
            return
        path = self.config.work / "unwanted.json"
        try:
            since = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            since = {}
        keep, since_now = retained(staged, wanted, since, time.time(), self.config.keep_staged_s)
        if since_now != since:
            atomic_write(path, json.dumps(since_now, sort_keys=True).encode())
        removed = stager.staging.prune(keep) if len(staged) > len(keep) else []
        if removed:
            log.info(
                "removed %d version(s) nothing needed for %g s",
                len(removed),
                self.config.keep_staged_s,
            )
