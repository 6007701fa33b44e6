"""Configuration: one frozen dataclass, read from the environment in one place.

Only :func:`load` looks at ``CHANGEOVER_*`` variables; everything else receives a
``Settings``. Units are in the field names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from changeover.content.trust import TrustPolicy
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
    """POSTed {"paths": [...]} after each publish: the paths a CDN must invalidate."""
    publish_every_s: float = 5.0
    """How often the signed metadata is reconciled with the database and re-signed."""
    trust_policy: TrustPolicy = field(default_factory=TrustPolicy)

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
        publish_every_s=_seconds(env, "CHANGEOVER_PUBLISH_EVERY_S", s.publish_every_s),
        trust_policy=TrustPolicy(
            timestamp_expiry_s=_seconds(
                env, "CHANGEOVER_TIMESTAMP_EXPIRY_S", s.trust_policy.timestamp_expiry_s
            )
        ),
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
