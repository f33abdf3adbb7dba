"""A loaded session as plain slotted records with dirty tracking.

Records are changed only through :class:`WorkingSet`'s setters, which keep
the indexes (:mod:`fenix_core.core.indexes`) right and note what changed;
:meth:`WorkingSet.take_write` turns the changes into one
:class:`~fenix_core.core.ports.StepWrite` and keeps nothing of them after
(no list of written rows grows with the session). A setter that sets a
field to the value it has changes nothing and dirties nothing.

The row layouts (the ``FIELDS`` of each record, key first) are what the
stores read and write, column by column."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from enum import Enum, IntFlag
from operator import attrgetter
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

from ..contract.state import ComponentState
from .indexes import (
    ABSENT_STATES,
    MOVING_STATE,
    OUT_OF_SCOPE_STATES,
    CapacityIndex,
    HostIndex,
    InstanceIndex,
    ProjectIndex,
)
from .ports import Fence, NewSession, OutboxRec, StepWrite

__all__ = [
    "ComponentRec",
    "HostMark",
    "HostRec",
    "InboxRec",
    "InstanceRec",
    "OpRec",
    "ProjectRec",
    "SessionRec",
    "TimerRec",
    "WorkingSet",
    "op_number",
]


def _holds(inst: InstanceRec) -> tuple[str | None, str | None, int]:
    """What ``inst`` takes on hosts: (the host it uses, the host a move in
    flight reserves room on, its vCPUs); None where it takes nothing."""
    state = inst.state
    used = None if state in ABSENT_STATES else inst.host
    reserved = inst.target if state == MOVING_STATE and inst.target else None
    return used, reserved, inst.vcpus


class HostMark(IntFlag):
    """Bits of ``session_hosts.marks`` (migration 0007 writes the same values)."""

    STARTED = 1
    FINISHED = 2
    SKIPPED = 4
    MOVED_OFF = 8


def _field_init(name: str, fields: tuple[str, ...]) -> Callable[..., None]:
    """An ``__init__`` taking ``fields`` (by position or name, all required)
    and storing each in its slot, made once per record class: loading a
    large session builds a record per row, and a loop of setattr made that
    a visible part of every load (dataclasses and attrs generate theirs the
    same way). The names are the class's own FIELDS, identifiers all."""
    if not all(f.isidentifier() for f in fields):
        raise TypeError(f"{name}: FIELDS must be identifiers: {fields}")
    source = (
        f"def __init__(self, {', '.join(fields)}):\n"
        + "".join(f"    self.{f} = {f}\n" for f in fields)
        + "    self._dirty = False\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, {}, namespace)  # the source is built from the class's field names only
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{name}.__init__"
    return init


class _Rec:
    """A row as a slotted record: ``FIELDS`` (key first) plus ``_dirty``."""

    __slots__ = ("_dirty",)
    _dirty: bool
    FIELDS: ClassVar[tuple[str, ...]] = ()
    _getter: ClassVar[Callable[[Any], tuple[Any, ...]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # row() reads every field in one C call (a generator of getattr was a
        # visible part of every step's write).
        cls._getter = attrgetter(*cls.FIELDS) if len(cls.FIELDS) > 1 else None
        if cls.FIELDS:
            cls.__init__ = _field_init(cls.__name__, cls.FIELDS)  # type: ignore[method-assign]

    def __init__(self, *values: Any, **named: Any) -> None:
        raise TypeError(f"{type(self).__name__} is not a record (it has no FIELDS)")

    def row(self) -> tuple[Any, ...]:
        getter = type(self)._getter
        if getter is None:
            return tuple(getattr(self, name) for name in self.FIELDS)
        return getter(self)

    @property
    def key(self) -> Any:
        return getattr(self, self.FIELDS[0])

    @property
    def dirty(self) -> bool:
        """Changed since the working set last took its write."""
        return self._dirty

    def copy(self) -> Any:
        return type(self)(*self.row())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.row() == other.row()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.FIELDS)
        return f"{type(self).__name__}({fields})"


class HostRec(_Rec):
    FIELDS = (
        "name", "type", "vcpus", "state", "position", "stage", "enabled",
        "disabled_by_session", "marks", "started_at", "finished_at", "reason",
    )  # fmt: skip
    __slots__ = FIELDS
    name: str
    type: str
    vcpus: int
    state: str
    position: int
    stage: int
    enabled: bool
    disabled_by_session: bool
    marks: int
    started_at: datetime | None
    finished_at: datetime | None
    reason: str | None


class InstanceRec(_Rec):
    FIELDS = (
        "instance_id", "project_id", "name", "host", "vcpus", "live_migratable", "state",
        "action", "target", "moves", "attempts", "wave", "not_before", "impacted_until",
        "moved_from", "refused",
    )  # fmt: skip
    __slots__ = FIELDS
    instance_id: str
    project_id: str
    name: str
    host: str
    vcpus: int
    live_migratable: bool
    state: str
    action: str | None
    target: str | None
    moves: int
    attempts: int
    wave: int | None
    not_before: datetime | None
    impacted_until: datetime | None
    moved_from: str | None
    refused: list[str] | None


class ProjectRec(_Rec):
    FIELDS = ("project_id", "managed", "state", "awaiting", "reply_at", "replied_at", "draining")
    __slots__ = FIELDS
    project_id: str
    managed: bool
    state: str | None
    awaiting: bool
    reply_at: datetime | None
    replied_at: datetime | None
    draining: bool


class OpRec(_Rec):
    """An operation; keyed by its unique ``key`` (the database id is never
    needed: updates match the key)."""

    FIELDS = (
        "key", "kind", "host", "instance_id", "params", "status", "handle", "next_poll",
        "deadline", "polls", "detail", "result", "handled", "created_at", "started_at",
        "finished_at",
    )  # fmt: skip
    __slots__ = FIELDS
    key: str
    kind: str
    host: str | None
    instance_id: str | None
    params: dict[str, Any]
    status: str
    handle: str | None
    next_poll: datetime | None
    deadline: datetime | None
    polls: int
    detail: str | None
    result: dict[str, Any]
    handled: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TimerRec(_Rec):
    """A named timer (at most one per name): stored as ``timers.kind``."""

    FIELDS = ("name", "due", "data")
    __slots__ = FIELDS
    name: str
    due: datetime
    data: dict[str, Any]


class ComponentRec(_Rec):
    FIELDS = ("component", "schema_version", "body")
    __slots__ = FIELDS
    component: str
    schema_version: int
    body: dict[str, Any]


class InboxRec(_Rec):
    """An unprocessed reply as the store hands it to a step."""

    FIELDS = ("id", "project_id", "state", "instance_actions", "received_at")
    __slots__ = FIELDS
    id: int
    project_id: str
    state: str
    instance_actions: dict[str, Any]
    received_at: datetime


class SessionRec(_Rec):
    """The ``sessions`` row (``CHANGING`` is what a step may write) and the
    ``session_clock`` row (written by every step's fenced UPDATE)."""

    FIELDS = (
        "id", "workflow", "request", "created_at",
        "state", "phase", "reason", "failed_state", "percent_done", "maintenance_at",
        "updated_at", "finished_at",
        "version", "seq", "next_wake", "lease_owner", "lease_token", "lease_expires",
        "delivered_seq", "inbox_seen_id",
    )  # fmt: skip
    __slots__ = FIELDS
    CHANGING: ClassVar[tuple[str, ...]] = (
        "state", "phase", "reason", "failed_state", "percent_done", "maintenance_at",
        "updated_at", "finished_at",
    )  # fmt: skip
    CLOCK: ClassVar[tuple[str, ...]] = (
        "version", "seq", "next_wake", "lease_owner", "lease_token", "lease_expires",
        "delivered_seq", "inbox_seen_id",
    )  # fmt: skip
    ROW: ClassVar[tuple[str, ...]] = FIELDS[: len(FIELDS) - 8]
    id: str
    workflow: str
    request: dict[str, Any]
    created_at: datetime
    state: str
    phase: str
    reason: str | None
    failed_state: str | None
    percent_done: int
    maintenance_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    version: int
    seq: int
    next_wake: datetime | None
    lease_owner: str | None
    lease_token: int
    lease_expires: datetime | None
    delivered_seq: int
    inbox_seen_id: int

    def changing(self) -> tuple[Any, ...]:
        return _SESSION_CHANGING(self)


_SESSION_CHANGING = attrgetter(*SessionRec.CHANGING)


R = TypeVar("R", bound=_Rec)


def _row_getter(cls: type[_Rec]) -> Callable[[Any], tuple[Any, ...]]:
    """``cls``'s ``row`` as one C call (no Python frame per record)."""
    getter = cls._getter
    assert getter is not None, cls
    return getter


_HOST_ROW = _row_getter(HostRec)
_INSTANCE_ROW = _row_getter(InstanceRec)
_PROJECT_ROW = _row_getter(ProjectRec)
_OP_ROW = _row_getter(OpRec)
_COMPONENT_ROW = _row_getter(ComponentRec)

_SCALARS = frozenset({str, int, float, bool, type(None)})
#: ComponentState class -> its field names (what attrs.asdict walks).
_STATE_FIELDS: dict[type[ComponentState], tuple[str, ...]] = {}


class _NotPlain(Exception):
    """A value :func:`_plain_copy` leaves to attrs.asdict."""


def _plain_copy(value: Any) -> Any:
    """``value`` as ``attrs.asdict(..., value_serializer=_plain)`` gives it:
    enums by value, new lists, tuples, sets and dicts of the same kind."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, Enum):
        return value.value
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return kind(_plain_copy(v) for v in value)  # attrs.asdict keeps the kind
    if kind is dict:
        return {_plain_copy(k): _plain_copy(v) for k, v in value.items()}
    raise _NotPlain


def state_body(state: ComponentState) -> dict[str, Any]:
    """``state.to_json()``, without attrs.asdict's generic walk when the
    fields are plain values (every step writes its components back: that
    walk was a visible part of a step). A class with its own ``to_json``,
    or a field holding anything else, goes through ``to_json``."""
    cls = type(state)
    if cls.to_json is not ComponentState.to_json:
        return state.to_json()
    names = _STATE_FIELDS.get(cls)
    if names is None:
        names = _STATE_FIELDS[cls] = tuple(f.name for f in attrs.fields(cls))
    body: dict[str, Any] = {}
    scalars = _SCALARS
    try:
        for name in names:
            value = getattr(state, name)
            body[name] = value if type(value) in scalars else _plain_copy(value)
    except _NotPlain:
        return state.to_json()
    return body


#: Host fields with their own setter (they feed an index).
_HOST_INDEXED = frozenset({"name", "type", "vcpus", "state", "position"})
_INSTANCE_INDEXED = frozenset({"instance_id", "project_id", "host", "vcpus", "state", "target"})
_OP_FIXED = frozenset({"key", "kind", "created_at"})
#: The fields each setter may change (what _check_fields tests names against).
_HOST_FREE = frozenset(HostRec.FIELDS) - _HOST_INDEXED
_INSTANCE_FREE = frozenset(InstanceRec.FIELDS) - _INSTANCE_INDEXED
_INSTANCE_CHANGING = frozenset(InstanceRec.FIELDS) - {"instance_id", "project_id", "vcpus"}
_PROJECT_FREE = frozenset(ProjectRec.FIELDS) - {"project_id"}
_OP_FREE = frozenset(OpRec.FIELDS) - _OP_FIXED
#: Instance fields that decide what it holds on hosts (``_holds``).
_HOLDING = frozenset({"host", "state", "target"})


def _check_fields(rec: type[_Rec], changes: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """Every name in ``changes`` is one of ``allowed`` (a record's fields less
    those with their own setter); a membership test per name, the sets and
    sorting only to word the error (every setter call checks its names)."""
    if allowed.issuperset(changes):  # one C call: a loop of tests was a visible cost
        return
    unknown = sorted(set(changes) - set(rec.FIELDS))
    if unknown:
        raise KeyError(f"{rec.__name__} has no field(s) {unknown}")
    indexed = sorted(set(changes) - allowed)
    raise KeyError(f"{rec.__name__} field(s) {indexed} change through their own setter")


def op_number(key: str) -> int:
    """The number an operation's key ``<session id>:<n>`` ends with (0 for a
    key without one)."""
    tail = key.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


class StoredRecords(Protocol):
    """What a view of a session reads: a :class:`WorkingSet`, or the
    lighter :class:`SessionRecords` that ``get_session`` loads."""

    @property
    def session(self) -> SessionRec: ...
    @property
    def hosts(self) -> Mapping[str, HostRec]: ...
    @property
    def projects(self) -> Mapping[str, ProjectRec]: ...
    @property
    def ops(self) -> Mapping[str, OpRec]: ...
    @property
    def components(self) -> Mapping[str, ComponentRec]: ...


@attrs.frozen
class SessionRecords:
    """A session's records as last committed, for a view of it: its hosts,
    projects, operations and components, without its instances and without
    the indexes a step needs (building those for 1,000 hosts cost more than
    the rest of ``get_session``). Read, never stepped."""

    session: SessionRec
    hosts: Mapping[str, HostRec]
    projects: Mapping[str, ProjectRec]
    ops: Mapping[str, OpRec]
    components: Mapping[str, ComponentRec]


class WorkingSet:
    """One session's records, their indexes, and what changed since the last
    :meth:`take_write`."""

    __slots__ = (
        "_added_hosts",
        "_added_instances",
        "_added_projects",
        "_dirty_components",
        "_dirty_hosts",
        "_dirty_instances",
        "_dirty_ops",
        "_dirty_projects",
        "_dirty_timers",
        "_fresh_timers",
        "_inbox_outcomes",
        "_new_ops",
        "_outbox",
        "_session_dirty",
        "capacity",
        "components",
        "host_index",
        "hosts",
        "instance_index",
        "instances",
        "last_op",
        "ops",
        "project_index",
        "projects",
        "session",
        "timers",
    )

    def __init__(
        self,
        session: SessionRec,
        hosts: Iterable[HostRec] = (),
        instances: Iterable[InstanceRec] = (),
        projects: Iterable[ProjectRec] = (),
        ops: Iterable[OpRec] = (),
        timers: Iterable[TimerRec] = (),
        components: Iterable[ComponentRec] = (),
        last_op: int = 0,
    ) -> None:
        self.session = session
        # The highest operation number among the session's stored operations
        # (handled ones too): the next operation's key takes the one after.
        # Derived at load, so that no row is written only to count them.
        self.last_op = last_op
        self.hosts: dict[str, HostRec] = {h.name: h for h in hosts}
        self.instances: dict[str, InstanceRec] = {i.instance_id: i for i in instances}
        self.projects: dict[str, ProjectRec] = {p.project_id: p for p in projects}
        self.ops: dict[str, OpRec] = {o.key: o for o in ops}
        self.timers: dict[str, TimerRec] = {t.name: t for t in timers}
        self.components: dict[str, ComponentRec] = {c.component: c for c in components}
        self.host_index = HostIndex()
        self.instance_index = InstanceIndex()
        self.project_index = ProjectIndex()
        self.capacity = CapacityIndex()
        # What the instances hold is summed first, so that each host is filed
        # in the capacity buckets once (filing it again per instance made
        # every load of a large session cost a bucket move per instance).
        used, reserved = self.capacity.used, self.capacity.reserved
        add_instance = self.instance_index.add
        for inst in self.instances.values():
            add_instance(inst.instance_id, inst.project_id, inst.host, inst.state)
            on, towards, vcpus = _holds(inst)
            if on is not None and vcpus:
                used[on] = used.get(on, 0) + vcpus
            if towards is not None and vcpus:
                reserved[towards] = reserved.get(towards, 0) + vcpus
        for host in self.hosts.values():
            self._index_host(host)
        for project in self.projects.values():
            self.project_index.update(
                project.project_id, (False, None), (project.awaiting, project.state)
            )
        self._clear()

    def _clear(self) -> None:
        self._session_dirty = False
        self._added_hosts: list[HostRec] = []
        self._added_instances: list[InstanceRec] = []
        self._added_projects: list[ProjectRec] = []
        self._dirty_hosts: list[HostRec] = []
        self._dirty_instances: list[InstanceRec] = []
        self._dirty_projects: list[ProjectRec] = []
        self._dirty_ops: list[OpRec] = []
        self._new_ops: list[OpRec] = []
        self._dirty_timers: dict[str, TimerRec | None] = {}
        # Timers set in this step that have no stored row (every timer held
        # when a step begins is stored: loaded, or written by the last step).
        self._fresh_timers: set[str] = set()
        self._dirty_components: list[ComponentRec] = []
        self._outbox: list[OutboxRec] = []
        self._inbox_outcomes: list[tuple[int, str, datetime]] = []

    def reset_to(self, other: WorkingSet) -> None:
        """Become ``other`` (the session as stored): a step that broke drops
        everything it changed, while whoever holds this object keeps it."""
        for name in WorkingSet.__slots__:
            setattr(self, name, getattr(other, name))

    # ------------------------------------------------------------------ identity

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def version(self) -> int:
        return self.session.version

    @property
    def delivered_seq(self) -> int:
        """The stored delivery watermark (what the stepper's outbox starts from)."""
        return self.session.delivered_seq

    @classmethod
    def from_new(cls, new: NewSession) -> WorkingSet:
        """The working set of a session as :meth:`SessionStore.insert` stores it."""
        return cls(
            SessionRec(*new.session),
            hosts=(HostRec(*row) for row in new.hosts),
            instances=(InstanceRec(*row) for row in new.instances),
            projects=(ProjectRec(*row) for row in new.projects),
            components=(ComponentRec(*row) for row in new.components),
        )

    def as_new(self) -> NewSession:
        return NewSession(
            session=self.session.row(),
            hosts=[h.row() for h in self.hosts.values()],
            instances=[i.row() for i in self.instances.values()],
            projects=[p.row() for p in self.projects.values()],
            components=[c.row() for c in self.components.values()],
        )

    # ------------------------------------------------------------------ indexes

    def _index_host(self, host: HostRec) -> None:
        self.host_index.add(host.name, host.state, host.type, host.position)
        self.instance_index.know_host(host.name)
        self.capacity.add_host(host.name, host.type, host.vcpus, host.state, host.enabled)

    def _index_instance(self, inst: InstanceRec) -> None:
        self.instance_index.add(inst.instance_id, inst.project_id, inst.host, inst.state)
        self._occupy(inst, 1)

    def _occupy(self, inst: InstanceRec, sign: int) -> None:
        """Add (sign 1) or take away (-1) what ``inst`` holds on hosts."""
        self._hold(_holds(inst), sign)

    def _hold(self, holds: tuple[str | None, str | None, int], sign: int) -> None:
        used, reserved, vcpus = holds
        if used is not None:
            self.capacity.adjust(used, used=sign * vcpus)
        if reserved is not None:
            self.capacity.adjust(reserved, reserved=sign * vcpus)

    def _rehold(
        self,
        before: tuple[str | None, str | None, int],
        after: tuple[str | None, str | None, int],
    ) -> None:
        """``before`` -> ``after`` as one change per host: a move's end takes
        the room its target reserved as used (free there unchanged: the
        target is not filed again), and only its source gains room."""
        used0, reserved0, vcpus0 = before
        used1, reserved1, vcpus1 = after
        adjust = self.capacity.adjust
        if used0 == used1 and vcpus0 == vcpus1:
            # The same host used (a move starting or ending without moving
            # it): only the room reserved changes hands.
            if reserved0 is not None:
                adjust(reserved0, reserved=-vcpus0)
            if reserved1 is not None:
                adjust(reserved1, reserved=vcpus1)
            return
        if (
            used1 is not None
            and used1 == reserved0
            and reserved1 is None
            and used0 is not None
            and vcpus0 == vcpus1
        ):
            # A move's end on its target (once a migration): what the loop
            # below works out, written out.
            adjust(used0, used=-vcpus0)
            adjust(used1, used=vcpus1, reserved=-vcpus0)
            return
        deltas: dict[str, list[int]] = {}
        for (used, reserved, vcpus), sign in ((before, -1), (after, 1)):
            if used is not None:
                deltas.setdefault(used, [0, 0])[0] += sign * vcpus
            if reserved is not None:
                deltas.setdefault(reserved, [0, 0])[1] += sign * vcpus
        for host, (used_by, reserved_by) in deltas.items():
            adjust(host, used=used_by, reserved=reserved_by)

    # ------------------------------------------------------------------ dirty marks

    @staticmethod
    def _mark(rec: R, dirty: list[R]) -> None:
        if not rec._dirty:
            rec._dirty = True
            dirty.append(rec)

    @staticmethod
    def _apply(rec: _Rec, changes: Mapping[str, Any]) -> bool:
        changed = False
        for name, value in changes.items():
            if getattr(rec, name) != value:
                setattr(rec, name, value)
                changed = True
        return changed

    # ------------------------------------------------------------------ session

    def update_session(self, **changes: Any) -> None:
        unknown = sorted(set(changes) - set(SessionRec.CHANGING))
        if unknown:
            raise KeyError(f"a step does not change the session's {unknown}")
        if self._apply(self.session, changes):
            self._session_dirty = True

    # ------------------------------------------------------------------ hosts

    def add_host(self, host: HostRec) -> None:
        """A host that joined the session (lifecycle: HOST_ADDED)."""
        if host.name in self.hosts:
            raise KeyError(f"host {host.name!r} is already in the session")
        self.hosts[host.name] = host
        self._index_host(host)
        host._dirty = True  # written by its INSERT; later changes ride on it
        self._added_hosts.append(host)

    def set_host_state(self, name: str, state: str, *, reason: str | None = None) -> None:
        host = self.hosts[name]
        changes: dict[str, Any] = {"state": state}
        if reason is not None:
            changes["reason"] = reason
        old = host.state
        if self._apply(host, changes):
            self.host_index.restate(name, old, host.state)
            self.capacity.restand(name, host.state, host.enabled)
            self._mark(host, self._dirty_hosts)

    def set_host_vcpus(self, name: str, vcpus: int) -> None:
        """The cloud lists ``name`` with ``vcpus`` (a host being added)."""
        host = self.hosts[name]
        if host.vcpus == vcpus:
            return
        self.capacity._unfile(name)
        host.vcpus = self.capacity.vcpus[name] = vcpus
        self.capacity._file(name)
        self._mark(host, self._dirty_hosts)

    def update_host(self, name: str, **changes: Any) -> None:
        _check_fields(HostRec, changes, _HOST_FREE)
        host = self.hosts[name]
        if self._apply(host, changes):
            if "enabled" in changes:
                self.capacity.restand(name, host.state, host.enabled)
            self._mark(host, self._dirty_hosts)

    def follow_enabled(self, name: str, enabled: bool) -> None:
        """A target host's (one outside the session's scope) enabled flag as
        the inventory says, in memory only: every load follows the inventory
        again (``listings.follow_inventory``), so writing it would rewrite
        the row of every session holding the host each time another session
        switches it (with sessions over one cloud, most of a step's rows)."""
        host = self.hosts[name]
        host.enabled = enabled
        self.capacity.restand(name, host.state, enabled)

    def mark_host(self, name: str, mark: HostMark) -> None:
        # Plain int bits: ``HostMark | int`` is an enum call (a move's end marks
        # its source, already marked after the first move off it).
        marks, bit = int(self.hosts[name].marks), int(mark)
        if marks & bit != bit:
            self.update_host(name, marks=marks | bit)

    # ------------------------------------------------------------------ instances

    def add_instance(self, inst: InstanceRec) -> None:
        if inst.instance_id in self.instances:
            raise KeyError(f"instance {inst.instance_id!r} is already in the session")
        self.instances[inst.instance_id] = inst
        self._index_instance(inst)
        inst._dirty = True
        self._added_instances.append(inst)

    def _reindex_instance(self, inst: InstanceRec, changes: Mapping[str, Any]) -> None:
        """Apply ``changes``; only the indexes a changed field feeds are
        touched (an action or a plan changes none of them)."""
        old_state, old_host = inst.state, inst.host
        holding = not _HOLDING.isdisjoint(changes)
        before = _holds(inst) if holding else None
        if not self._apply(inst, changes):
            return
        if before is not None:
            after = _holds(inst)
            if after != before:  # most state changes leave the capacity as it was
                self._rehold(before, after)
            state, host = inst.state, inst.host
            if state != old_state or host != old_host:
                index = self.instance_index
                if state != old_state:
                    index.restate(inst.instance_id, old_state, state)
                if host != old_host:
                    index.rehost(inst.instance_id, inst.project_id, old_host, host)
                index.rescope((old_host, old_state), (host, state))
        self._mark(inst, self._dirty_instances)

    def set_instance_state(self, instance_id: str, state: str, action: str | None = None) -> None:
        """``_reindex_instance`` of a state change (and of the chosen action
        unless ``action`` is None), written out: a move changes an
        instance's state three times or more, and a project's answer sets
        each of its instances' action."""
        inst = self.instances[instance_id]
        old = inst.state
        if action is not None and inst.action != action:
            inst.action = action  # no index reads it
            if old == state:
                if not inst._dirty:  # _mark, inline (here and below)
                    inst._dirty = True
                    self._dirty_instances.append(inst)
                return
        elif old == state:
            return
        # ``_holds`` before and after, inline: only the state changes.
        host, target = inst.host, inst.target
        used = None if old in ABSENT_STATES else host
        now_used = None if state in ABSENT_STATES else host
        held = target if old == MOVING_STATE and target else None
        now_held = target if state == MOVING_STATE and target else None
        inst.state = state
        if used != now_used or held != now_held:
            vcpus = inst.vcpus
            self._rehold((used, held, vcpus), (now_used, now_held, vcpus))
        index = self.instance_index
        index.restate(instance_id, old, state)
        if (old in OUT_OF_SCOPE_STATES) != (state in OUT_OF_SCOPE_STATES):
            index.rescope((host, old), (host, state))  # (on one host: only then a count changes)
        if not inst._dirty:
            inst._dirty = True
            self._dirty_instances.append(inst)

    def aim(self, instance_id: str, action: str, target: str | None) -> None:
        """``_reindex_instance`` of a submitted Move's action and target
        (room held there while the instance is IN_ACTION), written out:
        once a migration, and no instance index reads either field."""
        inst = self.instances[instance_id]
        if inst.action == action and inst.target == target:
            return
        inst.action = action
        if inst.target != target:
            before = _holds(inst)
            inst.target = target
            after = _holds(inst)
            if after != before:
                self._rehold(before, after)
        self._mark(inst, self._dirty_instances)

    def land(self, instance_id: str, host: str) -> None:
        """``_reindex_instance`` of a move that ended with the instance on
        ``host``, another host than its own, written out (once a migration):
        moved from its host once more, no target, no refusals left."""
        inst = self.instances[instance_id]
        source = inst.host
        if host == source:
            raise ValueError(f"instance {instance_id!r} is on {host} already (set_target)")
        before = _holds(inst)
        inst.host, inst.target, inst.moved_from = host, None, source
        inst.moves += 1
        inst.refused = None
        after = _holds(inst)
        if after != before:
            self._rehold(before, after)
        state = inst.state
        index = self.instance_index
        index.rehost(instance_id, inst.project_id, source, host)
        index.rescope((source, state), (host, state))
        self._mark(inst, self._dirty_instances)

    def place(self, instance_id: str, host: str) -> None:
        """The instance now runs on ``host``."""
        self._reindex_instance(self.instances[instance_id], {"host": host})

    def set_target(self, instance_id: str, target: str | None) -> None:
        self._reindex_instance(self.instances[instance_id], {"target": target})

    def change_instance(self, instance_id: str, **changes: Any) -> None:
        """Several fields at once, indexed ones included: the indexes are
        kept right in one pass (a setter per field re-indexed the instance
        each time)."""
        _check_fields(InstanceRec, changes, _INSTANCE_CHANGING)
        self._reindex_instance(self.instances[instance_id], changes)

    def update_instance(self, instance_id: str, **changes: Any) -> None:
        _check_fields(InstanceRec, changes, _INSTANCE_FREE)
        inst = self.instances[instance_id]
        if self._apply(inst, changes):
            self._mark(inst, self._dirty_instances)

    # ------------------------------------------------------------------ projects

    def update_project(self, project_id: str, **changes: Any) -> None:
        _check_fields(ProjectRec, changes, _PROJECT_FREE)
        project = self.projects[project_id]
        before = (project.awaiting, project.state)
        if self._apply(project, changes):
            self.project_index.update(project_id, before, (project.awaiting, project.state))
            self._mark(project, self._dirty_projects)

    def add_project(self, project: ProjectRec) -> None:
        if project.project_id in self.projects:
            raise KeyError(f"project {project.project_id!r} is already in the session")
        self.projects[project.project_id] = project
        self.project_index.update(
            project.project_id, (False, None), (project.awaiting, project.state)
        )
        project._dirty = True
        self._added_projects.append(project)

    # ------------------------------------------------------------------ operations

    def add_op(self, op: OpRec) -> None:
        if op.key in self.ops:
            raise KeyError(f"operation {op.key!r} exists already")
        self.ops[op.key] = op
        op._dirty = True  # written by its INSERT; later changes ride on it
        self._new_ops.append(op)

    def update_op(self, key: str, **changes: Any) -> None:
        _check_fields(OpRec, changes, _OP_FREE)
        op = self.ops[key]
        if self._apply(op, changes):
            self._mark(op, self._dirty_ops)

    def answer_op(
        self,
        key: str,
        status: str,
        polls: int,
        next_poll: datetime | None,
        detail: str | None,
        ended: tuple[datetime, dict[str, Any]] | None = None,
        also: Mapping[str, Any] | None = None,
    ) -> None:
        """``update_op`` of a start's or a poll's answer written out (once or
        twice a step): its status, poll count (one more: the record always
        changes), next poll and detail; ``ended``: when it finished and its
        result; ``also``: other fields the call changed (a start's handle)."""
        op = self.ops[key]
        if also:
            _check_fields(OpRec, also, _OP_FREE)
            self._apply(op, also)
        op.status, op.polls, op.next_poll, op.detail = status, polls, next_poll, detail
        if ended is not None:
            op.finished_at, op.result = ended
        if not op._dirty:  # _mark, inline
            op._dirty = True
            self._dirty_ops.append(op)

    def set_handled(self, key: str) -> None:
        """``update_op(key, handled=True)`` written out: every operation that
        ends is marked so (its hook ran), once a step or more."""
        op = self.ops[key]
        if not op.handled:
            op.handled = True
            if not op._dirty:  # _mark, inline
                op._dirty = True
                self._dirty_ops.append(op)

    # ------------------------------------------------------------------ timers, state

    def set_timer(self, name: str, due: datetime, data: Mapping[str, Any] | None = None) -> None:
        timer = TimerRec(name, due, dict(data or {}))
        if self.timers.get(name) != timer:
            if name not in self.timers and name not in self._dirty_timers:
                self._fresh_timers.add(name)
            self.timers[name] = timer
            self._dirty_timers[name] = timer

    def cancel_timer(self, name: str) -> None:
        if self.timers.pop(name, None) is not None:
            self._dirty_timers[name] = None

    def set_component(self, component: str, schema_version: int, body: dict[str, Any]) -> None:
        rec = self.components.get(component)
        if rec is None:
            rec = self.components[component] = ComponentRec(component, schema_version, body)
            self._mark(rec, self._dirty_components)
            return
        # _apply's work for the two fields, written out (twice a step): an
        # equal body leaves the stored object in place.
        changed = False
        if rec.schema_version != schema_version:
            rec.schema_version = schema_version
            changed = True
        if rec.body != body:
            rec.body = body
            changed = True
        if changed:
            self._mark(rec, self._dirty_components)

    def set_state(self, state: ComponentState) -> None:
        self.set_component(state.component, state.schema_version, state_body(state))

    # ------------------------------------------------------------------ outbox, inbox

    def emit(self, signal: str, payload: dict[str, Any]) -> int:
        """Owe a notification; returns its sequence number. ``payload`` is
        the caller's new dict, which the notification keeps, its ``seq``
        added last (a copy of it per notification was a visible part of a
        move's end)."""
        self.session.seq += 1
        seq = self.session.seq
        payload["seq"] = seq
        self._outbox.append(OutboxRec(self.session.id, seq, signal, payload))
        return seq

    def processed(self, inbox_id: int, outcome: str, at: datetime) -> None:
        """A reply taken into account (its outcome is written with the step)."""
        self._inbox_outcomes.append((inbox_id, outcome, at))
        self.session.inbox_seen_id = max(self.session.inbox_seen_id, inbox_id)

    def delivered(self, seq: int) -> None:
        self.session.delivered_seq = max(self.session.delivered_seq, seq)

    # ------------------------------------------------------------------ the write

    def only_polls(self) -> bool:
        """Nothing changed since the last write but the bookkeeping of
        operations still running (their poll count, next poll, detail): a
        step may leave that for its next write."""
        if (
            self._session_dirty
            or self._added_hosts or self._added_instances or self._added_projects
            or self._dirty_hosts or self._dirty_instances or self._dirty_projects
            or self._new_ops or self._dirty_timers or self._dirty_components
            or self._outbox or self._inbox_outcomes
        ):  # fmt: skip
            return False
        return all(op.status == "running" and not op.handled for op in self._dirty_ops)

    def dirty_keys(self) -> dict[str, set[Any]]:
        """What changed since the last write, per table (for tests and logs)."""
        return {
            "session": {self.session.id} if self._session_dirty else set(),
            "hosts": {h.name for h in self._dirty_hosts},
            "instances": {i.instance_id for i in self._dirty_instances},
            "projects": {p.project_id for p in self._dirty_projects},
            "new_hosts": {h.name for h in self._added_hosts},
            "new_instances": {i.instance_id for i in self._added_instances},
            "new_projects": {p.project_id for p in self._added_projects},
            "new_ops": {o.key for o in self._new_ops},
            "ops": {o.key for o in self._dirty_ops},
            "timers": set(self._dirty_timers),
            "components": {c.component for c in self._dirty_components},
            "outbox": {o.seq for o in self._outbox},
            "inbox": {i for i, _, _ in self._inbox_outcomes},
        }

    def take_write(
        self,
        fence: Fence,
        *,
        next_wake: datetime | None,
        lease_expires: datetime,
        at: datetime | None = None,
    ) -> StepWrite:
        """The step's changes as one write; the working set then holds them as
        written (version + 1, handled operations dropped) and keeps no list
        of them. If the write fails, drop this working set and load again.
        ``at``: the step's time on the engine's clock (the outbox rows' stamp)."""
        if fence.session_id != self.session.id or fence.version != self.session.version:
            raise ValueError(
                f"fence {fence} does not match session {self.session.id} at "
                f"version {self.session.version}"
            )
        write = StepWrite(
            fence=fence,
            next_wake=next_wake,
            lease_expires=lease_expires,
            delivered_seq=self.session.delivered_seq,
            inbox_seen_id=self.session.inbox_seen_id,
            session=self.session.changing() if self._session_dirty else None,
            # Each class's row getter mapped in C, and most of these tables
            # unchanged in a step: their empty tuple, no list made; the
            # lists of records are the step's own: ``_clear`` below starts
            # new ones.
            components=list(map(_COMPONENT_ROW, c)) if (c := self._dirty_components) else (),
            hosts=list(map(_HOST_ROW, h)) if (h := self._dirty_hosts) else (),
            instances=list(map(_INSTANCE_ROW, i)) if (i := self._dirty_instances) else (),
            projects=list(map(_PROJECT_ROW, p)) if (p := self._dirty_projects) else (),
            new_hosts=list(map(_HOST_ROW, h)) if (h := self._added_hosts) else (),
            new_instances=list(map(_INSTANCE_ROW, i)) if (i := self._added_instances) else (),
            new_projects=list(map(_PROJECT_ROW, p)) if (p := self._added_projects) else (),
            new_ops=list(map(_OP_ROW, o)) if (o := self._new_ops) else (),
            changed_ops=list(map(_OP_ROW, o)) if (o := self._dirty_ops) else (),
            outbox=self._outbox,
            inbox_outcomes=self._inbox_outcomes,
            timers=[
                (name, None, None) if t is None else t.row()
                for name, t in self._dirty_timers.items()
            ]
            if self._dirty_timers
            else (),
            fresh_timers=frozenset(self._fresh_timers),
            at=at,
        )
        for rec in (
            *self._dirty_hosts, *self._dirty_instances, *self._dirty_projects,
            *self._added_hosts, *self._added_instances, *self._added_projects,
        ):  # fmt: skip
            rec._dirty = False
        for comp in self._dirty_components:
            comp._dirty = False
        for op in (*self._dirty_ops, *self._new_ops):
            op._dirty = False
            if op.handled:
                del self.ops[op.key]
        self.session.version += 1
        self.session.next_wake = next_wake
        self.session.lease_expires = lease_expires
        self._clear()
        return write
