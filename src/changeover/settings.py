"""Configuration: one frozen dataclass, read from the environment in one place.

Only :func:`load` looks at ``CHANGEOVER_*`` variables; everything else receives a
``Settings``. Units are in the field names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from changeover.content.patch_index import PatchMethod
from changeover.content.trust_policy import TrustPolicy
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
    job_lease_s: float = 15.0
    """A build, diff or version job whose worker stops renewing its lease (it renews every
    third of it) for this long, on the database's clock, is run again by any replica."""
    max_json_bytes: int = 64 << 20
    cdn_purge_url: str | None = None
    """POSTed {"paths": [...]} after each publish: the paths a CDN must invalidate."""
    content_bucket: str | None = None
    """``s3://name/prefix``: the content tree lives in this S3-compatible bucket, the data
    directory's copy is a cache (``content.bucket``); None: on the local disk alone."""
    s3_endpoint: str | None = None
    content_moved: bool = False
    """The content tree was moved on purpose (into a bucket, or a restored data directory):
    record its new place instead of refusing to start (``control.content_place``)."""
    """The S3 server, when it is not AWS (``http://minio.internal:9000``)."""
    leader_lease_s: float = 5.0
    """How long the leader's lease lasts unrenewed (``control.leadership``): when a leader
    dies, another replica takes over its work within this and a second."""
    publish_every_s: float = 5.0
    """How often the signed metadata is reconciled with the database and re-signed."""
    patch_tick_s: float = 0.5
    """How often the patch-job reconciler looks at unfinished jobs (a pass that finds
    nothing new only reads)."""
    trust_policy: TrustPolicy = field(default_factory=TrustPolicy)
    log_format: str = "text"
    """``text`` (for people) or ``json`` (one object per line, for a log pipeline)."""
    smtp_url: str | None = field(default=None, repr=False)
    """Where patch-job reports are mailed: ``smtp://[user:pass@]host:port`` (``?starttls=1``),
    ``smtp+starttls://…`` or ``smtps://…``; ``None`` = no mail."""
    mail_from: str = "changeover@localhost"
    webhook_url: str | None = None
    """Every patch-job event is POSTed here, signed with ``webhook_secret``."""
    webhook_secret: str | None = field(default=None, repr=False)
    report_every_s: float = 2.0
    """How often undelivered patch-job events are looked for."""
    report_retry_s: float = 5.0
    """The first retry delay of a failed report delivery; it doubles on each failure."""
    report_max_attempts: int = 10
    publish_budget_cpu_s: float = 90.0
    """CPU-seconds the patches of one version may take (``content.patch_choice``): over it,
    the patches from older versions are built by cheaper methods and levels first."""
    patch_methods: frozenset[PatchMethod] = frozenset(PatchMethod)
    """The methods patches are made by (``CHANGEOVER_PATCH_METHODS``, zstd always among
    them). Clients that predate methods see only the zstd patches and fetch the other files
    whole: ``zstd`` alone keeps them on patches for every file, at a larger size for
    executables, while many of them are about."""
    replace_lost_after_s: float = 120.0
    """A host silent this long has the instances it ran for fleets replaced on other hosts
    (``control.fleet.standins``); at least ``LOST_AFTER_S`` (10 s)."""
    retention_s: float = 7 * 86400.0
    """Ended and expired sessions are deleted this long after they ended, then stopped
    instances this long after they stopped; until then ``GET /sessions/{id}``,
    ``GET /fleets/{name}/instances?all=true`` and the dashboard's charts see them."""

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
    if v := env.get("CHANGEOVER_LOG_FORMAT"):
        s = replace(s, log_format=v)
    if v := env.get("CHANGEOVER_SMTP_URL"):
        s = replace(s, smtp_url=v)
    if v := env.get("CHANGEOVER_MAIL_FROM"):
        s = replace(s, mail_from=v)
    if v := env.get("CHANGEOVER_WEBHOOK_URL"):
        s = replace(s, webhook_url=v)
    if v := env.get("CHANGEOVER_WEBHOOK_SECRET"):
        s = replace(s, webhook_secret=v)
    if v := env.get("CHANGEOVER_REPORT_MAX_ATTEMPTS"):
        if not v.isdigit() or int(v) < 1:
            raise InvalidInput(f"CHANGEOVER_REPORT_MAX_ATTEMPTS must be a count >= 1, got {v!r}")
        s = replace(s, report_max_attempts=int(v))
    if v := env.get("CHANGEOVER_PATCH_METHODS"):
        s = replace(s, patch_methods=_methods(v))
    s = replace(
        s,
        publish_budget_cpu_s=_seconds(
            env, "CHANGEOVER_PUBLISH_BUDGET_CPU_S", s.publish_budget_cpu_s
        ),
        job_poll_s=_seconds(env, "CHANGEOVER_JOB_POLL_S", s.job_poll_s),
        job_lease_s=_seconds(env, "CHANGEOVER_JOB_LEASE_S", s.job_lease_s),
        leader_lease_s=_seconds(env, "CHANGEOVER_LEADER_LEASE_S", s.leader_lease_s),
        content_bucket=env.get("CHANGEOVER_CONTENT_BUCKET") or None,
        s3_endpoint=env.get("CHANGEOVER_S3_ENDPOINT") or None,
        content_moved=env.get("CHANGEOVER_CONTENT_MOVED", "").lower() in ("1", "true", "yes"),
        publish_every_s=_seconds(env, "CHANGEOVER_PUBLISH_EVERY_S", s.publish_every_s),
        patch_tick_s=_seconds(env, "CHANGEOVER_PATCH_TICK_S", s.patch_tick_s),
        report_every_s=_seconds(env, "CHANGEOVER_REPORT_EVERY_S", s.report_every_s),
        report_retry_s=_seconds(env, "CHANGEOVER_REPORT_RETRY_S", s.report_retry_s),
        retention_s=_seconds(env, "CHANGEOVER_RETENTION_S", s.retention_s),
        replace_lost_after_s=_seconds(
            env, "CHANGEOVER_REPLACE_LOST_AFTER_S", s.replace_lost_after_s
        ),
        trust_policy=TrustPolicy(
            timestamp_expiry_s=_seconds(
                env, "CHANGEOVER_TIMESTAMP_EXPIRY_S", s.trust_policy.timestamp_expiry_s
            )
        ),
    )
    given = {k: v for k, v in overrides.items() if v is not None}
    if "data_dir" in given:
        given["data_dir"] = Path(str(given["data_dir"]))
    s = replace(s, **given)  # type: ignore[arg-type]
    if s.replace_lost_after_s < 10.0:  # a host is lost (not offered to players) after 10 s
        raise InvalidInput(
            "CHANGEOVER_REPLACE_LOST_AFTER_S must be at least 10 seconds (a host counts as"
            f" lost only after 10 s of silence), got {s.replace_lost_after_s:g}"
        )
    if s.log_format not in ("text", "json"):
        raise InvalidInput(f"the log format must be text or json, got {s.log_format!r}")
    if s.webhook_url and not s.webhook_secret:
        # An unsigned webhook lets anyone who can reach the receiver fake a report.
        raise InvalidInput("CHANGEOVER_WEBHOOK_URL needs CHANGEOVER_WEBHOOK_SECRET to sign with")
    if s.webhook_url and not s.webhook_url.startswith(("http://", "https://")):
        raise InvalidInput(f"the webhook URL {s.webhook_url!r} must start with http(s)://")
    return s


def _methods(raw: str) -> frozenset[PatchMethod]:
    names = {n.strip() for n in raw.split(",")} - {""}
    known = {m.value for m in PatchMethod}
    if not names <= known or PatchMethod.ZSTD.value not in names:
        raise InvalidInput(
            f"CHANGEOVER_PATCH_METHODS must list zstd and any of {sorted(known)}, got {raw!r}"
        )
    return frozenset(PatchMethod(n) for n in names)


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
