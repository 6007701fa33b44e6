"""Database engine, sessions and migrations.

SQLite (the default, one file in the data directory, WAL) and PostgreSQL share one schema,
built by Alembic. Writes go through :meth:`Database.write`, which on SQLite takes the
write lock up front (``BEGIN IMMEDIATE``) so two writers queue instead of deadlocking on
a lock upgrade; PostgreSQL relies on row locks and compare-and-set updates instead.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from importlib import resources
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Engine,
    Float,
    Result,
    any_,
    bindparam,
    create_engine,
    event,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Session, sessionmaker

from changeover.errors import ChangeoverError, InvalidInput


class Base(DeclarativeBase):
    pass


def now() -> float:
    """Wall-clock time as a unix timestamp: how every time is stored."""
    return time.time()


_SQLITE_CLOCK = "((julianday('now') - 2440587.5) * 86400.0)"
_PG_CLOCK = "extract(epoch FROM clock_timestamp())"


def clock_sql(s: Session) -> ColumnElement[float]:
    """The database's clock, as SQL: one clock for every replica of the control plane
    (``instances.changed_at`` and the leader's lease are set from it), whatever their own
    machines' clocks say."""
    sqlite = s.get_bind().dialect.name == "sqlite"
    return literal_column(_SQLITE_CLOCK if sqlite else _PG_CLOCK, Float)


def db_clock(s: Session) -> float:
    """The database's clock (``clock_sql``), read."""
    return float(s.scalar(select(clock_sql(s))) or 0.0)


def among(
    s: Session, column: InstrumentedAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter. A patch
    job's batch names 200 rows: as an ``IN`` list that is 200 parameters, expanded into
    the SQL on every execution and too long a statement for psycopg's cache, which then
    parsed it again each time (a tenth of the job runner's time, measured)."""
    listed = list(values)
    if s.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, listed, type_=ARRAY(column.type)))
    return column.in_(listed)


def rowcount(result: Result[Any]) -> int:
    """The rows an ``UPDATE`` or ``DELETE`` matched (``Session.execute`` types its result
    as a plain ``Result``, which has no ``rowcount``)."""
    return int(cast(CursorResult[Any], result).rowcount)


SQLITE_AUTOCHECKPOINT_PAGES = 16_384
"""Write-ahead-log pages (64 MiB at 4 KiB) after which a committing writer checkpoints
itself: only a fallback, should ``Database.checkpoint`` not run. At SQLite's default of
1,000 pages, the allocator's commits did the checkpoint (copy and ``fsync``) five times a
second under load, each stalling one batch by 10-20 ms: most of the allocation p99."""
CHECKPOINT_EVERY_S = 1.0
"""How often the job runner checkpoints an SQLite database (``Database.checkpoint``)."""


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's own transaction handling would defeat BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def _generic_plans(engine: Engine) -> None:
    """Plan each statement once for any parameter values, not for the values of each call.

    For statements whose best plan does not depend on their values, where a plan for the
    values can only be misled by stale statistics. The allocator's are such: every host's
    heartbeat is newer than the last ``ANALYZE``, so "hosts seen in the last 10 s" looks
    like no host at all, and the planner read and sorted the whole fleet (29 ms at 10,000
    instances) instead of walking the allocation index.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # a setting for the session, not one transaction
        with dbapi_conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_generic_plan")
        dbapi_conn.autocommit = autocommit


def _client_checks(engine: Engine) -> None:
    """PostgreSQL notices within a second that a replica's process is gone, even while one
    of its statements waits for a lock, and ends that transaction: otherwise a killed
    leader's waiting transaction would keep its locks (the lease's among them,
    ``control.leadership``) until the lock it waits for is released."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # a setting for the session, not one transaction
        with dbapi_conn.cursor() as cur:
            cur.execute(  # PostgreSQL 14 and newer have the setting
                "SELECT set_config('client_connection_check_interval', '1000', false)"
                " WHERE current_setting('server_version_num')::int >= 140000"
            )
        dbapi_conn.autocommit = autocommit


