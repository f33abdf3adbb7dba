"""fewer index pages written per step: two indexes no query needs

Every step commits its rows; each index an UPDATE or INSERT touches is one
more page in the commit's WAL append (about 14 pages per step of a rolling
session before this revision, 4 KB each). Two of them served no query:

- ``ix_outbox_undelivered`` (``outbox.delivered_at``): delivery goes by the
  session's watermark (``session_clock.delivered_seq``, revision 0007);
  nothing writes ``delivered_at`` any more, and every new notification added
  a NULL entry to this index.
- ``ix_operations_session_open`` (``session_id, handled``): an operation is
  inserted unhandled and marked handled a step or two later, which moved its
  entry from one end of the session's range to the other (two leaf pages,
  and often a parent). Every query on ``operations`` names the session (the
  load of a session's open operations, its timed-out ones, the dashboard's
  moves): an index of ``session_id`` alone serves them, and its entries never
  change once written (new ones are appended).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outbox_undelivered", table_name="outbox")
    op.create_index("ix_operations_session", "operations", ["session_id"])
    op.drop_index("ix_operations_session_open", table_name="operations")


def downgrade() -> None:
    op.create_index("ix_operations_session_open", "operations", ["session_id", "handled"])
    op.drop_index("ix_operations_session", table_name="operations")
    op.create_index("ix_outbox_undelivered", "outbox", ["delivered_at"])
