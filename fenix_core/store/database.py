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

__all__ = ["alembic_config", "head_revision", "migrate", "open_database"]

_MIGRATIONS = Path(__file__).with_name("migrations")
#: PostgreSQL advisory lock held while the schema is created or upgraded.
_MIGRATION_LOCK = 0x_F3_41_C0_DE


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
                cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@cache  # reading the revision scripts costs more than a step; they do not change
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def migrate(engine: SAEngine) -> None:
    """Bring the schema to the latest revision.

    A new, empty database gets the current schema in one go and is stamped at
    head; an existing one is upgraded through the Alembic revisions.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Workers starting together: one migrates, the others wait and see it done.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        current = MigrationContext.configure(connection).get_current_revision()
        if current is None and not inspect(connection).has_table("sessions"):
            Base.metadata.create_all(connection)
            # What `alembic stamp head` does, with the scripts read once a
            # process rather than at every new database (a test's engine).
            MigrationContext.configure(connection).stamp(_scripts(), "head")
            return
        if current == head_revision():
            return
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
