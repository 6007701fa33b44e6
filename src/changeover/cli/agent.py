"""``changeover agent``: run the host agent in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from changeover.cli import durations
from changeover.cli.output import ServerOpt, TokenOpt
from changeover.errors import InvalidInput


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)


def _port_range(value: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("-")
    if not (sep and lo.isdigit() and hi.isdigit() and 1024 <= int(lo) <= int(hi) <= 65535):
        raise InvalidInput(f"--ports {value!r} must read LOW-HIGH within 1024-65535")
    return int(lo), int(hi)


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_overlap(ports: tuple[int, int], kernel_range: str) -> tuple[int, int] | None:
    """The part of ``ports`` inside the kernel's ephemeral range (``"32768\t60999"``, as
    Linux gives it), or None. A port there may be taken by any outgoing connection between
    the agent's check that it is free and its game's bind: the game then fails to start."""
    try:
        first, last = (int(x) for x in kernel_range.split())
    except ValueError:
        return None
    lo, hi = max(ports[0], first), min(ports[1], last)
    return (lo, hi) if lo <= hi else None


def agent(
    name: Annotated[str, typer.Option(help="This host's name (unique among live agents).")],
    region: Annotated[str, typer.Option(help="The region this host is in.")],
    slots: Annotated[int, typer.Option(help="How many instances this host may run.", min=1)] = 10,
    work: Annotated[
        Path, typer.Option(help="Work directory: staged versions, instance records, logs.")
    ] = Path("changeover-agent"),
    address: Annotated[
        str, typer.Option(help="Address players reach this host at (games listen on it).")
    ] = "127.0.0.1",
    ports: Annotated[str, typer.Option(help="Port range for instances.")] = "7000-7999",
    sdk_port: Annotated[
        int | None, typer.Option(help="Port of the local SDK endpoint (kept across restarts).")
    ] = None,
    content: Annotated[
        str | None, typer.Option(help="Content tree URL (default: the server's /content).")
    ] = None,
    keep_staged: Annotated[
        float,
        typer.Option(
            help="How long a version stays staged once nothing wants it (a job's old build,"
            " for a quick revert): 0, 30m, 12h.",
            parser=durations.parser("--keep-staged"),
        ),
    ] = 12 * 3600.0,
    min_rate: Annotated[
        str | None,
        typer.Option(
            "--min-rate",
            help="Slowest average a download may have before it is cut and retried, e.g."
            " 32K (the default, bytes/s): each may take 30 s plus its size at this rate.",
        ),
    ] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
) -> None:
    """Run the host agent: register, heartbeat, stage versions, run and adopt instances."""
    from changeover.agent.main import Agent, AgentConfig
    from changeover.cli.fastpath import parse_rate
    from changeover.launcher.fetch import DEFAULT_MIN_RATE

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s agent %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not server:
        raise InvalidInput("no server given: pass --server URL or set CHANGEOVER_URL")
    config = AgentConfig(
        server=server.rstrip("/"),
        token=token,
        name=name,
        region=region,
        work=work,
        slots=slots,
        address=address,
        port_range=_port_range(ports),
        sdk_port=sdk_port,
        content_url=content,
        keep_staged_s=keep_staged,
        min_rate=parse_rate(min_rate, "--min-rate") or DEFAULT_MIN_RATE,
    )
    try:
        clash = ephemeral_overlap(config.port_range, EPHEMERAL_PORTS.read_text())
    except OSError:  # not Linux
        clash = None
    if clash is not None:
        logging.getLogger("changeover.agent").warning(
            "--ports %s: ports %d-%d are in the kernel's ephemeral range (%s), which outgoing"
            " connections take; a game given one of them may fail to bind. Pick a range"
            " outside it, as the default 7000-7999 is",
            ports,
            *clash,
            EPHEMERAL_PORTS,
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Agent(config).run(stop)
