"""Alembic environment for the fenix-core store.

The engine runs migrations programmatically on its own connection
(``config.attributes["connection"]``); the ``alembic`` command line works too
with ``-x url=sqlite:///fenix.db``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from fenix_core.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database with -x url=... (for example sqlite:///fenix.db)")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
