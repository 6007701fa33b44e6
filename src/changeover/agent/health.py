"""Health checks of one instance: SDK heartbeat, TCP, UDP, HTTP GET, a command, or none.

Each check answers ``(healthy, why not)``. The SDK check only reads what the game told the
agent's SDK server, so it is instant; the others touch the network or start a process and
are run by the supervisor on a small thread pool, so a slow check never stalls the loop.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx

from changeover.runspec import HealthCheck
from changeover.sdk.state import InstanceSDKState

Result = tuple[bool, str]

LOCALHOST = "127.0.0.1"


def sdk_check(hc: HealthCheck, state: InstanceSDKState | None) -> Result:
    if state is None or not state.ready:
        return False, "the game has not called ready through the SDK"
    age = state.seconds_since_heartbeat()
    if age is None or age > hc.timeout_s:
        return False, f"no SDK heartbeat for {age or 0:.1f} s (limit {hc.timeout_s:g} s)"
    return True, ""


def tcp_check(port: int, timeout_s: float) -> Result:
    try:
        socket.create_connection((LOCALHOST, port), timeout=timeout_s).close()
    except OSError as e:
        return False, f"TCP port {port}: {e.strerror or e}"
    return True, ""


def udp_check(port: int, timeout_s: float) -> Result:
    """A datagram to a closed UDP port draws an ICMP "port unreachable", which a connected
    socket reports as a refused connection; silence means something is bound there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect((LOCALHOST, port))
            s.send(b"\0")
            s.recv(1)
        except ConnectionRefusedError:
            return False, f"UDP port {port}: nothing is listening"
        except TimeoutError:
            return True, ""
        except OSError as e:
            return False, f"UDP port {port}: {e.strerror or e}"
    return True, ""


def http_check(port: int, path: str, timeout_s: float) -> Result:
    url = f"http://{LOCALHOST}:{port}{path}"
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
    hc: HealthCheck, port: int, argv: list[str], cwd: Path, env: dict[str, str]
) -> Result:
    """The checks that may block (everything but sdk and none)."""
    if hc.type == "tcp":
        return tcp_check(port, hc.timeout_s)
    if hc.type == "udp":
        return udp_check(port, hc.timeout_s)
    if hc.type == "http":
        return http_check(port, hc.path, hc.timeout_s)
    if hc.type == "command":
        return command_check(argv, cwd, env, hc.timeout_s)
    return True, ""
