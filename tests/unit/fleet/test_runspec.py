"""The run spec a profile carries: parsing, every refusal, and placeholder rendering."""

from __future__ import annotations

import re
from typing import Any

import pytest

from changeover.errors import InvalidInput
from changeover.runspec import RunSpec


def test_defaults_and_round_trip() -> None:
    spec = RunSpec.from_dict({"command": ["python3", "server.py", "--port", "{port}"]})
    assert spec.ports[0].name == "game" and spec.ports[0].protocol == "tcp"
    assert (spec.health.type, spec.stop_signal, spec.stop_timeout_s, spec.capacity) == (
        "sdk",
        "SIGTERM",
        30.0,
        1,
    )
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_render_fills_placeholders() -> None:
    command = ["srv", "--port={port}", "--q={port.query}", "{version_dir}/x", "{instance_id}"]
    command += ["--world={state_dir}/w", "{shared_dir}"]
    spec = RunSpec.from_dict(
        {"command": command, "ports": [{"name": "game"}, {"name": "query", "protocol": "udp"}]}
    )
    dirs = {"version_dir": "/v/abc", "instance_id": "i7", "state_dir": "/s/0", "shared_dir": "/f"}
    argv = spec.render(spec.command, {"game": 7001, "query": 7002}, dirs)
    assert argv == ["srv", "--port=7001", "--q=7002", "/v/abc/x", "i7", "--world=/s/0/w", "/f"]


def test_state_mode_and_udp_probe() -> None:
    spec = RunSpec.from_dict(
        {
            "command": ["srv"],
            "ports": [{"protocol": "udp"}],
            "state": "exclusive",
            "health": {"type": "udp", "send_hex": "ffffffff54", "expect": "I"},
        }
    )
    assert spec.state == "exclusive"
    assert (spec.health.send, spec.health.expect) == (b"\xff\xff\xff\xffT", b"I")
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert RunSpec.from_dict({"command": ["srv"]}).state == "instance"
    for bad, text in [
        ({"state": "shared"}, "state 'shared' is not one of instance, exclusive"),
        ({"health": {"type": "tcp", "send": "x"}}, "needs type 'udp'"),
        ({"health": {"type": "udp", "expect": "x"}}, "needs a payload"),
        ({"health": {"type": "udp", "send_hex": "zz"}}, "hexadecimal"),
        ({"health": {"type": "udp", "send": "x", "send_hex": "00"}}, "not both"),
    ]:
        with pytest.raises(InvalidInput, match=re.escape(text)):
            RunSpec.from_dict({"command": ["srv"], **bad})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"command": []}, "non-empty list"),
        ({"command": "srv"}, "non-empty list"),
        ({"command": ["srv"], "bogus": 1}, "unknown profile field"),
        ({"command": ["srv", "{nope}"]}, "unknown placeholder {nope}"),
        ({"command": ["srv"], "ports": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"command": ["srv"], "ports": [{"protocol": "sctp"}]}, "tcp or udp"),
        ({"command": ["srv"], "ports": [{"port": 70000}]}, "port must be"),
        ({"command": ["srv"], "env": {"CHANGEOVER_SDK_URL": "x"}}, "set by the agent"),
        ({"command": ["srv"], "env": {"1BAD": "x"}}, "not valid"),
        ({"command": ["srv"], "stop_signal": "SIGSTOP"}, "stop_signal"),
        ({"command": ["srv"], "stop_timeout_s": -1}, "stop_timeout_s"),
        ({"command": ["srv"], "capacity": 0}, "capacity"),
        ({"command": ["srv"], "capacity": True}, "capacity"),
        ({"command": ["srv"], "health": {"type": "ping"}}, "health check type"),
        ({"command": ["srv"], "health": {"type": "http", "path": "x"}}, "start with '/'"),
        ({"command": ["srv"], "health": {"type": "command"}}, "health check command"),
        ({"command": ["srv"], "health": {"type": "tcp", "command": ["x"]}}, "needs type"),
    ],
)
def test_refusals(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("{", r"\{").replace("}", r"\}")):
        RunSpec.from_dict(spec)
