"""operations keyed by one integer (a session's number and n), as the outbox

Since 0013 the operations are keyed by ``(session_id, n)``, on SQLite as a
WITHOUT ROWID table: the rows are the key's b-tree. An index b-tree keeps a
whole record in each inner cell, and an operation row is about 360 bytes,
so inner pages held about ten cells: a deep tree whose inner pages change
as new operations are appended. A rolling step (one operation ended, the
next started) wrote about two pages of it per commit.

An operation is now keyed by ``id = number * 2**32 + n`` (its session's
number, ``sessions.number`` since 0014, and the key's number): on SQLite
the table's rowid, whose inner cells are integers, so a step's new
operation is appended to a shallow b-tree and its ended one is found by one
integer seek; a session's operations are one range of ids. ``n`` and
``session_id`` stay columns. The operations lose their foreign key to
``sessions`` (with no index on ``session_id`` deleting a session would
scan them): deleting a session deletes its range of ids, as for the outbox.

On SQLite the table is copied (a table's key cannot be altered in place);
on PostgreSQL the column is added, the key changed and the foreign key
dropped.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: The operations' columns both revisions have.
_COLUMNS = (
    "session_id", "n", "kind", "key", "host", "instance_id", "params", "status", "handle",
    "next_poll", "deadline", "polls", "detail", "result", "handled", "created_at",
    "started_at", "finished_at",
)  # fmt: skip
#: An operation's id (its session's number times 2**32, plus n).
_ID = "(SELECT number FROM sessions WHERE sessions.id = operations.session_id) * 4294967296 + n"


def _operations(keyed: bool) -> list[sa.schema.SchemaItem]:
    when = sa.DateTime(timezone=True)
    key: list[sa.schema.SchemaItem] = (
        [sa.Column("id", sa.Integer(), autoincrement=False, nullable=False)]
        if keyed
        else [sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE")]
    )
    return [
        *key,
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("n", sa.Integer(), autoincrement=False, nullable=False),
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
    ]


def upgrade() -> None:
    names = ", ".join(f'"{c}"' for c in _COLUMNS)
    if op.get_bind().dialect.name != "sqlite":
        op.add_column("operations", sa.Column("id", sa.BigInteger(), nullable=True))
        op.execute(f"UPDATE operations SET id = {_ID}")
        op.alter_column("operations", "id", nullable=False)
        op.drop_constraint("operations_session_id_fkey", "operations", type_="foreignkey")
        op.drop_constraint("operations_pkey", "operations", type_="primary")
        op.create_primary_key("operations_pkey", "operations", ["id"])
        return
    op.create_table("operations_new", *_operations(keyed=True), sa.PrimaryKeyConstraint("id"))
    op.execute(
        f"INSERT INTO operations_new (id, {names}) SELECT {_ID}, {names} FROM operations ORDER BY 1"
    )
    op.drop_table("operations")
    op.rename_table("operations_new", "operations")


def downgrade() -> None:
    names = ", ".join(f'"{c}"' for c in _COLUMNS)
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("operations_pkey", "operations", type_="primary")
        op.create_primary_key("operations_pkey", "operations", ["session_id", "n"])
        op.create_foreign_key(
            "operations_session_id_fkey", "operations", "sessions", ["session_id"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
        op.drop_column("operations", "id")
        return
    op.create_table(
        "operations_old",
        *_operations(keyed=False),
        sa.PrimaryKeyConstraint("session_id", "n"),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO operations_old ({names}) SELECT {names} FROM operations "
        "ORDER BY session_id, n"
    )
    op.drop_table("operations")
    op.rename_table("operations_old", "operations")
