"""The supervisor's state machine with fake processes, a fake clock and a real SDK server.

The game is played by the test through the SDK's own HTTP protocol, with the URL and
token the supervisor put in the process's environment.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from changeover.agent.instances import HostConfig, Supervisor
from changeover.sdk.client import GameServerSDK
from changeover.sdk.server import SDKServer
from unit.agent.fake_processes import FakeProcesses

MID = "a" * 64


@dataclass
class Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeStaging:
    root: Path

    def version_dir(self, manifest_id: str) -> Path:
        return self.root / manifest_id


@dataclass
class FakeStager:
    staging: FakeStaging
    staged: set[str] = field(default_factory=lambda: {MID})
    error: str | None = None

    def status(self, manifest_id: str) -> tuple[bool, str | None]:
        return manifest_id in self.staged, self.error


@dataclass
class Host:
    sup: Supervisor
    procs: FakeProcesses
    sdk: SDKServer
    clock: Clock
    stager: FakeStager
    taken_ports: set[int] = field(default_factory=set)

    def tick(self, advance: float = 0.0) -> None:
        self.clock.t += advance
        self.sup.tick()

    def game(self, n: int = -1) -> GameServerSDK:
        env = self.procs.started[n].env
        return GameServerSDK(env["CHANGEOVER_SDK_URL"], env["CHANGEOVER_SDK_TOKEN"])

    def state(self, iid: int = 1) -> dict[str, Any]:
        return next(o for o in self.sup.observed() if o["id"] == iid)


def desired(
    iid: int = 1, want: str = "running", slot: int | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "id": iid,
        "fleet": "f",
        "profile": "p",
        "manifest_id": MID,
        "spec": {"command": ["game", "--port", "{port}"], "stop_timeout_s": 10, **spec},
        "desired": want,
        "notice": None,
        "slot": iid - 1 if slot is None else slot,
    }


def make_host(tmp_path: Path, procs: FakeProcesses | None = None, sdk_port: int = 0) -> Host:
    clock = Clock()
    sdk = SDKServer(port=sdk_port, clock=clock)
    sdk.start()
    stager = FakeStager(FakeStaging(tmp_path / "versions"))
    procs = procs or FakeProcesses()
    taken: set[int] = set()
    sup = Supervisor(
        HostConfig(tmp_path / "work", "127.0.0.1", (7000, 7010)),
        procs,
        sdk,
        stager,  # type: ignore[arg-type]
        clock=clock,
        port_free=lambda port, _proto: port not in taken,
    )
    return Host(sup, procs, sdk, clock, stager, taken)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = make_host(tmp_path)
    yield h
    h.sup.close()
    h.sdk.stop()


def test_start_then_ready_through_the_sdk(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEOVER_TOKEN", "cho_1_secret-of-the-agent")
    host.taken_ports.add(7000)
    host.sup.apply([desired()])
    host.tick()
    launch = host.procs.started[0]
    assert launch.argv == ["game", "--port", "7001"]  # 7000 is taken by someone else
    assert launch.cwd == host.stager.staging.version_dir(MID)
    assert launch.env["CHANGEOVER_PORT"] == "7001"
    assert launch.env["CHANGEOVER_STATE_DIR"].endswith("work/slots/f/0")
    assert launch.env["CHANGEOVER_SHARED_DIR"].endswith("work/state/f")
    assert "CHANGEOVER_TOKEN" not in launch.env  # the agent's secret never reaches a game
    assert host.state()["state"] == "starting"
    with host.game() as game:
        game.ready()
        game.player_connected("ann")
    host.tick(1)
    assert host.state()["state"] == "ready"
    assert host.state()["port"] == 7001
    assert host.state()["sdk"]["players"] == ["ann"]


def test_crash_restarts_with_back_off(host: Host) -> None:
    host.sup.apply([desired()])
    host.tick()
    pid = next(iter(host.procs.running))
    host.procs.exit(pid, 3)
    host.tick(0.5)
    st = host.state()
    assert st["state"] == "failed"
    assert "exited at once with code 3" in st["error"]
    host.tick(0.5)
    assert len(host.procs.started) == 1  # waits its 1 s back-off
    host.tick(0.6)
    assert len(host.procs.started) == 2
    assert host.state()["restarts"] == 1
    host.procs.exit(next(iter(host.procs.running)), 1)
    host.tick(0.1)
    host.tick(1.5)
    assert len(host.procs.started) == 2  # second crash: 2 s
    host.tick(0.6)
    assert len(host.procs.started) == 3


def test_missing_command_and_taken_fixed_port_are_clear_failures(host: Host) -> None:
    host.procs.missing.add("game")
    host.sup.apply([desired()])
    host.tick()
    assert host.state()["state"] == "failed"
    assert "command 'game' does not exist" in host.state()["error"]
    host.taken_ports.add(7777)
    host.sup.apply([desired(2, ports=[{"name": "game", "port": 7777}])])
    host.tick()
    assert "port 7777/tcp (fixed by profile p) is already in use" in host.state(2)["error"]
    assert host.procs.started == []


def test_stop_gives_notice_waits_for_save_then_signal_then_kill(host: Host) -> None:
    host.procs.obey = False  # a game that ignores SIGTERM
    host.sup.apply([desired()])
    host.tick()
    with host.game() as game:
        game.ready()
    host.tick(1)
    stop = desired(want="stopped")
    stop["notice"] = {"reason": "update", "deadline": host.clock.t + 30}
    host.sup.apply([stop])
    host.tick()
    assert host.state()["state"] == "stopping"
    with host.game() as game:
        notice = game.wait_for_shutdown(0)
        assert notice is not None and notice.reason == "update"
        host.tick(1)
        assert host.procs.signals == []  # no save yet, deadline ahead: wait
        game.state_saved()
    host.tick()
    pid = next(iter(host.procs.running))
    assert host.procs.signals == [(pid, signal.SIGTERM)]
    host.tick(9)
    assert host.procs.signals == [(pid, signal.SIGTERM)]
    host.tick(1.1)
    assert host.procs.signals[-1] == (pid, signal.SIGKILL)
    host.tick()
    assert host.state()["state"] == "stopped"


def test_orphans_are_stopped_then_forgotten(host: Host) -> None:
    host.sup.apply([desired()])
    host.tick()
    host.sup.apply([])
    host.tick()  # no SDK contact: the stop signal goes at once
    host.tick()
    assert host.state()["state"] == "stopped"
    host.sup.apply([])
    assert host.sup.observed() == []
    assert not list((host.sup.dir).glob("*.json"))


def test_a_new_agent_adopts_running_instances(tmp_path: Path) -> None:
    first = make_host(tmp_path)
    first.sup.apply([desired()])
    first.tick()
    env = first.procs.started[0].env
    with first.game() as game:
        game.ready()
        game.player_connected("ann")
    first.tick(1)
    port = first.sdk.port
    # The agent dies: its SDK server goes, the process does not.
    first.sup.close()
    first.sdk.stop()
    second = make_host(tmp_path, procs=first.procs, sdk_port=port)
    try:
        second.sup.load()
        second.tick()
        st = second.state()
        assert (st["state"], st["pid"], st["sdk"]["players"]) == (
            "ready",
            first.state()["pid"],
            ["ann"],
        )
        # The game's old URL and token still work.
        with GameServerSDK(env["CHANGEOVER_SDK_URL"], env["CHANGEOVER_SDK_TOKEN"]) as game:
            game.health()
        assert len(second.procs.started) == 1  # nothing was started again
    finally:
        second.sup.close()
        second.sdk.stop()


def test_a_process_gone_while_the_agent_was_down_is_restarted(tmp_path: Path) -> None:
    first = make_host(tmp_path)
    first.sup.apply([desired()])
    first.tick()
    first.sup.close()
    first.sdk.stop()
    first.procs.exit(next(iter(first.procs.running)), 0)
    second = make_host(tmp_path, procs=first.procs)
    try:
        second.sup.load()
        assert second.state()["error"] == "the process ended while the agent was down"
        second.tick()
        assert len(second.procs.started) == 2
    finally:
        second.sup.close()
        second.sdk.stop()


def test_the_control_plane_can_override_the_stop_signal_and_timeout(host: Host) -> None:
    host.procs.obey = False
    host.sup.apply([desired()])
    host.tick()
    stop = desired(want="stopped")
    stop["stop"] = {"signal": "SIGINT", "timeout_s": 2}  # a patch job's stop method
    host.sup.apply([stop])
    host.tick()  # no SDK contact: the signal goes at once
    pid = next(iter(host.procs.running))
    assert host.procs.signals == [(pid, signal.SIGINT)]
    host.tick(2.1)  # its 2 s, not the profile's 10
    assert host.procs.signals[-1] == (pid, signal.SIGKILL)


def test_a_hard_kill_does_not_wait_for_a_save(host: Host) -> None:
    host.sup.apply([desired()])
    host.tick()
    with host.game() as game:
        game.ready()
    host.tick(1)
    stop = desired(want="stopped")
    stop["notice"] = {"reason": "update", "deadline": host.clock.t + 30}
    stop["stop"] = {"signal": "SIGKILL", "timeout_s": 0}
    host.sup.apply([stop])
    host.tick()
    assert [s for _, s in host.procs.signals] == [signal.SIGKILL]
    host.tick()
    assert host.state()["state"] == "stopped"


def test_an_unknown_stop_override_falls_back_to_the_profile(host: Host) -> None:
    host.procs.obey = False
    host.sup.apply([desired()])
    host.tick()
    stop = desired(want="stopped")
    stop["stop"] = {"signal": "SIGSEGV", "timeout_s": "soon"}
    host.sup.apply([stop])
    host.tick()
    pid = next(iter(host.procs.running))
    assert host.procs.signals == [(pid, signal.SIGTERM)]
    host.tick(9)
    assert host.procs.signals == [(pid, signal.SIGTERM)]  # the profile's 10 s


def test_state_dirs_are_per_slot_and_a_slot_is_never_shared_by_two_processes(
    host: Host,
) -> None:
    cmd = ["game", "--world", "{state_dir}/world", "--common", "{shared_dir}"]
    host.sup.apply([desired(1, command=cmd), desired(2, command=cmd)])
    host.tick()
    one, two = (s.env for s in host.procs.started)
    assert one["CHANGEOVER_STATE_DIR"] != two["CHANGEOVER_STATE_DIR"]
    assert one["CHANGEOVER_SHARED_DIR"] == two["CHANGEOVER_SHARED_DIR"]
    assert host.procs.started[0].argv[2] == one["CHANGEOVER_STATE_DIR"] + "/world"
    assert host.procs.started[1].argv[4] == two["CHANGEOVER_SHARED_DIR"]
    assert Path(one["CHANGEOVER_STATE_DIR"]).is_dir()
    # Instance 3 takes over slot 0 while instance 1 still runs there: it waits.
    host.sup.apply(
        [
            desired(1, "stopped", command=cmd),
            desired(2, command=cmd),
            desired(3, slot=0, command=cmd),
        ]
    )
    host.procs.obey = False  # instance 1 takes its time to save and go
    host.tick()
    assert len(host.procs.started) == 2
    st = host.state(3)
    assert st["state"] == "staging" and "waiting for instance 1" in st["error"]
    host.tick(100)  # past the save grace and the stop timeout: killed
    host.tick()
    assert len(host.procs.started) == 3
    assert host.procs.started[2].env["CHANGEOVER_STATE_DIR"] == one["CHANGEOVER_STATE_DIR"]
    assert host.state(1)["exit"]["how"] == "killed"


def test_an_unhealthy_instance_gets_its_stop_signal_then_the_kill_after_the_timeout(
    host: Host,
) -> None:
    health = {"type": "sdk", "start_grace_s": 1, "interval_s": 0.1}
    host.sup.apply([desired(health=health, stop_signal="SIGINT", stop_timeout_s=10)])
    host.procs.obey = False
    host.tick()
    pid = next(iter(host.procs.running))
    host.tick(2)  # never ready within its grace: stopped as any stop is
    assert host.procs.signals == [(pid, signal.SIGINT)]
    host.tick(5)
    assert host.procs.signals == [(pid, signal.SIGINT)]  # still within its stop timeout
    host.tick(6)
    assert host.procs.signals[-1] == (pid, signal.SIGKILL)
    host.tick()
    st = host.state()
    assert st["state"] == "failed" and "not ready after 1 s" in st["error"]
    assert st["exit"]["how"] == "killed" and st["exit"]["reason"] == "failed health check"
    assert st["exit"]["signal"] == "SIGKILL"


def test_how_a_process_ended_is_recorded(host: Host) -> None:
    host.sup.apply([desired(health={"type": "none"})])
    host.tick()
    pid = next(iter(host.procs.running))
    host.procs.exit(pid, 3)
    host.tick()
    assert host.state()["exit"] | {"at": 0} == {
        "how": "crashed",
        "code": 3,
        "signal": None,
        "reason": None,
        "at": 0,
    }
    host.tick(5)  # restarted after its back-off
    pid = next(iter(host.procs.running))
    host.sup.apply([desired(want="stopped", health={"type": "none"})])
    host.procs.obey = False
    host.tick()
    host.tick(1)
    assert host.procs.signals[-1] == (pid, signal.SIGTERM)
    host.procs.exit(pid, 0)  # saved and left by itself
    host.tick()
    st = host.state()
    assert st["state"] == "stopped"
    assert (st["exit"]["how"], st["exit"]["code"], st["exit"]["reason"]) == ("exited", 0, "stop")


def test_a_command_without_a_slash_is_found_in_the_version_directory(host: Host) -> None:
    vdir = host.stager.staging.version_dir(MID)
    vdir.mkdir(parents=True)
    (vdir / "run-server").write_text("#!/bin/sh\n")
    (vdir / "run-server").chmod(0o755)
    host.sup.apply([desired(command=["run-server", "{port}"]), desired(2, command=["sh", "-c"])])
    host.tick()
    assert host.procs.started[0].argv[0] == str(vdir / "run-server")
    assert host.procs.started[1].argv[0] == "sh"  # not in the build: the host's PATH
