"""the hosts being added: a partial index of session_hosts

Every listing of the cloud's hosts a session stores (``ListHosts``, and the
engine's own listing after work on a host failed) asks which hosts running
sessions are still adding (``session_hosts.state = 'ADDING'``). Each session
records the whole fleet, so without an index that question read every host
row of every session: 400,000 rows, 80 ms of the server's time, for 200
sessions over a 2,000-host cloud (benchmarks/workers.py). The partial index
holds only the rows of hosts being added (few, and none once admitted).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_session_hosts_adding",
        "session_hosts",
        ["name"],
        sqlite_where=sa.text("state = 'ADDING'"),
        postgresql_where=sa.text("state = 'ADDING'"),
    )


def downgrade() -> None:
    op.drop_index("ix_session_hosts_adding", table_name="session_hosts")
