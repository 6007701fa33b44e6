"""How to run and check one game-server instance: the run part of a profile.

Pure and shared: the control plane validates a profile with it when the profile is made,
and the host agent reads the same spec from its desired state to start, check and stop
instances. One place owns the rules, so an agent never meets a spec the API accepted but
it cannot run.

    RunSpec
    ├── command        argv; placeholders {port}, {port.<name>}, {version_dir}, {instance_id},
    │                  {state_dir}, {shared_dir}; a program without a slash is looked for in
    │                  the version directory first, then on the host's PATH
    ├── ports          one per name, tcp or udp; the agent picks each from its range unless fixed
    ├── env            extra variables (CHANGEOVER_* is reserved for the agent)
    ├── health         sdk heartbeat | tcp | udp (optionally a probe: send, expect) | http GET |
    │                  command | none
    ├── stop_signal    graceful signal (SIGTERM), then SIGKILL after stop_timeout_s (30)
    ├── state          "instance" (default) or "exclusive": see STATE_MODES
    ├── capacity       players one instance takes
    ├── counters       Agones' counters a game may use: name -> {count, capacity}
    └── lists          Agones' lists a game may use: name -> {capacity, values}
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
STATE_MODES: Final = ("instance", "exclusive")
"""How an instance's own state directory (its slot's, ``{state_dir}``) passes on.

