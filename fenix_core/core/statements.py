"""Every SQL statement of the session store, built once at import.

SQLAlchemy Core with bound parameters named ``b_<column>``: a statement is
compiled once per dialect and cached by ``Connection.execute``; executemany
passes one dict per row. The record layouts (``FIELDS``) come from the
working set, so a row tuple and a statement always agree on the columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    false,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.selectable import Select

from ..contract import OpStatus
from ..controls import STUCK_KIND_OF_OPERATION
from ..store.schema import (
    HostRow,
    InboxRow,
    InstanceRow,
    OperationRow,
    OutboxRow,
    ProjectRow,
    SessionClockRow,
    SessionRow,
    SessionStateRow,
    TimerRow,
    session_operations,
    session_outbox,
)
from .stuck import TIMED_OUT
from .working_set import ComponentRec, HostRec, InboxRec, InstanceRec, OpRec, ProjectRec, SessionRec

__all__ = ["INBOX_ROW", "INSTANCE_FIXED", "OP_ROW", "STATEMENTS", "Statements", "params"]

SESSIONS: Final[Table] = SessionRow.__table__  # type: ignore[assignment]
CLOCK: Final[Table] = SessionClockRow.__table__  # type: ignore[assignment]
STATE: Final[Table] = SessionStateRow.__table__  # type: ignore[assignment]
HOSTS: Final[Table] = HostRow.__table__  # type: ignore[assignment]
INSTANCES: Final[Table] = InstanceRow.__table__  # type: ignore[assignment]
PROJECTS: Final[Table] = ProjectRow.__table__  # type: ignore[assignment]
OPERATIONS: Final[Table] = OperationRow.__table__  # type: ignore[assignment]
TIMERS: Final[Table] = TimerRow.__table__  # type: ignore[assignment]
OUTBOX: Final[Table] = OutboxRow.__table__  # type: ignore[assignment]
INBOX: Final[Table] = InboxRow.__table__  # type: ignore[assignment]


def _b(name: str) -> Any:
    return bindparam(f"b_{name}")


def params(fields: Sequence[str], row: Sequence[Any], **extra: Any) -> dict[str, Any]:
    """One executemany row: ``b_<field>`` -> value."""
    out = {f"b_{name}": value for name, value in zip(fields, row, strict=True)}
    out.update({f"b_{name}": value for name, value in extra.items()})
    return out


def _insert(table: Table, fields: Sequence[str], *, with_session: bool = True) -> Insert:
    columns = [*(["session_id"] if with_session else []), *fields]
    return insert(table).values({c: _b(c) for c in columns})


def _update(
    table: Table, keys: Sequence[str], fields: Sequence[str], fixed: Sequence[str] = ()
) -> Update:
    """An UPDATE by ``keys`` of ``fields``, leaving out the ``fixed`` ones: a
    column in the SET list is written again even when its value is the same,
    and an indexed one rewrites its index entry too (a page more per commit)."""
    where = [table.c[k] == _b(k) for k in keys]
    values = {c: _b(c) for c in fields if c not in keys and c not in fixed}
    return update(table).where(*where).values(values)


#: Instance columns no step changes (the working set's setters refuse them),
#: left out of the step's UPDATE: ``project_id`` is indexed.
INSTANCE_FIXED: Final = ("project_id", "vcpus")


#: A reply a step carried, as ``StepWrite.new_inbox`` holds it.
INBOX_ROW: Final = (
    "project_id",
    "state",
    "instance_actions",
    "received_at",
    "processed_at",
    "outcome",
)


def _select(table: Table, fields: Sequence[str]) -> Select[Any]:
    return select(*(table.c[f] for f in fields)).where(table.c.session_id == _b("session_id"))


def _component_upserts() -> Mapping[str, Insert]:
    """``session_state`` written as an upsert, one dialect-specific form each."""
    values = {c: _b(c) for c in ("session_id", *ComponentRec.FIELDS)}
    keys = ["session_id", "component"]
    lite = sqlite.insert(STATE).values(values)
    pg = postgresql.insert(STATE).values(values)
    # The update takes the row proposed (``excluded``): the body is bound,
    # and JSON-encoded, once per row, not once more for the SET clause.
    return {
        "sqlite": lite.on_conflict_do_update(
            index_elements=keys,
            set_={"schema_version": lite.excluded.schema_version, "body": lite.excluded.body},
        ),
        "postgresql": pg.on_conflict_do_update(
            index_elements=keys,
            set_={"schema_version": pg.excluded.schema_version, "body": pg.excluded.body},
        ),
    }


#: The operations' fields as the statements bind them: the record's, then
#: the key's number (``n``) and the row's id (``operation_id``: the
#: session's number and ``n``, the primary key).
OP_ROW: Final = (*OpRec.FIELDS, "n", "id")

#: The flag an operation row of ``upsert_ops`` carries: 1 for a changed
#: operation (its row is updated), 0 for a new one (a key that exists
#: already changes nothing, and the store refuses the write by its count).
OP_CHANGED: Final = "changed"


def _ops_upsert() -> Insert:
    """``operations`` on SQLite: the step's new and changed operations in ONE
    executemany (one statement where an insert and an update were two, on
    nearly every step: one operation ends, the next starts). A new row whose
    key exists already is not applied (``WHERE`` on the flag): the caller
    compares the row count with the rows it wrote."""
    values = {c: _b(c) for c in ("session_id", *OP_ROW)}
    lite = sqlite.insert(OPERATIONS).values(values)
    return lite.on_conflict_do_update(
        index_elements=["id"],
        set_={f: lite.excluded[f] for f in OpRec.FIELDS if f != "key"},
        where=_b(OP_CHANGED) == literal_column("1"),
    )


class Statements:
    """The statements, as attributes (one object, built at import)."""

    def __init__(self) -> None:
        clock_fields = SessionRec.CLOCK
        # --- load
        self.load_session: Select[Any] = (
            select(
                *(SESSIONS.c[f] for f in SessionRec.ROW),
                *(CLOCK.c[f] for f in clock_fields),
                SESSIONS.c.number,  # last: not the record's (the store keeps it)
            )
            .join_from(SESSIONS, CLOCK, CLOCK.c.session_id == SESSIONS.c.id)
            .where(SESSIONS.c.id == _b("session_id"))
        )
        self.load_hosts = _select(HOSTS, HostRec.FIELDS).order_by(HOSTS.c.position)
        self.load_instances = _select(INSTANCES, InstanceRec.FIELDS)
        self.load_projects = _select(PROJECTS, ProjectRec.FIELDS)
        # A session's operations are a range of ids, from its number.
        self.session_number: Select[Any] = select(SESSIONS.c.number).where(
            SESSIONS.c.id == _b("session_id")
        )
        number = self.session_number.scalar_subquery()
        self.load_ops = (
            select(*(OPERATIONS.c[f] for f in OpRec.FIELDS))
            .where(session_operations(number), OPERATIONS.c.handled == false())
            .order_by(OPERATIONS.c.id)
        )
        # What a session's view reads of its operations (get_session): the
        # running ones (a gate's word on why the session waits, stuck work
        # that was renewed) and those of a kind that can be stuck that
        # failed by their deadline, handled or not. A finished session's
        # view loads none of the thousands of others.
        ops = OPERATIONS.c
        self.load_view_ops = (
            select(*(ops[f] for f in OpRec.FIELDS))
            .where(
                session_operations(number),
                or_(
                    and_(ops.handled == false(), ops.status == OpStatus.RUNNING.value),
                    and_(
                        ops.status == OpStatus.FAILED.value,
                        ops.kind.in_(tuple(STUCK_KIND_OF_OPERATION)),
                        ops.detail.startswith(TIMED_OUT, autoescape=True),
                    ),
                ),
            )
            .order_by(ops.id)
        )
        # The highest number, handled operations included: the last row of
        # the session's range.
        self.last_op_number: Select[Any] = (
            select(OPERATIONS.c.n)
            .where(session_operations(number))
            .order_by(OPERATIONS.c.id.desc())
            .limit(1)
        )
        self.load_timers = select(TIMERS.c.kind, TIMERS.c.due, TIMERS.c.data).where(
            TIMERS.c.session_id == _b("session_id")
        )
        self.load_components = _select(STATE, ComponentRec.FIELDS)
        self.unprocessed: Select[Any] = (
            select(*(INBOX.c[f] for f in InboxRec.FIELDS))
            .where(
                INBOX.c.session_id == _b("session_id"),
                INBOX.c.processed_at.is_(None),
            )
            .order_by(INBOX.c.id)
        )
        # The session's outbox rows above the watermark: a range of ids.
        self.undelivered: Select[Any] = (
            select(OUTBOX.c.seq, OUTBOX.c.signal, OUTBOX.c.payload)
            .where(session_outbox(number, _b("after_seq")))
            .order_by(OUTBOX.c.id)
        )
        # --- insert a session (its number given by the column's default)
        self.insert_session = (
            insert(SESSIONS).values({c: _b(c) for c in SessionRec.ROW}).returning(SESSIONS.c.number)
        )
        self.insert_clock = insert(CLOCK).values({c: _b(c) for c in ("session_id", *clock_fields)})
        # --- the step's write
        # What every step's fenced UPDATE sets, whether it holds the lease or takes it.
        stepped = {
            "version": _b("new_version"),
            "seq": case((_b("seq") > CLOCK.c.seq, _b("seq")), else_=CLOCK.c.seq),
            "next_wake": _b("next_wake"),
            "lease_expires": _b("lease_expires"),
            "delivered_seq": _b("delivered_seq"),
            "inbox_seen_id": _b("inbox_seen_id"),
        }
        self.fence: Update = (
            update(CLOCK)
            .where(
                CLOCK.c.session_id == _b("session_id"),
                CLOCK.c.lease_owner == _b("owner"),
                CLOCK.c.lease_token == _b("token"),
                CLOCK.c.version == _b("version"),
            )
            .values(stepped)
        )
        # The first write of a session this engine inserted takes its lease:
        # nobody may have leased it (no owner, the token before this one).
        self.fence_claim: Update = (
            update(CLOCK)
            .where(
                CLOCK.c.session_id == _b("session_id"),
                CLOCK.c.lease_owner.is_(None),
                CLOCK.c.lease_token == _b("token_before"),
                CLOCK.c.version == _b("version"),
            )
            .values({"lease_owner": _b("owner"), "lease_token": _b("token"), **stepped})
        )
        self.update_session: Update = (
            update(SESSIONS)
            .where(SESSIONS.c.id == _b("session_id"))
            .values({c: _b(c) for c in SessionRec.CHANGING})
        )
        self.update_hosts = _update(HOSTS, ("session_id", "name"), HostRec.FIELDS)
        self.insert_hosts = _insert(HOSTS, HostRec.FIELDS)
        self.update_instances = _update(
            INSTANCES, ("session_id", "instance_id"), InstanceRec.FIELDS, INSTANCE_FIXED
        )
        self.insert_instances = _insert(INSTANCES, InstanceRec.FIELDS)
        self.update_projects = _update(PROJECTS, ("session_id", "project_id"), ProjectRec.FIELDS)
        self.insert_projects = _insert(PROJECTS, ProjectRec.FIELDS)
        self.insert_ops = _insert(OPERATIONS, OP_ROW)
        self.update_ops = _update(OPERATIONS, ("id",), OP_ROW, ("key", "n"))
        self.upsert_ops_sqlite = _ops_upsert()
        self.insert_outbox = _insert(
            OUTBOX, ("id", "seq", "signal", "payload", "created_at"), with_session=True
        )
        self.upsert_components = _component_upserts()
        self.delete_timers: Delete = delete(TIMERS).where(
            TIMERS.c.session_id == _b("session_id"), TIMERS.c.kind == _b("kind")
        )
        self.update_timers: Update = (
            update(TIMERS)
            .where(TIMERS.c.session_id == _b("session_id"), TIMERS.c.kind == _b("kind"))
            .values(due=_b("due"), data=_b("data"))
        )
        self.insert_timers = insert(TIMERS).values(
            session_id=_b("session_id"), kind=_b("kind"), due=_b("due"), data=_b("data")
        )
        self.insert_inbox = _insert(INBOX, INBOX_ROW)
        self.inbox_outcomes: Update = (
            update(INBOX)
            .where(INBOX.c.id == _b("id"))
            .values(processed_at=_b("processed_at"), outcome=_b("outcome"))
        )


STATEMENTS: Final = Statements()
