"""The store: creating / migrating the schema, Alembic revisions vs. the models,
and aware-UTC datetimes on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine as SAEngine
from sqlalchemy import delete, event, inspect, select, text
from sqlalchemy.orm import Session

from fenix_core.errors import InvalidInput
from fenix_core.store.database import alembic_config, head_revision, migrate, open_database
from fenix_core.store.schema import Base, SessionRow, SubscriptionRow, TimerRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SAEngine]:
    engine = open_database(f"sqlite:///{tmp_path / 'fenix.db'}")
    yield engine
    engine.dispose()


def tables(engine: SAEngine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def revision(engine: SAEngine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def alembic(engine: SAEngine, action: str, target: str) -> None:
    """Run ``alembic upgrade/downgrade target`` on ``engine`` as the engine itself does."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, target)


def schema_diff(engine: SAEngine) -> list[Any]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def schema_writes(engine: SAEngine) -> list[str]:
    """Collect the statements that change the schema or its stamp, from now on."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("CREATE", "DROP", "ALTER", "INSERT"):
            seen.append(statement)

    return seen


def test_head_revision_is_the_last_of_one_linear_chain() -> None:
    from alembic.script import ScriptDirectory

    from fenix_core.store.database import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head_revision()]  # no branches
    chain = [rev.revision for rev in script.walk_revisions()]
    assert chain[-1] == "0001"
    assert chain[0] == head_revision()
    assert chain == sorted(chain, reverse=True)


def test_migrate_fresh_file_creates_everything_and_stamps_head(db: SAEngine) -> None:
    assert tables(db) == set()
    statements = schema_writes(db)
    migrate(db)
    assert any(s.lstrip().upper().startswith("CREATE TABLE") for s in statements)
    assert tables(db) == MODEL_TABLES | {"alembic_version"}
    assert {
        "sessions",
        "session_hosts",
        "session_instances",
        "session_projects",
        "subscriptions",
        "operations",
        "timers",
        "outbox",
        "inbox",
    } <= MODEL_TABLES
    assert revision(db) == head_revision()
    assert schema_diff(db) == []


def test_migrate_again_is_a_noop(db: SAEngine) -> None:
    migrate(db)
    with Session(db) as orm, orm.begin():
        orm.add(SubscriptionRow(project_id="p1", created_at=T0))
    statements = schema_writes(db)
    migrate(db)
    migrate(db)
    assert statements == []
    assert revision(db) == head_revision()
    with Session(db) as orm:
        assert orm.scalars(select(SubscriptionRow.project_id)).all() == ["p1"]


def test_migrate_in_memory() -> None:
    engine = open_database("sqlite://")
    migrate(engine)
    assert tables(engine) == MODEL_TABLES | {"alembic_version"}
    assert revision(engine) == head_revision()


def test_migrate_after_alembic_upgrade_is_a_noop(db: SAEngine) -> None:
    alembic(db, "upgrade", "head")
    statements = schema_writes(db)
    migrate(db)
    assert statements == []


def test_alembic_revisions_match_the_models(db: SAEngine) -> None:
    alembic(db, "upgrade", "head")
    assert revision(db) == head_revision()
    assert tables(db) == MODEL_TABLES | {"alembic_version"}
    assert schema_diff(db) == []


def test_alembic_downgrade_to_base_drops_everything(db: SAEngine) -> None:
    alembic(db, "upgrade", "head")
    alembic(db, "downgrade", "base")
    assert tables(db) <= {"alembic_version"}
    assert revision(db) is None
    # And the way back up works again.
    alembic(db, "upgrade", "head")
    assert schema_diff(db) == []


def test_compare_metadata_detects_a_missing_table(db: SAEngine) -> None:
    # The diff check above can fail: a schema that lacks a table is reported.
    migrate(db)
    with db.begin() as conn:
        conn.execute(text("DROP TABLE timers"))
    diff = schema_diff(db)
    assert any(d[0] == "add_table" and d[1].name == "timers" for d in diff)


def test_open_database_rejects_bad_url() -> None:
    with pytest.raises(InvalidInput) as info:
        open_database("not a url")
    assert info.value.field == "database_url"


def test_file_database_uses_wal_and_foreign_keys(db: SAEngine) -> None:
    migrate(db)
    with db.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    with Session(db) as orm, orm.begin():
        orm.add(_session_row("s1"))
        orm.flush()
        orm.add(TimerRow(session_id="s1", kind="reply", due=T0))
    with Session(db) as orm, orm.begin():
        orm.execute(delete(SessionRow).where(SessionRow.id == "s1"))
    with Session(db) as orm:
        assert orm.scalars(select(TimerRow)).all() == []  # ON DELETE CASCADE


def _session_row(session_id: str) -> SessionRow:
    return SessionRow(
        id=session_id,
        workflow="rolling",
        request={},
        state="MAINTENANCE",
        created_at=T0,
        updated_at=T0,
    )


# --------------------------------------------------------------------------- UTCDateTime


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
            datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        ),
        (datetime(2026, 3, 1, 12, 0), datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),  # naive = UTC
    ],
)
def test_utc_datetime_round_trip(db: SAEngine, stored: datetime, expected: datetime) -> None:
    migrate(db)
    with Session(db) as orm, orm.begin():
        orm.add(SubscriptionRow(project_id="p", created_at=stored))
    with Session(db) as orm:
        loaded = orm.scalars(select(SubscriptionRow.created_at)).one()
    assert loaded == expected
    assert loaded.tzinfo is not None
    assert loaded.utcoffset() == timedelta(0)
    # Stored as the UTC wall time, so that SQL comparisons order instants correctly.
    with db.connect() as conn:
        raw = conn.execute(text("SELECT created_at FROM subscriptions")).scalar()
    assert str(raw).startswith(expected.strftime("%Y-%m-%d %H:%M:%S"))


def test_utc_datetime_null_and_query_comparison(db: SAEngine) -> None:
    migrate(db)
    plus_two = timezone(timedelta(hours=2))
    with Session(db) as orm, orm.begin():
        row = _session_row("s1")
        row.next_wake = datetime(2026, 1, 1, 1, 30, tzinfo=plus_two)  # 23:30 UTC the day before
        orm.add(row)
        orm.add(_session_row("s2"))  # next_wake NULL
    with Session(db) as orm:
        s2 = orm.get(SessionRow, "s2")
        assert s2 is not None
        assert s2.next_wake is None
        due = orm.scalars(select(SessionRow.id).where(SessionRow.next_wake <= T0)).all()
        assert due == ["s1"]
        not_yet = orm.scalars(
            select(SessionRow.id).where(SessionRow.next_wake <= T0 - timedelta(hours=1))
        ).all()
        assert not_yet == []
