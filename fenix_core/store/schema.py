"""The persisted engine state (SQLAlchemy 2.0 typed mappings).

Rows are the engine's working state, not values: a workflow changes them in
memory during a step and the step commits them in one transaction together
with the operations it started, its timers and the notifications it owes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Sequence,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    false,
    literal_column,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from ..clock import as_utc

__all__ = [
    "OUTBOX_SPAN",
    "SESSION_NUMBERS",
    "Base",
    "ConstraintRevisionRow",
    "GroupConstraintRow",
    "HostChangeRow",
    "HostRow",
    "InboxRow",
    "InstanceConstraintRow",
    "InstanceRow",
    "InventoryHostRow",
    "OperationRow",
    "OutboxRow",
    "ProjectRow",
    "SessionClockRow",
    "SessionRow",
    "SessionStateRow",
    "SubscriptionRow",
    "TimerRow",
    "UTCDateTime",
    "WebhookRow",
    "WebhookTargetRow",
    "next_session_number",
    "operation_id",
    "operations_in_recorded_order",
    "outbox_id",
    "session_operations",
    "session_outbox",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; naive UTC in SQLite, timestamptz elsewhere."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


def _session_fk() -> ForeignKey:
    return ForeignKey("sessions.id", ondelete="CASCADE")


#: A session's range of outbox ids: ``number * OUTBOX_SPAN + seq``.
OUTBOX_SPAN: Final = 1 << 32

#: PostgreSQL's source of session numbers (SQLite takes the highest plus one).
SESSION_NUMBERS: Final = Sequence("sessions_number_seq", metadata=Base.metadata)


class next_session_number(FunctionElement[int]):
    """A new session's number, in its INSERT: the sequence's next value on
    PostgreSQL (two workers inserting at once get two numbers); on SQLite,
    whose writes are serialised, one more than the highest of the sessions'
    and of the outbox's (the last id's: one seek), so that a number is not
    given again while rows of a deleted session may be left (the outbox has
    no foreign key: a session deleted by hand leaves its notifications)."""

    type = Integer()
    inherit_cache = True


@compiles(next_session_number, "sqlite")
def _next_number_sqlite(element: next_session_number, compiler: SQLCompiler, **kw: Any) -> str:
    return (
        "(SELECT max(coalesce(max(number), 0), "
        f"coalesce((SELECT max(id) FROM outbox), 0) / {OUTBOX_SPAN}) + 1 FROM sessions)"
    )


@compiles(next_session_number)
def _next_number(element: next_session_number, compiler: SQLCompiler, **kw: Any) -> str:
    return f"nextval('{SESSION_NUMBERS.name}')"


class SessionRow(Base):
    """One maintenance session and where its workflow stands."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(32))
    # Where the workflow is inside the state (its own vocabulary).
    phase: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str | None] = mapped_column(Text)
    failed_state: Mapped[str | None] = mapped_column(String(32))
    percent_done: Mapped[int] = mapped_column(Integer, default=0)
    # ``data``, ``seq``, ``version``, ``next_wake`` and the lease columns below
    # are those of releases before migration 0007, which moved them to
    # ``session_clock`` and the component states: kept so that a database
    # of an earlier release upgrades, at their defaults for new sessions,
    # and no longer read or written (docs/internals.md, "The tables").
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    next_wake: Mapped[datetime | None]
    maintenance_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[datetime | None]
    lease_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # 0014: the session's number, given at insert; its outbox rows' ids are
    # numbered from it (``outbox_id``).
    number: Mapped[int] = mapped_column(Integer, default=next_session_number())

    __table_args__ = (
        Index("ix_sessions_state_wake", "state", "next_wake"),
        Index("ux_sessions_number", "number", unique=True),
    )
    # The ORM reads ``number`` back when it is asked for, not with RETURNING:
    # rows flushed together are then inserted one by one (SQLite's highest
    # plus one, in one multi-row INSERT, would give each the same number).
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012 - SQLAlchemy reads it


