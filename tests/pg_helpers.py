"""A PostgreSQL of a test's own, and a connection that can be cut (imported as
``pg_helpers``): for failure drills that restart the database or cut one replica off from
it, which the machine's shared PostgreSQL (every other test's) must never suffer.

``private_postgres`` runs Debian's ``initdb`` and ``pg_ctl`` (as the ``postgres`` user
when the tests run as root, as PostgreSQL refuses root) on a free port of loopback.
``Cuttable`` is a TCP relay in front of it: ``cut`` closes every connection through it and
refuses new ones, as a network partition would; ``restore`` lets them through again.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gates import unavailable
from tests_helpers import free_port


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PrivatePostgres:
    url: str
    port: int
    _ctl: list[str]

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server comes back."""
        subprocess.run([*self._ctl, "-m", "fast", "-w", "restart"], check=True, capture_output=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Its files in a directory of its own under the system's temporary directory (pytest's
    are private to root, where the ``postgres`` user cannot reach), removed afterwards."""
    bindir = _pg_bin()
    if bindir is None:
        unavailable("postgresql-server", "PostgreSQL's initdb and pg_ctl are not installed")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="changeover-pg-"))
    try:
        with _running(bindir, root, as_postgres) as pg:
            yield pg
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _running(bindir: Path, root: Path, as_postgres: list[str]) -> Iterator[PrivatePostgres]:
    data = root / "pgdata"
    data.mkdir()
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    data.chmod(0o700)
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [
        *as_postgres,
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "pg.log"),
        "-o",
        options,
    ]
    subprocess.run([*ctl, "-w", "start"], check=True, capture_output=True)
    try:
        yield PrivatePostgres(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", port, ctl)
    finally:
        subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], check=False, capture_output=True)


class Cuttable:
    """A TCP relay from a free loopback port to ``target``, that can be cut and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close every relayed connection and stop listening (new ones are refused)."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
