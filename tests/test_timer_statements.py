"""A step's timer statements find their row by session and name (migration
0012): a session that asked many projects holds a reply deadline each, and
the step that takes their answers cancels them all; with only an index of
the session, each delete read every timer of the session."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from query_plans import sent_plans
from sqlalchemy import Engine
from sqlalchemy.sql import Executable

from fenix_core.core.statements import STATEMENTS
from fenix_core.store.database import migrate, open_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'fenix.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _plan(db: Engine, statement: Executable, values: dict[str, Any]) -> str:
    """SQLite's query plan of ``statement`` as SQLAlchemy sends it."""
    (plan,) = sent_plans(db, lambda c: c.execute(statement, values))
    return plan


@pytest.mark.parametrize(
    ("statement", "values"),
    [
        (STATEMENTS.delete_timers, {"b_session_id": "s", "b_kind": "reply_deadline:p"}),
        (
            STATEMENTS.update_timers,
            {"b_session_id": "s", "b_kind": "reply_deadline:p", "b_due": T0, "b_data": {}},
        ),
    ],
    ids=["cancel", "set-again"],
)
def test_a_timer_is_found_by_its_session_and_name(
    db: Engine, statement: Executable, values: dict[str, Any]
) -> None:
    plan = _plan(db, statement, values)
    assert "INDEX ix_timers_session_kind (session_id=? AND kind=?)" in plan, plan


def test_the_load_of_a_sessions_timers_reads_its_range(db: Engine) -> None:
    plan = _plan(db, STATEMENTS.load_timers, {"b_session_id": "s"})
    assert "INDEX ix_timers_session_kind (session_id=?)" in plan, plan