class HostRow(Base):
    """A host as this session sees it; OUT_OF_SCOPE hosts are targets only."""

    __tablename__ = "session_hosts"

    session_id: Mapped[str] = mapped_column(String(36), _session_fk(), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    vcpus: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    # Order in the request (or the cloud's listing); the rolling order.
    position: Mapped[int] = mapped_column(Integer)
    # Index of the next step of this host's maintenance pipeline.
    stage: Mapped[int] = mapped_column(Integer, default=0)
    # Whether the cloud had the host enabled when the session took its inventory.
    # A host someone else disabled is neither a target nor re-enabled by us.
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # This session disabled the host and has not enabled it again.
    disabled_by_session: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    # Core v2 (migration 0007): per-host facts of the controls as bits
    # (core.working_set.HostMark), replacing the session data's ctl_* lists.
    marks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        # 0009: the hosts running sessions are still adding, asked at every
        # listing of the cloud's hosts (not a scan of every session's fleet).
        Index(
            "ix_session_hosts_adding",
            "name",
            sqlite_where=text("state = 'ADDING'"),
            postgresql_where=text("state = 'ADDING'"),
        ),
    )


class InstanceRow(Base):
    """An instance on one of the session's hosts (or on a target host)."""

    __tablename__ = "session_instances"

    session_id: Mapped[str] = mapped_column(String(36), _session_fk(), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), default="")
    host: Mapped[str] = mapped_column(String(255))
    vcpus: Mapped[int] = mapped_column(Integer)
    live_migratable: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(32))
    action: Mapped[str | None] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(255))
    moves: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Constrained workflow: the wave that asked about it, the earliest time its
    # move may start (its project's lead time), and until when it counts as
    # impacted after its last move (its group's recovery time).
    wave: Mapped[int | None] = mapped_column(Integer, default=None)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    impacted_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Core v2 (0007): the host a controlled drain moved it off (was ctl_moved_off),
    # and the targets the cloud refused for the move in flight (was refused_targets).
    moved_from: Mapped[str | None] = mapped_column(String(255), default=None)
    refused: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True), default=None)

    __table_args__ = (
        Index("ix_session_instances_project", "session_id", "project_id"),
        Index("ix_session_instances_instance", "instance_id"),
    )


class ProjectRow(Base):
    """A project with instances in the session, and where its dialogue stands."""

    __tablename__ = "session_projects"

    session_id: Mapped[str] = mapped_column(String(36), _session_fk(), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    managed: Mapped[bool] = mapped_column(Boolean)
    # The last state sent (awaiting a reply while ``awaiting`` is set) or replied.
    state: Mapped[str | None] = mapped_column(String(64))
    awaiting: Mapped[bool] = mapped_column(Boolean, default=False)
    reply_at: Mapped[datetime | None]
    replied_at: Mapped[datetime | None]
    # Core v2 (0007): the project has instances on the host being drained (was drain_projects).
    draining: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SubscriptionRow(Base):
    """A project that has an application manager listening."""

    __tablename__ = "subscriptions"

    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime]


class OperationRow(Base):
    """Something started on the cloud or an action plug-in, polled until it ends.

    status: pending (recorded, not started yet) -> running -> done | failed,
    or abandoned (the session failed and the outcome no longer matters).
    ``handled`` is set once the workflow has taken the outcome into account.

    0015: keyed by ``id``, its session's number and ``n`` in one integer
    (``operation_id``), as the outbox is: on SQLite the table's rowid, so a
    step's new operation is appended to a b-tree whose inner pages hold
    integers (0013's WITHOUT ROWID key held a whole ~360-byte row per inner
    cell: a deep tree, and about two pages of each commit), and a session's
    operations, read by its id range, are one range of it. No foreign key:
    deleting a session deletes its range (``core.admin``).
    """

    __tablename__ = "operations"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    session_id: Mapped[str] = mapped_column(String(36))
    # 0013: the number the session gave the operation (counting its
    # operations, in the order recorded), the key's number.
    n: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    # Unique per attempt (``<session id>:<n>``); handed to the driver /
    # action to make retries idempotent.
    key: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    instance_id: Mapped[str | None] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    handle: Mapped[str | None] = mapped_column(String(255))
    next_poll: Mapped[datetime | None]
    deadline: Mapped[datetime | None]
    polls: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    handled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


