"""SQLite's query plans of the statements a piece of code sends, as
SQLAlchemy sends them (its SQL text and bound parameters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, event


def sent_plans(
    engine: Engine, run: Callable[[Connection], object], table: str | None = None
) -> list[str]:
    """The plan of each statement ``run`` sent on its connection (only
    those naming ``table`` when given), one line each; what ``run`` wrote
    is rolled back."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if table is None or f" {table}" in statement:
            sent.append((statement, params))

    with engine.connect() as connection:
        event.listen(engine, "before_cursor_execute", record)
        try:
            run(connection)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert sent
        plans = [
            " ".join(
                str(row[-1])
                for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            )
            for statement, params in sent
        ]
        connection.rollback()
    return plans
