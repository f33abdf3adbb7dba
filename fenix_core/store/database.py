"""Opening the database: engine options per backend, and schema migrations."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine as SAEngine
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from ..errors import InvalidInput
from . import json_text
from .schema import Base

__all__ = ["WAL_CHECKPOINT_PAGES", "alembic_config", "head_revision", "migrate", "open_database"]

_MIGRATIONS = Path(__file__).with_name("migrations")
#: PostgreSQL advisory lock held while the schema is created or upgraded.
_MIGRATION_LOCK = 0x_F3_41_C0_DE
#: WAL pages after which a commit checkpoints them into the database file
#: (SQLite's default is 1,000). A step rewrites the same few pages (the
#: session's clock row, its wake index, its state, the last pages of its
#: operations and outbox), and a checkpoint copies each page once however
#: often it was written since the last: fewer, longer checkpoints copy fewer
#: pages in all (rolling 300 hosts: 0.114 s of checkpoints' CPU at 1,000,
#: 0.072 s at 4,000, 0.069 s at 10,000). 4,000 frames (16 MB of WAL) still
#: fit one segment of SQLite's wal-index. Durability is SQLite's WAL with
#: synchronous=NORMAL either way: see docs/operations.md.
WAL_CHECKPOINT_PAGES = 4000


def open_database(url: str) -> SAEngine:
    """Create the SQLAlchemy engine for ``url`` with the options fenix-core needs.

    SQLite: an in-memory database is one shared connection (so every thread
    sees the same data); a file database uses WAL so readers (another process
    looking at sessions) never block the engine, and enforces foreign keys.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput("database_url", f"not a database URL: {url!r}") from None
    # JSON columns bound with json.dumps's text, made without its per-call set-up.
    kwargs: dict[str, Any] = {"json_serializer": json_text.dumps}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
                cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@cache  # reading the revision scripts costs more than a step; they do not change
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def migrate(engine: SAEngine) -> None:
    """Bring the schema to the latest revision.

    A new, empty database gets the current schema in one go and is stamped at
    head; an existing one is upgraded through the Alembic revisions.
    """
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Workers starting together: one migrates, the others wait and see it done.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        current = MigrationContext.configure(connection).get_current_revision()
        if current is None and not inspect(connection).has_table("sessions"):
            Base.metadata.create_all(connection)
            config.attributes["connection"] = connection
            command.stamp(config, "head")
            return
        if current == head_revision():
            return
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