def operation_id(number: Any, n: Any) -> Any:
    """The id of a session's operation ``n`` (numbers or SQL expressions):
    the same layout as :func:`outbox_id`."""
    return outbox_id(number, n)


def session_operations(number: Any) -> ColumnElement[bool]:
    """The operations of the session numbered ``number`` (a SQL expression):
    a range of ids, one range of the operations' b-tree."""
    row_id = OperationRow.__table__.c.id
    return and_(row_id >= operation_id(number, 0), row_id < operation_id(number + 1, 0))


def operations_in_recorded_order() -> tuple[ColumnElement[Any], ...]:
    """ORDER BY terms putting a session's operations in the order they were
    recorded: by their number (within a session, the id's order)."""
    number: ColumnElement[Any] = OperationRow.__table__.c.n
    return (number,)


class TimerRow(Base):
    """A persisted wake-up (reply deadline, start time, retry back-off)."""

    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), _session_fk())
    kind: Mapped[str] = mapped_column(String(64))
    due: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    # 0012: a step deletes or updates a timer by session and name.
    __table_args__ = (Index("ix_timers_session_kind", "session_id", "kind"),)


def outbox_id(number: Any, seq: Any) -> Any:
    """The outbox id of a session's notification ``seq`` (numbers or SQL
    expressions); a session's ids are ``outbox_id(number, 1)`` up to
    ``outbox_id(number + 1, 0)``, excluded."""
    if isinstance(number, int):
        return number * OUTBOX_SPAN + seq
    # Inline: PostgreSQL types the constant as bigint (a bound one as integer).
    return number * literal_column(str(OUTBOX_SPAN), BigInteger) + seq


class OutboxRow(Base):
    """A notification owed; delivered after the step that wrote it commits.

    0014: keyed by ``id``, its session's number and its seq in one integer
    (``outbox_id``): on SQLite the table's rowid, so a step's notifications
    are appended to ONE b-tree (a ``(session_id, seq)`` key was a second
    one, an index beside the rowid table), and a session's rows, read by
    its id range, are one range of it. No foreign key: with no index on
    ``session_id``, deleting a session would scan the table for its rows;
    the delete removes the session's id range instead (``core.admin``)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    session_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)
    signal: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    # Not written since 0007 (delivery goes by session_clock.delivered_seq);
    # its index was dropped in 0010.
    delivered_at: Mapped[datetime | None]


def session_outbox(number: Any, after_seq: Any = 0) -> ColumnElement[bool]:
    """The outbox rows of the session numbered ``number`` (a SQL expression)
    above ``after_seq``: a range of ids, one range of the outbox's b-tree."""
    row_id = OutboxRow.__table__.c.id
    return and_(row_id > outbox_id(number, after_seq), row_id < outbox_id(number + 1, 0))


class InboxRow(Base):
    """A validated reply waiting for the session's next step."""

    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), _session_fk())
    project_id: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(64))
    instance_actions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_inbox_session_open", "session_id", "processed_at"),
        # Core v2 (0007): only the rows still to process, for the due poll.
        Index(
            "ix_inbox_unprocessed",
            "session_id",
            "id",
            sqlite_where=text("processed_at IS NULL"),
            postgresql_where=text("processed_at IS NULL"),
        ),
    )


class SessionClockRow(Base):
    """Core v2 (0007): what every step's fenced UPDATE touches, apart from the
    ``sessions`` row so that lease and wake-up changes rewrite ~100 bytes."""

    __tablename__ = "session_clock"

    session_id: Mapped[str] = mapped_column(String(36), _session_fk(), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    # Last outbox sequence number used.
    seq: Mapped[int] = mapped_column(Integer, default=0)
    next_wake: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires: Mapped[datetime | None]
    # Every outbox row with seq <= delivered_seq has been delivered.
    delivered_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The highest inbox id the session has processed (a record only: rows
    # below it may still be unprocessed, since on PostgreSQL replies written
    # at once through two engines can commit out of id order).
    inbox_seen_id: Mapped[int] = mapped_column(Integer, default=0)

    # No index of ``next_wake`` (0014 dropped it): nearly every step changes
    # the wake, and moving its entry was a page of each step's commit. The
    # due poll reads the table (one short row per session).


class SessionStateRow(Base):
    """Core v2 (0007): one component's typed, constant-size state (JSON body)."""

    __tablename__ = "session_state"

    session_id: Mapped[str] = mapped_column(String(36), _session_fk(), primary_key=True)
    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]]


