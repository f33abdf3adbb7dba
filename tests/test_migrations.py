"""Alembic migrations from the first revision to head, one step at a time, on
an empty database and on one holding data, compared with the models at the
end; and back down where revisions provide a downgrade. Generic over the
revision chain: a new revision is tested without changing this file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pg_server
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Text,
    func,
    inspect,
    select,
)
from sqlalchemy import Table as SATable

from fenix_core.store.database import alembic_config, open_database
from fenix_core.store.schema import Base

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def chain() -> list[str]:
    """Revision ids from the first to head."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions("base", "heads")))]


def downgradable() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [
        rev.revision
        for rev in script.walk_revisions("base", "heads")
        if "def downgrade" in Path(rev.path).read_text()
        and "raise NotImplementedError" not in Path(rev.path).read_text()
    ]


def alembic(engine: Engine, action: str, target: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, target)


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'fenix.db'}")
    yield engine
    engine.dispose()


def value_for(column: Any, index: int) -> Any:
    """A plausible value of the column's type (only foreign keys to sessions matter)."""
    kind = column.type
    if column.foreign_keys:
        return "s-1"
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return index
    if isinstance(kind, DateTime):
        return T0
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, String | Text):
        return f"v{index}"
    return None  # pragma: no cover - a new column type: extend this helper


def fill_every_table(engine: Engine) -> dict[str, int]:
    """One row in each table as the schema stands now; return the row counts."""
    reflected = MetaData()
    reflected.reflect(engine)
    others = sorted(t for t in reflected.tables if t not in ("sessions", "alembic_version"))
    order = ["sessions", *others]
    with engine.begin() as connection:
        for index, name in enumerate(order, start=1):
            table: SATable = reflected.tables[name]
            row = {
                c.name: value_for(c, index) for c in table.columns if c.autoincrement is not True
            }
            if name == "sessions":
                row["id"] = "s-1"
            connection.execute(table.insert().values(**row))
    return counts(engine)


def counts(engine: Engine) -> dict[str, int]:
    reflected = MetaData()
    reflected.reflect(engine)
    with engine.connect() as connection:
        return {
            name: int(connection.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in reflected.tables.items()
            if name != "alembic_version"
        }


def test_the_chain_is_linear_and_starts_at_0001() -> None:
    revisions = chain()
    assert revisions[0] == "0001"
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert len(set(revisions)) == len(revisions)


def test_upgrading_step_by_step_on_an_empty_database_reaches_the_models(db: Engine) -> None:
    for revision in chain():
        alembic(db, "upgrade", revision)
        assert current(db) == revision
    with db.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_upgrading_step_by_step_keeps_the_data(db: Engine) -> None:
    revisions = chain()
    alembic(db, "upgrade", revisions[0])
    before = fill_every_table(db)
    for revision in revisions[1:]:
        alembic(db, "upgrade", revision)
        after = counts(db)
        assert {t: after[t] for t in before} == before, f"rows lost migrating to {revision}"
    tables = set(inspect(db).get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)


@pytest.mark.parametrize("revision", downgradable())
def test_each_downgrade_undoes_its_upgrade(db: Engine, revision: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    previous = script.get_revision(revision).down_revision or "base"
    alembic(db, "upgrade", previous)
    with db.connect() as connection:
        shape_before = {
            t: {c["name"] for c in inspect(connection).get_columns(t)}
            for t in inspect(connection).get_table_names()
        }
    alembic(db, "upgrade", revision)
    alembic(db, "downgrade", previous if previous != "base" else "base")
    with db.connect() as connection:
        shape_after = {
            t: {c["name"] for c in inspect(connection).get_columns(t)}
            for t in inspect(connection).get_table_names()
        }
    assert shape_after == shape_before


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg_server.PostgresServer | None]:
    if pg_server.unavailable() is not None:
        yield None
        return
    yield from pg_server.server()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(
    request: pytest.FixtureRequest, db: Engine, postgres: pg_server.PostgresServer | None
) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield db
        return
    if postgres is None:
        pytest.skip(f"no PostgreSQL server: {pg_server.unavailable()}")
    engine = open_database(postgres.new_database())
    yield engine
    engine.dispose()


def test_0006_keeps_constraints_and_lets_two_projects_hold_one_id(any_db: Engine) -> None:
    db = any_db
    alembic(db, "upgrade", "0005")
    reflected = MetaData()
    reflected.reflect(db)
    groups, instances = (
        reflected.tables["group_constraints"],
        reflected.tables["instance_constraints"],
    )
    group_row = {
        "group_id": "web",
        "project_id": "pa",
        "group_name": "",
        "anti_affinity_group": False,
        "max_instances_per_host": 0,
        "max_impacted_members": 2,
        "recovery_time": 0,
        "resource_mitigation": False,
        "updated_at": T0,
    }
    instance_row = {
        "instance_id": "vm-1",
        "project_id": "pa",
        "group_id": "web",
        "instance_name": "",
        "max_interruption_time": None,
        "migration_type": None,
        "resource_mitigation": False,
        "lead_time": 5,
        "updated_at": T0,
    }
    with db.begin() as connection:
        connection.execute(groups.insert().values(**group_row))
        connection.execute(instances.insert().values(**instance_row))
    alembic(db, "upgrade", "0006")
    with db.begin() as connection:
        # The same ids under another project: a row of its own, not a clash.
        connection.execute(groups.insert().values(**{**group_row, "project_id": "pb"}))
        connection.execute(instances.insert().values(**{**instance_row, "project_id": "pb"}))
        kept = connection.execute(
            select(instances.c.project_id, instances.c.lead_time).order_by(instances.c.project_id)
        ).all()
    assert [tuple(r) for r in kept] == [("pa", 5), ("pb", 5)]
    assert inspect(db).get_pk_constraint("instance_constraints")["constrained_columns"] == [
        "project_id",
        "instance_id",
    ]
    assert inspect(db).get_pk_constraint("group_constraints")["constrained_columns"] == [
        "project_id",
        "group_id",
    ]
