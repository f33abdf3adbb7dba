"""operations keyed by (session, n): a step's new operation is appended

Since 0011 the operations are the b-tree of their primary key
``(session_id, key)`` (WITHOUT ROWID on SQLite). A key is ``<session id>:<n>``
with n unpadded, so a new key sorts into the middle of its session's range
(``…:123``, ``…:1230`` … ``…:1239``, ``…:124``), not at its end: the insert
splits and rewrites a leaf inside the range, as well as the one the ended
operation is in.

The table gets the key's number as a column ``n`` and the primary key
becomes ``(session_id, n)``: each new operation is appended at the end of
its session's range. The key stays what the driver and the action receive
(their idempotency key), stored as before; a key is still unique, since it
is made of the session and n. The session's highest number (what the next
operation counts from) is the last entry of its range.

Every key stored is ``<session id>:<n>`` (the only form the engine ever
made); the upgrade checks that before it changes anything, and refuses a
database with another.

On SQLite the table is copied (a table's key cannot be altered in place);
on PostgreSQL the column is added and the primary key changed.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: The operations' columns as 0011 left them.
_COLUMNS = (
    "session_id", "kind", "key", "host", "instance_id", "params", "status", "handle",
    "next_poll", "deadline", "polls", "detail", "result", "handled", "created_at",
    "started_at", "finished_at",
)  # fmt: skip
#: The number a key ``<session id>:<n>`` ends with, in SQL (both dialects).
_NUMBER = 'CAST(substr("key", length(session_id) + 2) AS INTEGER)'


def _columns(numbered: bool) -> list[sa.schema.SchemaItem]:
    when = sa.DateTime(timezone=True)
    number = [sa.Column("n", sa.Integer(), autoincrement=False, nullable=False)]
    return [
        sa.Column("session_id", sa.String(length=36), nullable=False),
        *(number if numbered else []),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("instance_id", sa.String(length=255), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("handle", sa.String(length=255), nullable=True),
        sa.Column("next_poll", when, nullable=True),
        sa.Column("deadline", when, nullable=True),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("handled", sa.Boolean(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("started_at", when, nullable=True),
        sa.Column("finished_at", when, nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
    ]


def _check_keys() -> None:
    """Refuse (before any change) a key that is not ``<session id>:<n>``."""
    odd = (
        op.get_bind()
        .execute(
            sa.text(
                f'SELECT session_id, "key" FROM operations WHERE "key" <> '
                f"session_id || ':' || CAST({_NUMBER} AS TEXT) LIMIT 5"
            )
        )
        .all()
    )
    if odd:
        raise RuntimeError(
            "operations whose key is not '<session id>:<number>' (the number is "
            f"the new primary key's): {[tuple(row) for row in odd]}"
        )


def upgrade() -> None:
    _check_keys()
    names = ", ".join(f'"{c}"' for c in _COLUMNS)
    if op.get_bind().dialect.name != "sqlite":
        op.add_column("operations", sa.Column("n", sa.Integer(), nullable=True))
        op.execute(f"UPDATE operations SET n = {_NUMBER}")
        op.alter_column("operations", "n", nullable=False)
        op.drop_constraint("operations_pkey", "operations", type_="primary")
        op.create_primary_key("operations_pkey", "operations", ["session_id", "n"])
        return
    op.create_table(
        "operations_new",
        *_columns(numbered=True),
        sa.PrimaryKeyConstraint("session_id", "n"),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO operations_new (n, {names}) "
        f"SELECT {_NUMBER}, {names} FROM operations ORDER BY session_id, {_NUMBER}"
    )
    op.drop_table("operations")
    op.rename_table("operations_new", "operations")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("operations_pkey", "operations", type_="primary")
        op.create_primary_key("operations_pkey", "operations", ["session_id", "key"])
        op.drop_column("operations", "n")
        return
    names = ", ".join(f'"{c}"' for c in _COLUMNS)
    op.create_table(
        "operations_new",
        *_columns(numbered=False),
        sa.PrimaryKeyConstraint("session_id", "key"),
        sqlite_with_rowid=False,
    )
    op.execute(f"INSERT INTO operations_new ({names}) SELECT {names} FROM operations")
    op.drop_table("operations")
    op.rename_table("operations_new", "operations")
