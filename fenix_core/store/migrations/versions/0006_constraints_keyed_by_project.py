"""constraints keyed by project

Instance and group constraints were keyed by their id alone, so the first
project to write an id owned it. They are keyed by (project_id, id) now;
existing rows keep the project they were written under (a session reports
rows that the cloud's listing contradicts, and workflows ignore them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = (("group_constraints", "group_id"), ("instance_constraints", "instance_id"))


#: The indexes 0002 created (batch mode re-creates them on the copy).
_INDEXED = {"group_constraints": ["project_id"], "instance_constraints": ["group_id", "project_id"]}


def _columns(table: str) -> list[sa.Column[object]]:
    """The table's columns as 0002 created them (unchanged since)."""
    if table == "group_constraints":
        return [
            sa.Column("group_id", sa.String(length=255), nullable=False),
            sa.Column("project_id", sa.String(length=255), nullable=False),
            sa.Column("group_name", sa.String(length=255), nullable=False),
            sa.Column("anti_affinity_group", sa.Boolean(), nullable=False),
            sa.Column("max_instances_per_host", sa.Integer(), nullable=False),
            sa.Column("max_impacted_members", sa.Integer(), nullable=False),
            sa.Column("recovery_time", sa.Integer(), nullable=False),
            sa.Column("resource_mitigation", sa.Boolean(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        ]
    return [
        sa.Column("instance_id", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("group_id", sa.String(length=255), nullable=True),
        sa.Column("instance_name", sa.String(length=255), nullable=False),
        sa.Column("max_interruption_time", sa.Integer(), nullable=True),
        sa.Column("migration_type", sa.String(length=32), nullable=True),
        sa.Column("resource_mitigation", sa.Boolean(), nullable=False),
        sa.Column("lead_time", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _set_primary_key(table: str, columns: list[str]) -> None:
    bind = op.get_bind()
    name = sa.inspect(bind).get_pk_constraint(table).get("name")
    if bind.dialect.name == "sqlite" or not name:
        # SQLite cannot alter a primary key: batch mode copies the rows into
        # a table described with the new key, then swaps it in.
        shape = sa.Table(
            table,
            sa.MetaData(),
            *_columns(table),
            sa.PrimaryKeyConstraint(*columns, name=f"pk_{table}"),
            *(sa.Index(f"ix_{table}_{c}", c) for c in _INDEXED[table]),
        )
        with op.batch_alter_table(table, copy_from=shape, recreate="always"):
            pass
        return
    op.drop_constraint(name, table, type_="primary")
    op.create_primary_key(f"pk_{table}", table, columns)


def upgrade() -> None:
    for table, id_column in _TABLES:
        _set_primary_key(table, ["project_id", id_column])
        op.create_index(f"ix_{table}_{id_column}", table, [id_column], unique=False)


def downgrade() -> None:
    # Only possible while no id is held by two projects (the old key).
    for table, id_column in _TABLES:
        op.drop_index(f"ix_{table}_{id_column}", table_name=table)
        _set_primary_key(table, [id_column])
