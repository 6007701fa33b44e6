"""What every request handler and job needs: settings, database, content store, runner."""

from __future__ import annotations

from dataclasses import dataclass, field

from changeover.content.store import LocalStore
from changeover.control.db import Database
from changeover.control.fleet.pacing import SyncPacer
from changeover.control.fleet.quiet import SyncMemory
from changeover.control.jobs import JobRunner
from changeover.control.leadership import Leadership
from changeover.control.publishing import Publisher
from changeover.settings import Settings


@dataclass
class Context:
    settings: Settings
    db: Database
    store: LocalStore
    runner: JobRunner
    publisher: Publisher
    leadership: Leadership
    sync_pacer: SyncPacer = field(default_factory=SyncPacer)
    """What agents' syncs cost lately: how often to ask them to sync."""
    sync_memory: SyncMemory = field(default_factory=SyncMemory)
    """When hosts are due for re-planning; quiet syncs' heartbeats (``fleet.quiet``)."""

    def publish(self) -> None:
        """Sign and publish what changed, now if this replica leads; on a follower the
        leader's next periodic pass does it, within ``settings.publish_every_s``."""
        self.leadership.only(self.publisher.sync)()
