"""What every request handler and job needs: settings, database, content store, runner."""

from __future__ import annotations

from dataclasses import dataclass

from changeover.content.store import LocalStore
from changeover.control.db import Database
from changeover.control.jobs import JobRunner
from changeover.control.publishing import Publisher
from changeover.settings import Settings


@dataclass
class Context:
    settings: Settings
    db: Database
    store: LocalStore
    runner: JobRunner
    publisher: Publisher
