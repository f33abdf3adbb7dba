"""core v2: session clock, component state, per-host and per-instance facts

Adds, beside today's columns (which today's engine still reads and writes
until the core-v2 cut-over drops them):

* ``session_clock``: version, last seq, next wake, lease, delivered
  watermark, last processed inbox id (one small row per session);
* ``session_state``: one row per component with its JSON body;
* ``session_hosts.marks`` (bits: started, finished, skipped, moved off),
  ``session_instances.moved_from`` and ``.refused``,
  ``session_projects.draining``;
* the partial index ``ix_inbox_unprocessed``.

and converts each session's ``data`` dict into them (:data:`MIGRATED_KEYS`);
a key this migration does not know fails the upgrade with its name, so no
state is lost silently. :func:`convert` is written to run again (the
cut-over re-runs it before dropping the old columns: today's engine keeps
writing ``data`` in between). The downgrade drops what was added; the old
columns were never changed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: ``session_hosts.marks`` bits (the same values as core.working_set.HostMark).
STARTED, FINISHED, SKIPPED, MOVED_OFF = 1, 2, 4, 8

#: Scalar keys of ``sessions.data`` and the component whose state holds them
#: (the body's field keeps the key's name).
MIGRATED_KEYS: Mapping[str, str] = {
    "paused": "controls",
    "pause_reason": "controls",
    "ctl_gate": "controls",
    "ctl_waiting": "controls",
    "ctl_stuck": "controls",
    "ctl_last_host": "controls",
    "hosts_listed": "lifecycle",
    "down_hosts": "lifecycle",
    "admin_done": "lifecycle",
    "current_host": "rolling",
    "drain_host": "rolling",
    "scale_in_rounds": "rolling",
    "scale_in_freed": "rolling",
    "scale_in_load": "rolling",
    "wave": "constrained",
    "allowed_actions": "session",
    "cloud_constraints": "session",
    "op_counter": "session",
    # Written by the previous release too (approval, host guard, topology
    # labels, steering, constrained first wave, drained controllers): known
    # here so that such a session upgrades; migration 0008 reads them.
    "approval": "session",
    "host_guard": "session",
    "host_labels": "session",
    "queued_hosts": "session",
    "first_drained": "constrained",
    "drained_controllers": "lifecycle",
}
#: Keys whose per-host / per-instance contents move to columns.
ROW_KEYS = frozenset(
    {
        "ctl_started",
        "ctl_finished",
        "ctl_skipped",
        "ctl_moved_off",
        "drain_projects",
        "refused_targets",
    }
)
#: ``base.run_actions`` counts done actions under the sequence's name.
SEQUENCE_SUFFIX = "_actions_done"


def _tables(bind: sa.engine.Connection) -> dict[str, sa.Table]:
    meta = sa.MetaData()
    names = ["sessions", "session_hosts", "session_instances", "session_projects"]
    names += ["outbox", "inbox", "session_clock", "session_state"]
    return {name: sa.Table(name, meta, autoload_with=bind) for name in names}


def _loads(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        decoded = json.loads(value)
        return decoded if isinstance(decoded, dict) else {}
    return dict(value)


def _when(value: Any) -> datetime | None:
    """An ISO time of today's ``data`` (UTC when it has no offset)."""
    if not isinstance(value, str):
        return None
    found = datetime.fromisoformat(value)
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def split_data(session_id: str, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The component bodies of one session's ``data`` (row keys left out);
    raises on a key nobody owns."""
    bodies: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in ROW_KEYS:
            continue
        if key.endswith(SEQUENCE_SUFFIX):
            bodies.setdefault("session", {}).setdefault("sequences", {})[key] = value
            continue
        component = MIGRATED_KEYS.get(key)
        if component is None:
            raise RuntimeError(
                f"migration 0007: session {session_id} holds data key {key!r}, which "
                "this migration does not know where to put; nothing was converted"
            )
        bodies.setdefault(component, {})[key] = value
    return bodies


def convert(bind: sa.engine.Connection, only: Collection[str] | None = None) -> None:
    """(Re)write session_clock, session_state and the new columns from
    today's columns; idempotent. ``only``: these sessions (default: all)."""
    t = _tables(bind)
    sessions, hosts, instances = t["sessions"], t["session_hosts"], t["session_instances"]
    projects, outbox, inbox = t["session_projects"], t["outbox"], t["inbox"]
    clock, state = t["session_clock"], t["session_state"]
    query = sa.select(
        sessions.c.id,
        sessions.c.data,
        sessions.c.seq,
        sessions.c.version,
        sessions.c.next_wake,
        sessions.c.lease_owner,
        sessions.c.lease_token,
        sessions.c.lease_expires,
    )
    if only is not None:
        query = query.where(sessions.c.id.in_(list(only)))
    rows = bind.execute(query).all()
    # Check every session before writing anything.
    plans = [(row, split_data(row.id, _loads(row.data))) for row in rows]
    for table in (clock, state):
        bind.execute(
            table.delete()
            if only is None
            else table.delete().where(table.c.session_id.in_(list(only)))
        )
    for row, bodies in plans:
        sid = row.id
        data = _loads(row.data)
        undelivered = bind.execute(
            sa.select(sa.func.min(outbox.c.seq)).where(
                outbox.c.session_id == sid, outbox.c.delivered_at.is_(None)
            )
        ).scalar()
        delivered = (undelivered - 1) if undelivered is not None else (row.seq or 0)
        seen = bind.execute(
            sa.select(sa.func.max(inbox.c.id)).where(
                inbox.c.session_id == sid, inbox.c.processed_at.is_not(None)
            )
        ).scalar()
        first_open = bind.execute(
            sa.select(sa.func.min(inbox.c.id)).where(
                inbox.c.session_id == sid, inbox.c.processed_at.is_(None)
            )
        ).scalar()
        if first_open is not None:
            seen = first_open - 1 if seen is None else min(seen, first_open - 1)
        bind.execute(
            clock.insert().values(
                session_id=sid,
                version=row.version or 0,
                seq=row.seq or 0,
                next_wake=row.next_wake,
                lease_owner=row.lease_owner,
                lease_token=row.lease_token or 0,
                lease_expires=row.lease_expires,
                delivered_seq=max(delivered, 0),
                inbox_seen_id=seen or 0,
            )
        )
        for component, body in sorted(bodies.items()):
            bind.execute(
                state.insert().values(
                    session_id=sid, component=component, schema_version=1, body=body
                )
            )
        marks: dict[str, int] = {}
        for key, bit in (("ctl_started", STARTED), ("ctl_finished", FINISHED)):
            for host in data.get(key) or {}:
                marks[host] = marks.get(host, 0) | bit
        for host in data.get("ctl_skipped") or ():
            marks[host] = marks.get(host, 0) | SKIPPED
        moved_off: dict[str, list[str]] = data.get("ctl_moved_off") or {}
        for host in moved_off:
            marks[host] = marks.get(host, 0) | MOVED_OFF
        bind.execute(hosts.update().where(hosts.c.session_id == sid).values(marks=0))
        for host, bits in marks.items():
            bind.execute(
                hosts.update()
                .where(hosts.c.session_id == sid, hosts.c.name == host)
                .values(marks=bits)
            )
        # The core's started_at / finished_at are the pipeline's admission and
        # finish (today's engine kept them in ctl_started / ctl_finished; its
        # columns said when a host went into maintenance): an admitted host
        # whose drain was under way resumes admitted.
        for key, column in (("ctl_started", "started_at"), ("ctl_finished", "finished_at")):
            for host, when in (data.get(key) or {}).items():
                bind.execute(
                    hosts.update()
                    .where(hosts.c.session_id == sid, hosts.c.name == host)
                    .values({column: _when(when)})
                )
        bind.execute(
            instances.update()
            .where(instances.c.session_id == sid)
            .values(moved_from=None, refused=None)
        )
        for host, moved in moved_off.items():
            bind.execute(
                instances.update()
                .where(instances.c.session_id == sid, instances.c.instance_id.in_(list(moved)))
                .values(moved_from=host)
            )
        for instance_id, refused in (data.get("refused_targets") or {}).items():
            bind.execute(
                instances.update()
                .where(instances.c.session_id == sid, instances.c.instance_id == instance_id)
                .values(refused=list(refused))
            )
        draining = sorted(data.get("drain_projects") or {})
        bind.execute(
            projects.update()
            .where(projects.c.session_id == sid)
            .values(draining=projects.c.project_id.in_(draining) if draining else sa.false())
        )


def check(bind: sa.engine.Connection) -> None:
    """Refuse, before any change, a session whose data holds an unknown key
    (SQLite does not roll DDL back on every driver setting)."""
    sessions = sa.Table("sessions", sa.MetaData(), autoload_with=bind)
    for row in bind.execute(sa.select(sessions.c.id, sessions.c.data)):
        split_data(row.id, _loads(row.data))


def upgrade() -> None:
    check(op.get_bind())
    op.create_table(
        "session_clock",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("next_wake", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_token", sa.Integer(), nullable=False),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_seq", sa.Integer(), nullable=False),
        sa.Column("inbox_seen_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_index("ix_session_clock_wake", "session_clock", ["next_wake"])
    op.create_table(
        "session_state",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("component", sa.String(length=64), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id", "component"),
    )
    op.add_column(
        "session_hosts", sa.Column("marks", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "session_instances", sa.Column("moved_from", sa.String(length=255), nullable=True)
    )
    op.add_column("session_instances", sa.Column("refused", sa.JSON(), nullable=True))
    op.add_column(
        "session_projects",
        sa.Column("draining", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_inbox_unprocessed",
        "inbox",
        ["session_id", "id"],
        sqlite_where=sa.text("processed_at IS NULL"),
        postgresql_where=sa.text("processed_at IS NULL"),
    )
    convert(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_inbox_unprocessed", table_name="inbox")
    with op.batch_alter_table("session_projects") as batch:
        batch.drop_column("draining")
    with op.batch_alter_table("session_instances") as batch:
        batch.drop_column("refused")
        batch.drop_column("moved_from")
    with op.batch_alter_table("session_hosts") as batch:
        batch.drop_column("marks")
    op.drop_table("session_state")
    op.drop_index("ix_session_clock_wake", table_name="session_clock")
    op.drop_table("session_clock")
