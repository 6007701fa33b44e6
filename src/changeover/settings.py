"""Configuration: one frozen dataclass, read from the environment in one place.

Only :func:`load` looks at ``CHANGEOVER_*`` variables; everything else receives a
``Settings``. Units are in the field names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from changeover.errors import InvalidInput

DEFAULT_PORT = 8470


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("changeover-data")
    database_url: str | None = None
    """SQLAlchemy URL; ``None`` means SQLite at ``data_dir/changeover.db``."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    job_poll_s: float = 0.5
    job_lease_s: float = 60.0
    """A job whose worker stops renewing its lease for this long is run again."""
    max_json_bytes: int = 64 << 20
    cdn_purge_url: str | None = None

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'changeover.db').resolve()}"


def load(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from ``CHANGEOVER_*`` variables, then explicit overrides (CLI flags).

    Raises:
        InvalidInput: a variable that does not parse (e.g. a non-numeric port).
    """
    env = os.environ if env is None else env
    s = Settings()
    if v := env.get("CHANGEOVER_DATA"):
        s = replace(s, data_dir=Path(v))
    if v := env.get("CHANGEOVER_DATABASE_URL"):
        s = replace(s, database_url=v)
    if v := env.get("CHANGEOVER_CDN_PURGE_URL"):
        s = replace(s, cdn_purge_url=v)
    s = replace(
        s,
        job_poll_s=_seconds(env, "CHANGEOVER_JOB_POLL_S", s.job_poll_s),
        job_lease_s=_seconds(env, "CHANGEOVER_JOB_LEASE_S", s.job_lease_s),
    )
    given = {k: v for k, v in overrides.items() if v is not None}
    if "data_dir" in given:
        given["data_dir"] = Path(str(given["data_dir"]))
    return replace(s, **given)  # type: ignore[arg-type]


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise InvalidInput(f"{name} must be positive, got {raw!r}")
    return value
