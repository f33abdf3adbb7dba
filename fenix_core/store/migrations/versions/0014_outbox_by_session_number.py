"""the outbox keyed by one integer (a session's number and the seq); no wake index

Until 0013 the outbox is keyed by ``(session_id, seq)``: on SQLite a rowid
table and, beside it, the key's index, so every notification a step writes
is appended to two b-trees (about 1.2 of a rolling commit's 10 WAL pages
were the index's).

Each session gets a number (``sessions.number``, unique: on PostgreSQL the
sequence ``sessions_number_seq`` gives it, on SQLite the highest plus one),
and an outbox row is keyed by ``id = number * 2**32 + seq``: on SQLite that
is the table's rowid, so a session's notifications are one range of ONE
b-tree, appended in order. Every read of a session's rows is a range of
ids. The outbox loses its foreign key to ``sessions`` (without an index on
``session_id`` deleting a session would scan it): deleting a session
deletes its range of ids.

The wake index ``ix_session_clock_wake`` (``next_wake``) goes too: the
step's fenced UPDATE changes the wake at most steps, which moved its entry
(a page of each commit). The due poll reads ``session_clock`` itself, one
short row per session (on SQLite it read the whole table already, for the
earliest wake-up among the sessions not held).

The existing sessions are numbered in the order they were created; each
outbox row gets its id from its session's number. On SQLite the outbox is
copied (its key cannot be altered in place) and ``sessions.number`` is
added with a default of 0, which nothing uses (the engine gives each new
session its number); on PostgreSQL the column and key are altered.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: The outbox's columns both revisions have.
_COLUMNS = ("session_id", "seq", "signal", "payload", "created_at", "delivered_at")
#: The number of each session: its place in the order of creation.
_NUMBERING = (
    "UPDATE sessions SET number = (SELECT count(*) FROM sessions AS older "
    "WHERE older.created_at < sessions.created_at "
    "OR (older.created_at = sessions.created_at AND older.id <= sessions.id))"
)
#: An outbox row's id (its session's number times 2**32, plus the seq).
_ID = "(SELECT number FROM sessions WHERE sessions.id = outbox.session_id) * 4294967296 + seq"


def _outbox(numbered: bool) -> list[sa.schema.SchemaItem]:
    when = sa.DateTime(timezone=True)
    key: list[sa.schema.SchemaItem] = (
        [sa.Column("id", sa.Integer(), autoincrement=False, nullable=False)]
        if numbered
        else [sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE")]
    )
    return [
        *key,
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("signal", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("delivered_at", when, nullable=True),
    ]


def upgrade() -> None:
    op.drop_index("ix_session_clock_wake", table_name="session_clock")
    names = ", ".join(_COLUMNS)
    if op.get_bind().dialect.name != "sqlite":
        op.execute("CREATE SEQUENCE sessions_number_seq")
        op.add_column("sessions", sa.Column("number", sa.Integer(), nullable=True))
        op.execute(_NUMBERING)
        op.execute(
            "SELECT setval('sessions_number_seq', "
            "(SELECT coalesce(max(number), 0) + 1 FROM sessions), false)"
        )
        op.alter_column("sessions", "number", nullable=False)
        op.create_index("ux_sessions_number", "sessions", ["number"], unique=True)
        op.add_column("outbox", sa.Column("id", sa.BigInteger(), nullable=True))
        op.execute(f"UPDATE outbox SET id = {_ID}")
        op.alter_column("outbox", "id", nullable=False)
        op.drop_constraint("outbox_session_id_fkey", "outbox", type_="foreignkey")
        op.drop_constraint("outbox_pkey", "outbox", type_="primary")
        op.create_primary_key("outbox_pkey", "outbox", ["id"])
        return
    # SQLite: a column added to a table that is not copied (sessions is every
    # other table's parent) needs a default to be NOT NULL.
    op.execute("ALTER TABLE sessions ADD COLUMN number INTEGER NOT NULL DEFAULT 0")
    op.execute(_NUMBERING)
    op.create_index("ux_sessions_number", "sessions", ["number"], unique=True)
    op.create_table("outbox_new", *_outbox(numbered=True), sa.PrimaryKeyConstraint("id"))
    op.execute(f"INSERT INTO outbox_new (id, {names}) SELECT {_ID}, {names} FROM outbox ORDER BY 1")
    op.drop_table("outbox")
    op.rename_table("outbox_new", "outbox")


def downgrade() -> None:
    op.create_index("ix_session_clock_wake", "session_clock", ["next_wake"])
    names = ", ".join(_COLUMNS)
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("outbox_pkey", "outbox", type_="primary")
        op.create_primary_key("outbox_pkey", "outbox", ["session_id", "seq"])
        op.create_foreign_key(
            "outbox_session_id_fkey", "outbox", "sessions", ["session_id"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
        op.drop_column("outbox", "id")
        op.drop_index("ux_sessions_number", table_name="sessions")
        op.drop_column("sessions", "number")
        op.execute("DROP SEQUENCE sessions_number_seq")
        return
    op.create_table(
        "outbox_old", *_outbox(numbered=False), sa.PrimaryKeyConstraint("session_id", "seq")
    )
    op.execute(
        f"INSERT INTO outbox_old ({names}) SELECT {names} FROM outbox ORDER BY session_id, seq"
    )
    op.drop_table("outbox")
    op.rename_table("outbox_old", "outbox")
    op.drop_index("ux_sessions_number", table_name="sessions")
    op.execute("ALTER TABLE sessions DROP COLUMN number")