class FairLock:
    """A reentrant lock handed over in arrival order, with one lane that goes first.

    ``threading.Lock`` has no order: a thread that releases it and asks again at once (the
    reconciler applying thousands of actions, batch after batch) usually gets it back
    before a waiter wakes, and the waiters (agents' syncs) can starve for many seconds.

    ``urgent()`` waits in the first lane: small writes that must not queue behind a busy
    server's (the leader's lease: late, it is lost; hosts' heartbeats). They go before the
    other waiters, but never twice in a row while another waits. (Server Allocate's
    batches there too were tried: under a patch job at 10,000 instances, allocations and
    the job both slowed down, the job's syncs waiting twice as long.)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting: deque[int] = deque()
        self._urgent: deque[int] = deque()
        self._owner: int | None = None
        self._depth = 0
        self._last_urgent = False
        """Whether the last holder came from the urgent lane."""

    def __enter__(self) -> FairLock:
        self.acquire(urgent=False)
        return self

    def __exit__(self, *_: object) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    @contextmanager
    def urgent(self) -> Iterator[FairLock]:
        self.acquire(urgent=True)
        try:
            yield self
        finally:
            self.__exit__()

    def acquire(self, *, urgent: bool) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            lane = self._urgent if urgent else self._waiting
            lane.append(me)
            while self._owner is not None or self._next() != me:
                self._cond.wait()
            lane.popleft()
            self._owner, self._depth, self._last_urgent = me, 1, urgent

    def _next(self) -> int | None:
        if self._urgent and not (self._last_urgent and self._waiting):
            return self._urgent[0]
        if self._waiting:
            return self._waiting[0]
        return None


def unstorable(error: BaseException) -> InvalidInput | None:
    """The input error behind a database error, if a value the caller sent caused it.

    The API bounds what a request may carry (``control.http_input``); this is the boundary
    behind it, for whatever still gets through: an integer past 64 bits (SQLite's driver
    raises ``OverflowError``, PostgreSQL "out of range"), text PostgreSQL refuses (a NUL
    character) or no driver can encode (a lone surrogate).
    """
    if isinstance(error, DataError):
        reason = str(error.orig).splitlines()[0][:200] if error.orig else "refused"
        return InvalidInput(f"a value in the request cannot be stored: {reason}")
    if isinstance(error, OverflowError) and "SQLite" in str(error):
        return InvalidInput("a number in the request is out of range (64-bit signed)")
    if isinstance(error, UnicodeEncodeError):
        return InvalidInput("text in the request is not valid Unicode")
    return None


@contextmanager
def _refusing_unstorable() -> Iterator[None]:
    """Raises: InvalidInput: in place of an error :func:`unstorable` recognises."""
    try:
        yield
    except (DataError, OverflowError, UnicodeEncodeError) as e:
        if (refusal := unstorable(e)) is None:
            raise
        raise refusal from e


_fence: ContextVar[Callable[[Session], None] | None] = ContextVar("fence", default=None)


@contextmanager
def fenced(check: Callable[[Session], None] | None) -> Iterator[None]:
    """Run ``check`` first in every write transaction of this context (this thread, and
    threads started with a copy of its context): work that must run once, on the leader
    only, commits nothing once the leader has lost its lease (``control.leadership``).
    None: no check (the lease's own transactions)."""
    token = _fence.set(check)
    try:
        yield
    finally:
        _fence.reset(token)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        try:
            self.engine = create_engine(url, **kwargs)
        except Exception as e:
            raise ChangeoverError(f"cannot use database URL {url!r}: {e}") from e
        if self.is_sqlite:
            _sqlite_pragmas(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._hot_engine: Engine | None = None
        self._hot_sessions = self._sessions
        self._urgent_engine: Engine | None = None
        self._urgent_sessions = self._sessions
        if not self.is_sqlite:
            self._hot_engine = create_engine(url, pool_size=1, max_overflow=2)
            _generic_plans(self._hot_engine)
            # Urgent writes (the lease, the heartbeats) never wait for a connection behind a
            # busy server's: with every pooled one taken by syncs, a renewal waited for the
            # pool past its lease (BENCHMARKS.md, patch jobs on PostgreSQL at 10,000).
            self._urgent_engine = create_engine(
                url, pool_size=2, max_overflow=2, pool_pre_ping=True
            )
            for engine in (self.engine, self._hot_engine, self._urgent_engine):
                _client_checks(engine)
            self._hot_sessions = sessionmaker(self._hot_engine, expire_on_commit=False)
            self._urgent_sessions = sessionmaker(self._urgent_engine, expire_on_commit=False)
        # SQLite has one writer at a time, and its waiters poll with sleeps, not in turn: under
        # load (a hundred agents syncing) a writer could starve past the busy timeout. Our own
        # threads queue here instead, in turn. PostgreSQL locks rows, so its writers go in
        # parallel.
        self._write_lock: AbstractContextManager[Any] = (
            FairLock() if self.is_sqlite else nullcontext()
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with _refusing_unstorable(), self._sessions() as s:
            yield s

    @contextmanager
    def write(self, *, hot_path: bool = False, urgent: bool = False) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception.

        ``urgent``: for small writes that must not queue behind a busy server's (the
        leader's lease, hosts' heartbeats): on SQLite, the write lock's urgent lane
        (``FairLock``); on PostgreSQL, connections of their own.

        ``hot_path``: for one thread's short transactions repeated many times a second, of
        the same few statements (the allocator's batches). On PostgreSQL they get their own
        connections, set up by ``_generic_plans`` and not pinged before each use: two
        round trips fewer per transaction. A connection found broken fails its
        transaction and is replaced, so the caller must be ready to run it again.
        """
        sessions = self._hot_sessions if hot_path else self._sessions
        if urgent:
            sessions = self._urgent_sessions
        lock = self._write_lock
        if urgent and isinstance(lock, FairLock):
            lock = lock.urgent()
        with _refusing_unstorable(), lock, sessions() as s:
            s.connection(execution_options={"write": True})
            try:
                if (check := _fence.get()) is not None:
                    check(s)
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file, off the writers' path
        (a ``PASSIVE`` checkpoint waits for no reader or writer). Nothing on PostgreSQL."""
        if not self.is_sqlite:
            return
        with self.engine.connect() as c:
            # The driver's connection is in autocommit (``_sqlite_pragmas``): a checkpoint
            # cannot run inside the transaction SQLAlchemy would begin.
            raw = c.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (safe to call on every start)."""
        cfg = Config()
        cfg.set_main_option(
            "script_location", str(resources.files("changeover.control") / "migrations")
        )
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            try:
                command.upgrade(cfg, "head")
            except OperationalError as e:
                raise ChangeoverError(f"cannot migrate database {self.safe_url}: {e.orig}") from e

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
        for engine in (self._hot_engine, self._urgent_engine):
            if engine is not None:
                engine.dispose()
