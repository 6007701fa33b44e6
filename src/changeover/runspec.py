"""How to run and check one game-server instance: the run part of a profile.

Pure and shared: the control plane validates a profile with it when the profile is made,
and the host agent reads the same spec from its desired state to start, check and stop
instances. One place owns the rules, so an agent never meets a spec the API accepted but
it cannot run.

    RunSpec
    ├── command        argv; placeholders {port}, {port.<name>}, {version_dir}, {instance_id}
    ├── ports          one per name, tcp or udp; the agent picks each from its range unless fixed
    ├── env            extra variables (CHANGEOVER_* is reserved for the agent)
    ├── health         sdk heartbeat | tcp | udp | http GET | command | none
    ├── stop_signal    graceful signal (SIGTERM), then SIGKILL after stop_timeout_s (30)
    └── capacity       players one instance takes
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from changeover.errors import InvalidInput

HEALTH_TYPES: Final = ("sdk", "tcp", "udp", "http", "command", "none")
STOP_SIGNALS: Final = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL")
PLACEHOLDER_RE: Final = re.compile(r"\{([a-z_]+(?:\.[a-z0-9_-]+)?)\}")
PORT_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_ARGS: Final = 128
MAX_ARG_CHARS: Final = 4096
DEFAULT_STOP_TIMEOUT_S: Final = 30.0


def _number(d: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidInput(f"{key} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _int(d: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{key} must be a whole number from {lo} to {hi}, got {value!r}")
    return value


def _check_keys(d: Mapping[str, Any], allowed: set[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise InvalidInput(f"{what} must be an object")
    unknown = set(d) - allowed
    if unknown:
        raise InvalidInput(
            f"unknown {what} field(s): {', '.join(sorted(map(str, unknown)))};"
            f" known: {', '.join(sorted(allowed))}"
        )


def _argv(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidInput(f"{what} must be a non-empty list of arguments")
    if len(value) > MAX_ARGS:
        raise InvalidInput(f"{what} has {len(value)} arguments; the limit is {MAX_ARGS}")
    for arg in value:
        if not isinstance(arg, str) or len(arg) > MAX_ARG_CHARS or "\0" in arg:
            raise InvalidInput(f"every argument of {what} must be a string without NUL")
    if not value[0]:
        raise InvalidInput(f"{what} must start with a program name")
    return tuple(value)


@dataclass(frozen=True)
class PortSpec:
    """A port each instance listens on; ``port`` fixes it (then one instance per host)."""

    name: str = "game"
    protocol: str = "tcp"
    port: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PortSpec:
        _check_keys(d, {"name", "protocol", "port"}, "port")
        name, protocol, port = d.get("name", "game"), d.get("protocol", "tcp"), d.get("port")
        if not isinstance(name, str) or not PORT_NAME_RE.fullmatch(name):
            raise InvalidInput(f"port name {name!r} must match {PORT_NAME_RE.pattern}")
        if protocol not in ("tcp", "udp"):
            raise InvalidInput(f"port {name}: protocol must be tcp or udp, not {protocol!r}")
        if port is not None:
            port = _int(d, "port", 0, 1, 65535)
        return cls(name=name, protocol=protocol, port=port)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "port": self.port}


@dataclass(frozen=True)
class HealthCheck:
    """When an instance counts as ready and, after that, as alive.

    ``sdk``: the game called ready and its heartbeats are at most ``timeout_s`` old.
    ``tcp``: a connection to the first port succeeds. ``udp``: a datagram to it is not
    refused. ``http``: ``GET http://127.0.0.1:<port><path>`` answers 2xx. ``command``:
    the command exits 0 within ``timeout_s``. ``none``: ready once started.
    ``failures`` failed checks in a row after ready restart the instance; before ready,
    ``start_grace_s`` is how long it may take.
    """

    type: str = "sdk"
    path: str = "/"
    command: tuple[str, ...] = ()
    interval_s: float = 1.0
    timeout_s: float = 5.0
    start_grace_s: float = 60.0
    failures: int = 3

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HealthCheck:
        _check_keys(
            d,
            {"type", "path", "command", "interval_s", "timeout_s", "start_grace_s", "failures"},
            "health check",
        )
        kind = d.get("type", "sdk")
        if kind not in HEALTH_TYPES:
            raise InvalidInput(
                f"health check type {kind!r} is not one of {', '.join(HEALTH_TYPES)}"
            )
        path = d.get("path", "/")
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 2000:
            raise InvalidInput("health check path must start with '/'")
        command: tuple[str, ...] = ()
        if kind == "command":
            command = _argv(d.get("command"), "health check command")
        elif d.get("command"):
            raise InvalidInput("a health check command needs type 'command'")
        return cls(
            type=kind,
            path=path,
            command=command,
            interval_s=_number(d, "interval_s", 1.0, 0.05, 3600),
            timeout_s=_number(d, "timeout_s", 5.0, 0.05, 3600),
            start_grace_s=_number(d, "start_grace_s", 60.0, 0, 86400),
            failures=_int(d, "failures", 3, 1, 1000),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "path": self.path,
            "command": list(self.command),
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "start_grace_s": self.start_grace_s,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class RunSpec:
    """Everything an agent needs to run an instance of a profile (see the module docs)."""

    command: tuple[str, ...]
    ports: tuple[PortSpec, ...] = (PortSpec(),)
    env: Mapping[str, str] = field(default_factory=dict)
    health: HealthCheck = HealthCheck()
    stop_signal: str = "SIGTERM"
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    capacity: int = 1

    def __post_init__(self) -> None:
        names = [p.name for p in self.ports]
        if not names:
            raise InvalidInput("a profile needs at least one port")
        if len(set(names)) != len(names):
            raise InvalidInput(f"port names must be unique, got {', '.join(names)}")
        for arg in (*self.command, *self.health.command):
            for name in PLACEHOLDER_RE.findall(arg):
                self._check_placeholder(name)

    def _check_placeholder(self, name: str) -> None:
        if name in ("port", "version_dir", "instance_id"):
            return
        port_names = {p.name for p in self.ports}
        if name.startswith("port.") and name[5:] in port_names:
            return
        raise InvalidInput(
            f"unknown placeholder {{{name}}} in the command; use {{port}}, "
            + ", ".join(f"{{port.{n}}}" for n in sorted(port_names))
            + ", {version_dir} or {instance_id}"
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        """Parse and check a spec.

        Raises:
            InvalidInput: an unknown field or any value out of its rules, with the reason.
        """
        _check_keys(
            d,
            {"command", "ports", "env", "health", "stop_signal", "stop_timeout_s", "capacity"},
            "profile",
        )
        ports_raw = d.get("ports") or [{"name": "game", "protocol": "tcp"}]
        if not isinstance(ports_raw, list) or len(ports_raw) > 16:
            raise InvalidInput("ports must be a list of at most 16 ports")
        env_raw = d.get("env") or {}
        if not isinstance(env_raw, Mapping) or len(env_raw) > 256:
            raise InvalidInput("env must be an object of at most 256 variables")
        env: dict[str, str] = {}
        for k, v in env_raw.items():
            if not isinstance(k, str) or not ENV_NAME_RE.fullmatch(k):
                raise InvalidInput(f"environment variable name {k!r} is not valid")
            if k.upper().startswith("CHANGEOVER_"):
                raise InvalidInput(f"{k}: CHANGEOVER_* variables are set by the agent")
            if not isinstance(v, str) or "\0" in v or len(v) > MAX_ARG_CHARS:
                raise InvalidInput(f"environment variable {k} must be a string without NUL")
            env[k] = v
        stop_signal = d.get("stop_signal", "SIGTERM")
        if stop_signal not in STOP_SIGNALS:
            raise InvalidInput(
                f"stop_signal {stop_signal!r} is not one of {', '.join(STOP_SIGNALS)}"
            )
        return cls(
            command=_argv(d.get("command"), "command"),
            ports=tuple(PortSpec.from_dict(p) for p in ports_raw),
            env=env,
            health=HealthCheck.from_dict(d.get("health") or {}),
            stop_signal=stop_signal,
            stop_timeout_s=_number(d, "stop_timeout_s", DEFAULT_STOP_TIMEOUT_S, 0, 86400),
            capacity=_int(d, "capacity", 1, 1, 100000),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "ports": [p.to_dict() for p in self.ports],
            "env": dict(self.env),
            "health": self.health.to_dict(),
            "stop_signal": self.stop_signal,
            "stop_timeout_s": self.stop_timeout_s,
            "capacity": self.capacity,
        }

    def render(
        self, argv: tuple[str, ...], ports: Mapping[str, int], version_dir: str, instance_id: str
    ) -> list[str]:
        """``argv`` with its placeholders filled in for one instance."""
        values = {f"port.{name}": str(port) for name, port in ports.items()}
        values["port"] = str(ports[self.ports[0].name])
        values["version_dir"] = version_dir
        values["instance_id"] = instance_id
        return [PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), a) for a in argv]
