"""The locks that let several launchers share one cache: syncs of different branches, the
command line and the desktop app, in one process or several, at the same time.

* :class:`CacheUsers`: a sync (or an adoption) *uses* the object store from before it
  plans until its new tree is switched in; garbage collection deletes what no install
  references, so it runs only when nobody else uses the store, and nobody starts using it
  while it runs. Without this, a sync finishing on one branch deleted objects another
  branch's sync had just planned to link (or was writing: its ``.tmp-`` files too).
* :func:`metadata_lock`: python-tuf's updater rewrites its metadata directory in place
  (the trusted root is replaced by remove-then-create), so two refreshes of one directory
  at once fail with ``EEXIST`` or read a file half written. One refresh at a time per
  directory; the branches of one server share it (and so their trust).

Everything is ``filelock`` lock files (``flock`` on POSIX, ``LockFileEx`` on Windows; the
operating system releases them when a process dies, so a killed launcher leaves no lock
held). No ``fcntl`` here, and no SQLite (the packaged launcher leaves ``sqlite3`` out).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import filelock


class CacheUsers:
    """A shared/exclusive lock over one cache's object store, from plain lock files.

    A user holds a lock file of its own under ``locks/users/``, taken while holding the
    gate ``locks/cache.lock``. Garbage collection holds the gate throughout (so no user
    can join) and runs only if it can take every user file, i.e. if every one is stale.
    It never waits for users: when one is busy it skips, and that user, finishing later,
    collects (its own sync ends with a collection too). Only a gate held by a collection
    is ever waited for, and a collection ends by itself.
    """

    def __init__(self, cache: Path) -> None:
        self.locks = cache / "locks"
        self.users = self.locks / "users"
        self.gate = self.locks / "cache.lock"

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Use the object store (waits while a collection runs). Re-entrant in effect:
        nested uses each hold a file of their own."""
        self.users.mkdir(parents=True, exist_ok=True)
        mine = filelock.FileLock(self.users / f"{secrets.token_hex(8)}.lock", thread_local=False)
        with filelock.FileLock(self.gate, thread_local=False):
            mine.acquire()
        try:
            yield
        finally:
            mine.release()
            _remove(Path(mine.lock_file))

    @contextlib.contextmanager
    def alone(self) -> Iterator[bool]:
        """Yields True while nobody else uses the store (and nobody can start to), or
        False at once if someone does. Do not call it while using the store yourself:
        your own use counts as someone's."""
        self.users.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(self.gate, thread_local=False):
            for path in sorted(self.users.glob("*.lock")):
                probe = filelock.FileLock(path, thread_local=False)
                try:
                    probe.acquire(blocking=False)
                except filelock.Timeout:
                    yield False  # in use: its user collects when it is done
                    return
                # Free: its user died (or released and has not removed it yet). Gone.
                probe.release()
                _remove(path)
            yield True


@contextlib.contextmanager
def metadata_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory`` (a TUF metadata cache) for one refresh and its reads; waits for
    another holder, whose network time is bounded by its fetcher's deadlines."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(directory.parent / f"{directory.name}.lock", thread_local=False):
        yield


def _remove(path: Path) -> None:
    # filelock may have removed it on release already; on Windows a file another process
    # is probing cannot be removed for that instant: it is removed by a later collection.
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