``instance``: a replacement started beside its running predecessor gets another slot (its
own directory); one started once its predecessor is being stopped takes its slot and
directory, and starts when the predecessor's process has ended. ``exclusive``: the state
must pass from each instance to its replacement, which always takes the predecessor's slot
and waits for it to end; methods that run old and new side by side are refused for it.
Either way no two live instances of a host ever share a slot."""
PLACEHOLDERS: Final = ("port", "version_dir", "instance_id", "state_dir", "shared_dir")
COUNT_NAME_RE: Final = re.compile(r"[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?")
"""A counter's or list's name: as a label key (Agones takes any map key; see
docs/sdk-protocol.md)."""
MAX_COUNTS: Final = 32
"""Counters, and lists, a profile may declare (each)."""
MAX_COUNTER: Final = 2**53
"""The largest count or capacity: exact in every JSON reader."""
MAX_LIST_CAPACITY: Final = 1000
"""Agones' own bound on a list's capacity."""
MAX_LIST_VALUE_CHARS: Final = 256
MAX_PROBE_BYTES: Final = 1400


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


def _probe_bytes(d: Mapping[str, Any], key: str) -> bytes:
    """``key`` (text, sent as UTF-8) or ``key_hex`` (any bytes) as bytes; b"" if neither."""
    text, hexed = d.get(key), d.get(f"{key}_hex")
    if text is not None and hexed is not None:
        raise InvalidInput(f"give the health check's {key} or {key}_hex, not both")
    if text is not None:
        if not isinstance(text, str):
            raise InvalidInput(f"health check {key} must be a string")
        raw = text.encode()
    elif hexed is not None:
        bad = InvalidInput(f"health check {key}_hex must be hexadecimal digits, got {hexed!r}")
        if not isinstance(hexed, str):
            raise bad
        try:
            raw = bytes.fromhex(hexed)
        except ValueError:
            raise bad from None
    else:
        return b""
    if len(raw) > MAX_PROBE_BYTES:
        raise InvalidInput(
            f"health check {key} is {len(raw)} bytes; the limit is {MAX_PROBE_BYTES}"
        )
    return raw


@dataclass(frozen=True)
class HealthCheck:
    """When an instance counts as ready and, after that, as alive.

    Network checks go to the address the agent was given (``--address``), first port.
    ``sdk``: the game called ready and its heartbeats are at most ``timeout_s`` old.
    ``tcp``: a connection to the first port succeeds. ``udp`` without a probe: a datagram
    to it is not refused (weak: silence passes, see docs/fleet.md); with ``send`` (or
    ``send_hex``): that payload must draw a reply within ``timeout_s``, starting with
    ``expect`` (or ``expect_hex``) when given. ``http``: ``GET http://<address>:<port><path>``
    answers 2xx. ``command``: the command exits 0 within ``timeout_s``. ``none``: ready
    once started. ``failures`` failed checks in a row after ready restart the instance
    (stop signal, stop timeout, then SIGKILL); before ready, ``start_grace_s`` is how long
    it may take.
    """

    type: str = "sdk"
    path: str = "/"
    command: tuple[str, ...] = ()
    interval_s: float = 1.0
    timeout_s: float = 5.0
    start_grace_s: float = 60.0
    failures: int = 3
    send: bytes = b""
    """The UDP probe's payload; empty: no probe, only "not refused"."""
    expect: bytes = b""
    """What the probe's reply must start with; empty: any reply."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HealthCheck:
        _check_keys(
            d,
            {
                "type",
                "path",
                "command",
                "interval_s",
                "timeout_s",
                "start_grace_s",
                "failures",
                "send",
                "send_hex",
                "expect",
                "expect_hex",
            },
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
        send, expect = _probe_bytes(d, "send"), _probe_bytes(d, "expect")
        if (send or expect) and kind != "udp":
            raise InvalidInput("a health check probe (send, expect) needs type 'udp'")
        if expect and not send:
            raise InvalidInput("a health check's expect needs a payload to send (send)")
        return cls(
            type=kind,
            path=path,
            command=command,
            interval_s=_number(d, "interval_s", 1.0, 0.05, 3600),
            timeout_s=_number(d, "timeout_s", 5.0, 0.05, 3600),
            start_grace_s=_number(d, "start_grace_s", 60.0, 0, 86400),
            failures=_int(d, "failures", 3, 1, 1000),
            send=send,
            expect=expect,
        )

    def to_dict(self) -> dict[str, Any]:
        probe = {"send_hex": self.send.hex(), "expect_hex": self.expect.hex()} if self.send else {}
        return {
            **probe,
            "type": self.type,
            "path": self.path,
            "command": list(self.command),
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "start_grace_s": self.start_grace_s,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class CounterSpec:
    """An Agones counter as a new game server starts with it (Agones' defaults)."""

    count: int = 0
    capacity: int = 1000


@dataclass(frozen=True)
class ListSpec:
    """An Agones list as a new game server starts with it (Agones' defaults)."""

    capacity: int = 1000
    values: tuple[str, ...] = ()


def check_list_value(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_LIST_VALUE_CHARS
        or not value.isprintable()
    ):
        raise InvalidInput(
            f"a list value must be 1 to {MAX_LIST_VALUE_CHARS} printable characters,"
            f" got {value!r:.80}"
        )
    return value


def _count_names(raw: object, what: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_COUNTS:
        raise InvalidInput(f"{what} must be an object of at most {MAX_COUNTS} entries")
    for name in raw:
        if not isinstance(name, str) or not COUNT_NAME_RE.fullmatch(name):
            raise InvalidInput(
                f"{what[:-1]} name {name!r} is not valid: lowercase letters, digits, '.', '_'"
                " and '-', at most 63, starting and ending with a letter or digit"
            )
    return raw


def _counters(raw: object) -> dict[str, CounterSpec]:
    out = {}
    for name, d in _count_names(raw, "counters").items():
        _check_keys(d, {"count", "capacity"}, f"counter {name}")
        capacity = _int(d, "capacity", 1000, 0, MAX_COUNTER)
        out[name] = CounterSpec(_int(d, "count", 0, 0, capacity), capacity)
    return out


def _lists(raw: object) -> dict[str, ListSpec]:
    out = {}
    for name, d in _count_names(raw, "lists").items():
        _check_keys(d, {"capacity", "values"}, f"list {name}")
        capacity = _int(d, "capacity", 1000, 0, MAX_LIST_CAPACITY)
        values = d.get("values") or []
        if not isinstance(values, list) or len(values) > capacity:
            raise InvalidInput(f"list {name}: values must be a list of at most {capacity}")
        checked = tuple(dict.fromkeys(check_list_value(v) for v in values))
        out[name] = ListSpec(capacity, checked)
    return out


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
    state: str = "instance"
    """One of ``STATE_MODES``."""
    counters: Mapping[str, CounterSpec] = field(default_factory=dict)
    lists: Mapping[str, ListSpec] = field(default_factory=dict)

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
        if name in PLACEHOLDERS:
            return
        port_names = {p.name for p in self.ports}
        if name.startswith("port.") and name[5:] in port_names:
            return
        raise InvalidInput(
            f"unknown placeholder {{{name}}} in the command; use {{port}}, "
            + ", ".join(f"{{port.{n}}}" for n in sorted(port_names))
            + ", {version_dir}, {instance_id}, {state_dir} or {shared_dir}"
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        """Parse and check a spec.

        Raises:
            InvalidInput: an unknown field or any value out of its rules, with the reason.
        """
        _check_keys(
            d,
            {
                "command",
                "ports",
                "env",
                "health",
                "stop_signal",
                "stop_timeout_s",
                "capacity",
                "state",
                "counters",
                "lists",
            },
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
        state = d.get("state", "instance")
        if state not in STATE_MODES:
            raise InvalidInput(f"state {state!r} is not one of {', '.join(STATE_MODES)}")
        return cls(
            command=_argv(d.get("command"), "command"),
            ports=tuple(PortSpec.from_dict(p) for p in ports_raw),
            env=env,
            health=HealthCheck.from_dict(d.get("health") or {}),
            stop_signal=stop_signal,
            stop_timeout_s=_number(d, "stop_timeout_s", DEFAULT_STOP_TIMEOUT_S, 0, 86400),
            capacity=_int(d, "capacity", 1, 1, 100000),
            state=state,
            counters=_counters(d.get("counters")),
            lists=_lists(d.get("lists")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": list(self.command),
            "ports": [p.to_dict() for p in self.ports],
            "env": dict(self.env),
            "health": self.health.to_dict(),
            "stop_signal": self.stop_signal,
            "stop_timeout_s": self.stop_timeout_s,
            "capacity": self.capacity,
            "state": self.state,
        }
        # Only when declared: the specs stored before counters and lists stay as they were.
        if self.counters:
            out["counters"] = {
                k: {"count": c.count, "capacity": c.capacity} for k, c in self.counters.items()
            }
        if self.lists:
            out["lists"] = {
                k: {"capacity": v.capacity, "values": list(v.values)} for k, v in self.lists.items()
            }
        return out

    def render(
        self, argv: tuple[str, ...], ports: Mapping[str, int], dirs: Mapping[str, str]
    ) -> list[str]:
        """``argv`` with its placeholders filled in for one instance; ``dirs`` gives
        ``version_dir``, ``instance_id``, ``state_dir`` and ``shared_dir``."""
        values = {f"port.{name}": str(port) for name, port in ports.items()}
        values["port"] = str(ports[self.ports[0].name])
        values.update(dirs)
        return [PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), a) for a in argv]