class GroupConstraintRow(Base):
    """An instance group's constraints (set by its project's manager).

    Keyed by project and group: each project names its groups for itself, so
    no project's write can land on or lock out another project's group.
    """

    __tablename__ = "group_constraints"

    project_id: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    group_id: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    group_name: Mapped[str] = mapped_column(String(255))
    anti_affinity_group: Mapped[bool] = mapped_column(Boolean)
    max_instances_per_host: Mapped[int] = mapped_column(Integer)
    max_impacted_members: Mapped[int] = mapped_column(Integer)
    recovery_time: Mapped[int] = mapped_column(Integer)
    resource_mitigation: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InstanceConstraintRow(Base):
    """One instance's constraints; ``group_id`` None means the project's
    implicit group (``group_id`` names a group of the same project).

    Keyed by project and instance: a row only applies while the cloud reports
    the instance in that project, and a row written under the wrong project
    never locks the real owner out.
    """

    __tablename__ = "instance_constraints"

    project_id: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    instance_id: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    group_id: Mapped[str | None] = mapped_column(String(255), index=True)
    instance_name: Mapped[str] = mapped_column(String(255))
    max_interruption_time: Mapped[int | None] = mapped_column(Integer)
    migration_type: Mapped[str | None] = mapped_column(String(32))
    resource_mitigation: Mapped[bool] = mapped_column(Boolean)
    lead_time: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConstraintRevisionRow(Base):
    """One row counting constraint changes, so that every engine worker sees
    a change made through another one at its next decision."""

    __tablename__ = "constraint_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)


class WebhookTargetRow(Base):
    """Where a project wants its ``maintenance_planned`` notifications POSTed
    (the REST front end's replacement for an AODH event alarm)."""

    __tablename__ = "webhook_targets"

    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    # "maintenance.planned" or "maintenance.scheduled" (what Tacker listens to).
    event_type: Mapped[str] = mapped_column(String(64))
    # "fenix": the plain payload; "event_alarm": AODH's event-alarm body.
    body_shape: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class WebhookRow(Base):
    """A webhook POST owed to ``url``; sent in ``id`` order per ``url``.

    state: pending -> delivered (a 2xx answer), rejected (a 4xx other than
    408/429: retrying would not help), expired (undeliverable for too long) or
    dropped (an ``informational`` POST that failed its few attempts).
    ``(url, session_id, seq)`` is unique, so a notification that the engine
    delivers again after a crash is queued once. ``informational``: a
    project notification that expects no reply (INSTANCE_ACTION_DONE,
    ADMIN_ACTION_DONE), retried only a few times so that it never holds back
    the questions queued behind it.
    """

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    event_type: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    informational: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("url", "session_id", "seq", name="uq_webhooks_url_session_seq"),
        Index("ix_webhooks_pending", "state", "url", "id"),
    )


class InventoryHostRow(Base):
    """A host of the cloud as the engine last saw it (the stored inventory).

    status: ``present`` (the cloud lists it), ``removed`` (it no longer does),
    ``decommissioned`` (a session retired it; it may still be listed, disabled).
    """

    __tablename__ = "inventory_hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    vcpus: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    # When the status last changed, and the session that noticed it (None: none).
    changed_at: Mapped[datetime]
    session_id: Mapped[str | None] = mapped_column(String(36))


class HostChangeRow(Base):
    """A change of the cloud's host set (HOST_ADDED / HOST_REMOVED), and the
    outbox of its ``maintenance_host`` notification.

    No foreign key to the session: the change outlives the session that
    noticed it (and many are noticed outside any session).
    """

    __tablename__ = "host_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(32))
    session_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_host_changes_undelivered", "delivered_at"),)
