"""timers indexed by (session, name): a step's timer statements find their row

A step deletes a cancelled timer, and updates one set again, by its session
and name (``kind``). The only index was ``ix_timers_session``: each such
statement read every timer of the session to find the one named. A session
that asks many projects at once holds a reply deadline per project, and the
step that takes their answers cancels all of them: with 2,000 projects that
step read 2,000 x 2,000 rows (about 0.16 s of its 0.20 s of CPU in
benchmarks/replies.py). ``ix_timers_session_kind`` finds each row directly
and still serves the load of a session's timers (its first column); the
index of the session alone goes, so a timer's insert and delete touch one
index, as before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_timers_session_kind", "timers", ["session_id", "kind"])
    op.drop_index("ix_timers_session", table_name="timers")


def downgrade() -> None:
    op.create_index("ix_timers_session", "timers", ["session_id"])
    op.drop_index("ix_timers_session_kind", table_name="timers")
