"""Every row of an engine's database, to show that a refused call wrote nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fenix_core import Engine


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Table name -> its rows (sorted), of every table in the engine's database."""
    with engine.transaction() as orm:
        connection = orm.connection()
        tables = sa.inspect(connection).get_table_names()
        return {
            name: sorted(
                (tuple(row) for row in connection.execute(sa.text(f'SELECT * FROM "{name}"'))),
                key=repr,
            )
            for name in tables
        }
