"""Alembic environment: always run with a connection handed over by ``Database.migrate``."""

from alembic import context

from changeover.control import models  # noqa: F401  (registers every table)
from changeover.control.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
