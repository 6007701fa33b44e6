"""Health checks of one instance: SDK heartbeat, TCP, UDP, HTTP GET, a command, or none.

Each check answers ``(healthy, why not)``. The SDK check only reads what the game told the
agent's SDK server, so it is instant; the others touch the network or start a process and
are run by the supervisor on a small thread pool, so a slow check never stalls the loop.

Network checks go to the address the agent was given (``--address``, which games are told
in ``CHANGEOVER_HOST``): a game that listens there only is reachable there only.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

from changeover.runspec import HealthCheck
from changeover.sdk.state import InstanceSDKState

Result = tuple[bool, str]


def sdk_check(hc: HealthCheck, state: InstanceSDKState | None) -> Result:
    if state is None or not state.ready:
        return False, "the game has not called ready through the SDK"
    age = state.seconds_since_heartbeat()
    if age is None or age > hc.timeout_s:
        return False, f"no SDK heartbeat for {age or 0:.1f} s (limit {hc.timeout_s:g} s)"
    return True, ""


def tcp_check(address: str, port: int, timeout_s: float) -> Result:
    try:
        socket.create_connection((address, port), timeout=timeout_s).close()
    except OSError as e:
        return False, f"TCP {address}:{port}: {e.strerror or e}"
    return True, ""


def udp_check(address: str, port: int, timeout_s: float) -> Result:
    """A datagram to a closed UDP port draws an ICMP "port unreachable", which a connected
    socket reports as a refused connection; silence means something is bound there. Weak:
    a hung server, or an ICMP message lost or filtered on the way, passes too."""
    with socket.socket(_family(address), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect((address, port))
            s.send(b"\0")
            s.recv(1)
        except ConnectionRefusedError:
            return False, f"UDP {address}:{port}: nothing is listening"
        except TimeoutError:
            return True, ""
        except OSError as e:
            return False, f"UDP {address}:{port}: {e.strerror or e}"
    return True, ""


def udp_probe(address: str, port: int, send: bytes, expect: bytes, timeout_s: float) -> Result:
    """The server proves it answers: ``send`` must draw a reply within ``timeout_s`` that
    starts with ``expect``. Replies that do not match (a late answer to an earlier probe)
    are read past until the time is up."""
    with socket.socket(_family(address), socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, port))
            s.send(send)
            deadline = time.monotonic() + timeout_s
            got = b""
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                got = s.recv(65535)
                if got.startswith(expect):
                    return True, ""
        except ConnectionRefusedError:
            return False, f"UDP {address}:{port}: nothing is listening"
        except TimeoutError:
            pass
        except OSError as e:
            return False, f"UDP {address}:{port}: {e.strerror or e}"
    if got:
        return (
            False,
            f"UDP {address}:{port}: the probe's reply {got[:32]!r} does not start with"
            f" {expect[:32]!r}",
        )
    return False, f"UDP {address}:{port}: no reply to the probe within {timeout_s:g} s"


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def http_check(address: str, port: int, path: str, timeout_s: float) -> Result:
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{port}{path}"
    try:
        r = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as e:
        return False, f"GET {url}: {e}"
    if not r.is_success:
        return False, f"GET {url} answered {r.status_code}"
    return True, ""


def command_check(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> Result:
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"health command did not finish within {timeout_s:g} s"
    except OSError as e:
        return False, f"health command {argv[0]!r} cannot run: {e}"
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).decode(errors="replace").strip()[-200:]
        return False, f"health command exited with {done.returncode}: {tail}"
    return True, ""


def network_check(
    hc: HealthCheck, address: str, port: int, argv: list[str], cwd: Path, env: dict[str, str]
) -> Result:
    """The checks that may block (everything but sdk and none)."""
    if hc.type == "tcp":
        return tcp_check(address, port, hc.timeout_s)
    if hc.type == "udp" and hc.send:
        return udp_probe(address, port, hc.send, hc.expect, hc.timeout_s)
    if hc.type == "udp":
        return udp_check(address, port, hc.timeout_s)
    if hc.type == "http":
        return http_check(address, port, hc.path, hc.timeout_s)
    if hc.type == "command":
        return command_check(argv, cwd, env, hc.timeout_s)
    return True, ""
