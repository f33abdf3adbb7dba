"""``WorkingSetAdapter``: P1's :class:`~fenix_core.core.working_set.WorkingSet`
as the :class:`~fenix_core.core.context.WorkingSetPort` that P3's
``StepContext`` runs on.

Reads are the working set's indexes (hosts by state, instances by host,
project and (project, host), projects awaiting a reply, free vCPUs per
host) handed out as the contract's frozen views; each view is cached per
record and dropped when the adapter changes that record, so a workflow
that reads the same host many times in a step builds it once. Every change
is one working-set setter, so dirty tracking sees it; notifications become
outbox rows through ``WorkingSet.emit`` with the payloads of
docs/protocol.md (the ``service`` field, ISO times). Components are handed out as objects and
written back by :meth:`WorkingSetAdapter.flush` before the step's write
(only a changed body dirties its row).

The adapter lives as long as the working set (one per held session) and is
closed when the runner forgets the session; a ``now`` is set for each step
(``begin``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import count, islice
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Literal

import attrs

from ..budgets import Labels
from ..constraints import DEFAULT_GROUP, CloudConstraints, ConstraintSet, merge_cloud_dicts
from ..contract import (
    ComponentState,
    DisableHost,
    EnableHost,
    HostUp,
    HostView,
    InstanceView,
    Inventory,
    ListHosts,
    Locate,
    Move,
    Operation,
    OpKind,
    OpStatus,
    ProjectView,
    RunAction,
    SessionInfo,
    Watch,
)
from ..contract.context import S
from ..model import ActionSpec, SessionRequest
from ..placement_rules import HostLimits, PlacementRule, host_limits
from ..states import (
    DONE_HOST_STATES,
    FINAL_SESSION_STATES,
    UNBUDGETED_HOST_STATES,
    WORK_HOST_STATES,
    HostState,
    InstanceAction,
    InstanceState,
    SessionState,
    instance_action,
)
from .indexes import ABSENT_STATES, MOVING_STATE, Loan
from .working_set import HostMark, OpRec, WorkingSet

__all__ = [
    "OPS_COMPONENT",
    "SESSION_COMPONENT",
    "Steering",
    "WorkingSetAdapter",
    "op_of",
    "op_record",
    "started_ops",
]

#: The component holding what a session keeps apart from its workflow's
#: state (migration 0007's "session" component): the operation counter, the
#: cloud driver's allowed actions and constraints.
SESSION_COMPONENT = "session"
#: The component that counted the session's operations (the number in each
#: operation's key) until the count was derived from the stored keys at load
#: (``WorkingSet.last_op``): a move step wrote this row only to bump it. Rows
#: written before are still read, as a floor.
OPS_COMPONENT = "ops"


def started_ops(ws: WorkingSet) -> int:
    """Operations the session has started (their keys' last number): the
    highest stored, or what a session written by an earlier release counted
    in its ``ops`` component or, before that, in its facts (``op_counter``)."""
    rec = ws.components.get(OPS_COMPONENT)
    if rec is not None:
        counted = int(rec.body.get("counter", 0))
    else:
        facts = ws.components.get(SESSION_COMPONENT)
        counted = int((facts.body if facts is not None else {}).get("op_counter", 0))
    return max(ws.last_op, counted)


#: Questions whose answer names an action per instance: they list the allowed ones.
_INSTANCE_CHOICE = frozenset({"PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"})
_DONE = frozenset(s.value for s in DONE_HOST_STATES)
_WORK = tuple(s.value for s in WORK_HOST_STATES)
_QUEUED = HostState.PENDING.value
_FINAL_VALUES = frozenset(s.value for s in FINAL_SESSION_STATES)
#: How the cloud driver steers new instances around queued hosts: "each" host's
#: change (HostQueueChanges), the "whole" set each time (HostQueue), or None.
Steering = Literal["each", "whole"] | None
_UNBUDGETED = tuple(s.value for s in UNBUDGETED_HOST_STATES)
# Stored value -> member: a dict lookup where an Enum call (a Python-level
# __call__ and __new__) showed in every view built and every operation read.
_HOST_STATES = {s.value: s for s in HostState}
_INSTANCE_STATES = {s.value: s for s in InstanceState}
_OP_KINDS = {k.value: k for k in OpKind}
_OP_PENDING = OpStatus.PENDING.value
# The instance change log (``InstancesView.changed_since``): each adapter's
# marks start at a number no other adapter of this process used (a mark
# from before a load is unknown to the next adapter), and the log keeps at
# least the last _LOG_KEEP changes.
_LOG_EPOCHS = count(1)
_LOG_SPAN = 1 << 40
_LOG_KEEP = 8192
_STARTED, _FINISHED = int(HostMark.STARTED), int(HostMark.FINISHED)


def _iso(value: datetime | None) -> str | None:
    """``value.isoformat()``, the last one remembered: the questions of one
    step share their deadline, and formatting it was a visible part of
    asking each project."""
    if value is None:
        return None
    last = _LAST_ISO[0]
    if (
        last is not None
        and last[0] == value
        and last[0].tzinfo is value.tzinfo
        and last[0].fold == value.fold
    ):
        return last[1]
    text = value.isoformat()
    _LAST_ISO[0] = (value, text)
    return text


#: The last (datetime, its isoformat) of ``_iso`` (equal, in the same tzinfo
#: object, with the same fold: the same fields, formatted the same).
_LAST_ISO: list[tuple[datetime, str] | None] = [None]


# --------------------------------------------------------------------------- operations


def op_record(
    key: str,
    kind: OpKind,
    op: Operation | None,
    params: Mapping[str, Any],
    *,
    now: datetime,
    deadline: datetime | None,
    host_type: str | None = None,
    source: str | None = None,
) -> OpRec:
    """A pending operation row for ``op`` with the parameters the
    OperationRunner reads (``op`` None: a gate, ``params`` as given)."""
    host: str | None = None
    instance_id: str | None = None
    stored: dict[str, Any] = dict(params)
    if isinstance(op, Move):  # the most frequent first
        instance_id = op.instance_id
        stored = {
            "action": op.action._value_,
            "target": op.target,
            "source": source,
            "refused": sorted(op.refused),
        }
        if op.moves_again is not None:
            stored["moves_again"] = op.moves_again
    elif isinstance(op, DisableHost):
        host, stored = op.host, {"reason": op.reason}
    elif isinstance(op, EnableHost | HostUp):
        host = op.host
    elif isinstance(op, Watch):
        instance_id = op.instance_id
        stored = {"action": InstanceAction.OWN_ACTION.value, "source": source}
    elif isinstance(op, RunAction):
        host = op.host
        stored = {"action": op.spec.to_dict(), "sequence": op.sequence, "host_type": host_type}
    elif isinstance(op, Inventory):
        # The cloud's host listing is ListHosts' job here (OperationRunner's
        # _inventory would add every host of the cloud to each result).
        stored = {"hosts": list(op.hosts), "list_hosts": False}
    elif isinstance(op, ListHosts):
        stored = {"wait_for": list(op.wait_for)}
    elif isinstance(op, Locate):
        stored = {"instance_ids": list(op.instance_ids)}
    elif op is None:
        host = params.get("host")
    return OpRec(
        key, kind._value_, host, instance_id, stored, _OP_PENDING, None, now,
        deadline, 0, None, {}, False, now, None, None,
    )  # fmt: skip


def op_of(rec: OpRec) -> Operation | None:
    """The typed operation an operation row stands for (None: a gate)."""
    p = rec.params
    kind = _OP_KINDS.get(rec.kind) or OpKind(rec.kind)
    if kind is OpKind.DISABLE_HOST:
        return DisableHost(str(rec.host), str(p.get("reason", "maintenance")))
    if kind is OpKind.ENABLE_HOST:
        return EnableHost(str(rec.host))
    if kind is OpKind.HOST_UP:
        return HostUp(str(rec.host))
    if kind is OpKind.MOVE:
        return Move(
            str(rec.instance_id),
            instance_action(p["action"]),
            p.get("target"),
            frozenset(p.get("refused", ())),
            p.get("moves_again"),
        )
    if kind is OpKind.WATCH:
        return Watch(str(rec.instance_id))
    if kind is OpKind.ACTION:
        return RunAction(ActionSpec.from_dict(p["action"]), str(p.get("sequence", "")), rec.host)
    if kind is OpKind.INVENTORY:
        return Inventory(tuple(p.get("hosts") or ()))
    if kind is OpKind.LIST_HOSTS:
        return ListHosts(tuple(p.get("wait_for") or ()))
    if kind is OpKind.LOCATE:
        return Locate(tuple(p.get("instance_ids") or ()))
    return None


def _timeout_kind(op: Operation) -> str | None:
    """The request timeout (``SessionRequest.timeout``) an operation runs under."""
    if isinstance(op, Move):
        return "migration"
    if isinstance(op, Watch):
        return "own_action"
    if isinstance(op, RunAction):
        return "action"
    if isinstance(op, HostUp):
        return "host_up"
    if isinstance(op, ListHosts) and op.wait_for:
        return "host_added"  # waiting for the hosts of add_hosts to appear
    return None


#: What a flushed body says of each field, the values' types, the state's
#: class and its field getter (looked up at the flush, not at each comparison).
_Row = tuple[tuple[Any, ...], tuple[type, ...], type, Callable[[ComponentState], tuple[Any, ...]]]


def _fields_of(cls: type[ComponentState]) -> Callable[[ComponentState], tuple[Any, ...]]:
    """A function reading every field of a ``cls`` into a tuple, in one C
    call (a ``getattr`` per field was a visible part of every step)."""
    getter = _FIELD_GETTERS.get(cls)
    if getter is None:
        names = tuple(f.name for f in attrs.fields(cls))
        if len(names) == 1:
            one = attrgetter(names[0])
            getter = lambda state: (one(state),)  # noqa: E731
        else:
            getter = attrgetter(*names)
        _FIELD_GETTERS[cls] = getter
        _FIELD_NAMES[cls] = names
    return getter


def _flushed_row(state: ComponentState, body: Mapping[str, Any]) -> _Row | None:
    """What ``body`` (``state_body`` of ``state`` at a flush) says of each
    field, with the values' types, for :func:`_unchanged`; None when the
    class has its own ``to_json`` or the body is not one entry per field:
    then the full write-back decides each time."""
    cls = type(state)
    if cls.to_json is not ComponentState.to_json:
        return None
    getter = _fields_of(cls)
    names = _FIELD_NAMES[cls]
    if len(body) != len(names):
        return None
    try:
        values = tuple(map(body.__getitem__, names))
    except KeyError:
        return None
    return values, tuple(map(type, values)), cls, getter


def _unchanged(state: ComponentState, row: _Row | None) -> bool:
    """Whether ``state`` still holds what ``row`` (:func:`_flushed_row` of
    the body its last flush wrote) says, field by field, without building a
    new body: most steps change neither the pipeline's state nor half of
    the workflow's. Values of another type than the body's (an enum written
    as its value) say "changed": the full write-back decides."""
    if row is None or type(state) is not row[2]:
        return False
    values = row[3](state)
    return values == row[0] and tuple(map(type, values)) == row[1]


_FIELD_NAMES: dict[type[ComponentState], tuple[str, ...]] = {}
_FIELD_GETTERS: dict[type[ComponentState], Callable[[ComponentState], tuple[Any, ...]]] = {}


# --------------------------------------------------------------------------- views


class _LazyHosts(Collection[HostView]):
    """Hosts by position, each view built when the iteration reaches it; the
    names are taken when the collection is made (later changes do not show),
    and sorted only if iterated (``bool``/``len`` cost nothing)."""

    __slots__ = ("__weakref__", "_a", "_names", "_sorted")

    def __init__(self, adapter: WorkingSetAdapter, names: Collection[str], ordered: bool) -> None:
        self._a = adapter
        self._names = names
        self._sorted = ordered

    @classmethod
    def lent(
        cls, adapter: WorkingSetAdapter, state: str, type_: str | None
    ) -> Collection[HostView]:
        """The hosts in ``state`` (of ``type_`` if given) on the index's own
        list in position order, lent for as long as this collection lives:
        a change of the state copies the list only if the collection is
        still alive then (a decision that only counts or reads a few hosts
        has dropped it)."""
        index = adapter.ws.host_index
        if not (
            index.ordered.get(state) if type_ is None else index.ordered_of_type.get((state, type_))
        ):
            # No host in the state (a step asks for removed ones, most find
            # none): nothing made, nothing lent.
            return ()
        hosts = cls(adapter, (), True)
        hosts._names = index.ordered_names(state, type_, hosts)
        return hosts

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[HostView]:
        names = self._names
        if not self._sorted:
            names = sorted(names, key=self._a.ws.host_index.rank.__getitem__)
        view = self._a.host_view
        for name in names:
            found = view(name)
            if found is not None:
                yield found

    def __contains__(self, item: object) -> bool:
        return isinstance(item, HostView) and item.name in self._names and item in list(self)


class _Hosts:
    __slots__ = ("_a", "get")

    def __init__(self, adapter: WorkingSetAdapter) -> None:
        self._a = adapter
        # ``get`` is the adapter's cached view itself: the most frequent read
        # of a step, without a call through this object.
        self.get: Callable[[str], HostView | None] = adapter.host_view

    def in_state(self, *states: HostState, type: str | None = None) -> Collection[HostView]:
        if len(states) == 1:  # a list kept in order: len and bool cost nothing
            return _LazyHosts.lent(self._a, states[0], type)
        return _LazyHosts(self._a, self._a.ws.host_index.in_state(*states, type_=type), False)

    def without_instances(self, *states: HostState) -> Collection[HostView]:
        by_state = self._a.ws.host_index.by_state
        vacant = self._a.ws.instance_index.vacant
        names: set[str] = set()
        for state in states:
            # ``&`` looks up the smaller set's members in the larger.
            names |= by_state.get(state, set()) & vacant
        return _LazyHosts(self._a, names, False)

    def changes(self) -> int:
        return self._a.ws.host_index.changed

    def __len__(self) -> int:
        return len(self._a.ws.hosts)

    def __iter__(self) -> Iterator[HostView]:
        a = self._a
        for name in a.host_order():
            view = a.host_view(name)
            if view is not None:
                yield view


class _LazyViews(Collection[InstanceView]):
    """Instances by id order, each view built when the iteration reaches it
    (``any(... for i in ctx.instances.on(host))`` stops at the first). The
    ids are taken when the collection is made: later changes do not show."""

    __slots__ = ("_built", "_ids", "_view")

    def __init__(
        self,
        ids: list[str],
        view: Callable[[str], InstanceView | None],
        built: Mapping[str, InstanceView],
    ) -> None:
        """``built``: the views made already (read first: most are)."""
        self._ids = ids
        self._view = view
        self._built = built

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[InstanceView]:
        built, view = self._built, self._view
        for instance_id in self._ids:
            found = built.get(instance_id) or view(instance_id)
            if found is not None:
                yield found

    def __contains__(self, item: object) -> bool:
        return isinstance(item, InstanceView) and item in list(self)


class _Instances:
    __slots__ = ("_a", "get")

    def __init__(self, adapter: WorkingSetAdapter) -> None:
        self._a = adapter
        self.get: Callable[[str], InstanceView | None] = adapter.instance_view  # as _Hosts.get

    def _views(self, ids: Collection[str] | None) -> Collection[InstanceView]:
        if not ids:
            return ()
        return _LazyViews(sorted(ids), self._a.instance_view, self._a._instance_views)

    def on(self, host: str) -> Collection[InstanceView]:
        ids = self._a.ws.instance_index.sorted_on(host)
        if not ids:
            return ()
        return _LazyViews(ids, self._a.instance_view, self._a._instance_views)

    def of(self, project_id: str) -> Collection[InstanceView]:
        return self._views(self._a.ws.instance_index.by_project.get(project_id))

    def of_on(self, project_id: str, host: str) -> Collection[InstanceView]:
        return self._views(self._a.ws.instance_index.by_project_host.get((project_id, host)))

    def in_state(self, state: InstanceState) -> Collection[InstanceView]:
        return self._views(self._a.ws.instance_index.by_state.get(state.value))

    def changes(self) -> int:
        return self._a.ws.instance_index.changed

    def change_mark(self) -> int:
        return self._a.change_mark()

    def changed_since(self, mark: int) -> Collection[str] | None:
        return self._a.changed_since(mark)


class _Projects:
    __slots__ = ("_a", "get")

    def __init__(self, adapter: WorkingSetAdapter) -> None:
        self._a = adapter
        self.get: Callable[[str], ProjectView | None] = adapter.project_view  # as _Hosts.get

    def awaiting(self, state: str | None = None) -> Collection[ProjectView]:
        index = self._a.ws.project_index.awaiting
        names: set[str] = set()
        for key, members in index.items():
            if state is None or key == state:
                names |= members
        return [v for v in (self.get(p) for p in sorted(names)) if v is not None]

    def awaiting_count(self, state: str | None = None) -> int:
        return self._a.ws.project_index.awaiting_count(state)

    def managed(self) -> Collection[ProjectView]:
        return [v for v in (self.get(p) for p in sorted(self._a.ws.projects)) if v and v.managed]


#: What ``_Capacity.limits`` answers for an instance without rules: one
#: shared object (a drain's placement asks for each host it weighs), its
#: penalty a read-only empty mapping.
_NO_LIMITS = HostLimits(penalty=MappingProxyType({}))


class _Capacity:
    __slots__ = ("_a",)

    def __init__(self, adapter: WorkingSetAdapter) -> None:
        self._a = adapter

    def free(self, host: str) -> int:
        ws = self._a.ws
        rec = ws.hosts.get(host)
        if rec is None:
            from ..contract import ContractError

            raise ContractError(f"host {host!r}", "not a host of this session (capacity)")
        cap = ws.capacity
        return rec.vcpus - cap.used.get(host, 0) - cap.reserved.get(host, 0)

    def targets(self, instance_id: str, *, exclude: Collection[str] = ()) -> Iterator[str]:
        a = self._a
        ws = a.ws
        inst = ws.instances.get(instance_id)
        if inst is None:
            from ..contract import ContractError

            raise ContractError(
                f"instance {instance_id!r}", "not an instance of this session (capacity)"
            )
        source = ws.hosts.get(inst.host)
        if source is None:
            return iter(())
        return self._ordered(inst.instance_id, inst.host, inst.vcpus, source.type, exclude)

    def most_free(self, placement_class: str) -> Iterator[tuple[str, int]]:
        hosts = self._a.ws.hosts
        cap = self._a.ws.capacity
        loan = Loan()
        for free in sorted(cap.ordered.get(placement_class, {}), reverse=True):
            # As it is now: the caller may change the capacity.
            for name in cap.level(placement_class, free, loan):
                rec = hosts.get(name)
                if rec is not None and rec.enabled:
                    yield name, free

    def room(
        self,
        placement_class: str,
        first: int,
        states: Collection[HostState],
        *,
        exclude: Collection[str] = (),
        least: int = 1,
    ) -> int:
        return self._a.ws.capacity.room(placement_class, first, states, exclude, least)

    def changes(self) -> int:
        return self._a.ws.capacity.changed

    def change_mark(self) -> int:
        return self._a.ws.capacity.change_mark()

    def changed_since(self, mark: int) -> Collection[str] | None:
        return self._a.ws.capacity.changed_since(mark)

    def limits(self, instance_id: str) -> HostLimits:
        if instance_id not in self._a.ws.instances:
            from ..contract import ContractError

            raise ContractError(
                f"instance {instance_id!r}", "not an instance of this session (capacity)"
            )
        return self._a.limits(instance_id) or _NO_LIMITS

    def _ordered(
        self, instance_id: str, own: str, vcpus: int, placement_class: str, exclude: Collection[str]
    ) -> Iterator[str]:
        """By (soft-rule penalty, most free, name), lazily, so a caller that
        takes the first good host pays for few: the hosts a soft-affinity
        rule prefers (negative penalty; few: where the members of the
        instance's groups are), then the hosts without a penalty from the
        free-vCPU buckets, then the soft-anti-affinity ones. The buckets are
        those of the instance's placement classes: its host's type, or the
        types a ``host-types`` rule gives it."""
        ws = self._a.ws
        limits = self._a.limits(instance_id)
        penalty: Mapping[str, int] = limits.penalty if limits is not None else {}
        hosts = ws.hosts
        cap = ws.capacity
        classes = sorted(limits.types) if limits is not None and limits.types else [placement_class]
        # The usual case, one class: no list of buckets, no function per level.
        only = classes[0] if len(classes) == 1 else None
        ordered = cap.ordered
        buckets = [ordered.get(c, {}) for c in classes] if only is None else ()
        if penalty:  # soft rules: their preferred hosts first
            preferred: list[tuple[int, int, str]] = []
            for name, weight in penalty.items():
                free = cap.free(name)
                rec = hosts.get(name)
                if (
                    weight < 0
                    and free is not None
                    and free >= vcpus
                    and cap.type_of[name] in classes
                    and rec is not None
                    and rec.enabled
                    and name != own
                    and name not in exclude
                    and (limits is None or limits.allows(name))
                ):
                    preferred.append((weight, -free, name))
            for *_, name in sorted(preferred):
                yield name
        later: list[tuple[int, int, str]] = []
        allows = limits.allows if limits is not None else None
        loan = Loan()  # the levels' lists are lent for as long as this search lives
        if only is not None:
            frees = sorted(ordered.get(only, ()), reverse=True)
        else:
            frees = sorted({f for b in buckets for f in b}, reverse=True)
        for free in frees:
            if free < vcpus:
                break
            # Each level as it is now, without a copy: the caller may change
            # the capacity between two hosts.
            names = (
                cap.level(only, free, loan)
                if only is not None
                else sorted(n for b in buckets for n in b.get(free, ()))
            )
            for name in names:
                # The checks of the preferred hosts, inline: this loop may pass
                # most of the fleet.
                rec = hosts.get(name)
                if (
                    rec is None
                    or not rec.enabled
                    or name == own
                    or name in exclude
                    or (allows is not None and not allows(name))
                ):
                    continue
                weight = penalty.get(name, 0) if penalty else 0
                if weight > 0:
                    later.append((weight, -free, name))
                if weight:
                    continue
                yield name
        for *_, name in sorted(later):
            yield name


# --------------------------------------------------------------------------- the adapter


class WorkingSetAdapter:
    """Implements :class:`~fenix_core.core.context.WorkingSetPort` over a
    :class:`WorkingSet` (see the module docstring)."""

    def __init__(
        self,
        ws: WorkingSet,
        *,
        service: str = "fenix",
        admin_project_id: str | None = None,
        now: datetime | None = None,
        steering: Steering = None,
    ) -> None:
        self.ws = ws
        self.steering = steering
        self.service = service
        self.admin_project_id = admin_project_id
        self.now: datetime = now if now is not None else ws.session.updated_at
        # An attribute, not a property: read many times a step (``reschedule``
        # sets it again).
        self.request: SessionRequest = self._current_request()
        self._host_views: dict[str, HostView] = {}
        self._instance_views: dict[str, InstanceView] = {}
        self._project_views: dict[str, ProjectView] = {}
        self._order: list[str] | None = None
        self._components: dict[str, ComponentState] = {}
        # Component -> the body its last flush left in the working set (with
        # its row for _unchanged), and the components kept from an earlier
        # step, not handed out since.
        self._flushed: dict[str, tuple[dict[str, Any], _Row | None]] = {}
        self._kept: set[str] = set()
        self._rules: tuple[PlacementRule, ...] | None = None
        self._session_info: tuple[str, object, SessionInfo] | None = None
        #: The constraints set through the API (the engine's constraint
        #: service sets them; None: none), and what ``constraints`` built.
        self.api_constraints: ConstraintSet | None = None
        self._constraints: tuple[ConstraintSet | None, ConstraintSet] | None = None
        # The read views: plain attributes, not properties (a workflow reads
        # them dozens of times a step, each a call through the context too).
        self.hosts = _Hosts(self)
        self.instances = _Instances(self)
        self.projects = _Projects(self)
        self.capacity = _Capacity(self)
        # Whether a step ran the workflow on this working set since it was loaded.
        self.stepped = False
        # Operations pending when the session was loaded: a process that died
        # may have started them (looked up by key before starting again).
        self.in_doubt: set[str] = {k for k, op in ws.ops.items() if op.status == _OP_PENDING}
        # The inventory generation the session's hosts follow (-1: compare
        # them all once), and hosts that became ADDED / DECOMMISSIONED in this
        # step (the engine records them in the inventory).
        self.inventory_seen = -1
        self.host_events: list[tuple[str, HostState]] = []
        # Key -> the typed operation submitted through ``add_op`` until it
        # ends (``typed_op``): not rebuilt from its stored parameters.
        self._typed: dict[str, Operation] = {}
        # The ids of the instances changed (appended where their views are
        # dropped: every change a view shows drops it), once a mark was
        # asked for; the mark of its first entry; how many of the working
        # set's instances it has seen added (added ones drop no view).
        self._log: list[str] | None = None
        self._log_start = 0
        self._log_known = 0

    def close(self) -> None:
        """The runner let the session go: drop everything, the working set
        first. The read views refer back to the adapter, and so may a step's
        garbage (a workflow's objects in a cycle with the step's context,
        which holds the adapter): left to those cycles, a finished session's
        records (20,000 instances at 1,000 hosts) stay in memory until the
        next full cyclic collection, alongside whatever the engine loads
        next. The adapter is not used after this."""
        vars(self).clear()

    def begin(self, now: datetime) -> None:
        """A new step starts at ``now``."""
        self.now = now
        log = self._log
        if log is not None and len(log) > 2 * _LOG_KEEP:
            drop = len(log) - _LOG_KEEP
            del log[:drop]
            self._log_start += drop

    def change_mark(self) -> int:
        """See :meth:`InstancesView.change_mark`."""
        log = self._caught_up()
        return self._log_start + len(log)

    def changed_since(self, mark: int) -> Collection[str] | None:
        """See :meth:`InstancesView.changed_since`."""
        log = self._caught_up()
        start = self._log_start
        if not start <= mark <= start + len(log):
            return None  # older than the log keeps, or another adapter's
        return set(log[mark - start :])

    def _caught_up(self) -> list[str]:
        """The change log, started at the first call, with the instances
        added since the last call appended (the working set never drops
        one, and its dict keeps the order they were added in)."""
        log = self._log
        instances = self.ws.instances
        if log is None:
            log = self._log = []
            self._log_start = next(_LOG_EPOCHS) * _LOG_SPAN
            self._log_known = len(instances)
        elif len(instances) != self._log_known:
            log.extend(islice(instances, self._log_known, None))
            self._log_known = len(instances)
        return log

    def _current_request(self) -> SessionRequest:
        """The stored request with the session's ``maintenance_at``, which an
        admin may have moved since (:meth:`reschedule`)."""
        s = self.ws.session
        request = SessionRequest.from_dict(s.request)
        if request.maintenance_at != s.maintenance_at:
            request = attrs.evolve(request, maintenance_at=s.maintenance_at)
        return request

    def reschedule(self, maintenance_at: datetime | None) -> None:
        """The admin moved the start: the session row keeps it (the stored
        request JSON is written once), and ``request`` shows it from now on."""
        self.ws.update_session(maintenance_at=maintenance_at, updated_at=self.now)
        self.request = self._current_request()

    # ------------------------------------------------------------------ reads

    @property
    def session(self) -> SessionInfo:
        """The session's facts; the same (frozen) object while none of them
        changed (workflows read it many times a step)."""
        s = self.ws.session
        rec = self.ws.components.get(SESSION_COMPONENT)
        body = rec.body if rec is not None else None
        info = self._session_info
        # The fields compared one by one, the cheapest first: most calls find
        # the view they made (a body is replaced, never changed in place).
        if (
            info is None
            or info[1] is not body
            or info[0] != s.state
            or (view := info[2]).percent_done != s.percent_done
            or view.reason != s.reason
        ):
            view = SessionInfo(
                s.id, s.workflow, SessionState(s.state), s.reason, s.percent_done,
                self.allowed_actions(),
            )  # fmt: skip
            # The body is kept alive with the view, so ``is`` cannot match a new one.
            self._session_info = (s.state, body, view)
        return view

    @property
    def constraints(self) -> ConstraintSet:
        """The API's constraints over the cloud's (stored at creation), the
        request's default group rules for implicit groups; built again only
        when the API's change."""
        api = self.api_constraints
        cached = self._constraints
        if cached is None or cached[0] is not api:
            cloud = CloudConstraints.from_dict(self.session_data().get("cloud_constraints"))
            built = ConstraintSet(
                groups=api.groups if api is not None else {},
                instances=api.instances if api is not None else {},
                cloud=cloud,
                default_group=self.request.default_group_constraints
                or (api.default_group if api is not None else DEFAULT_GROUP),
            )
            cached = self._constraints = (api, built)
        return cached[1]

    def host_view(self, name: str) -> HostView | None:
        view = self._host_views.get(name)
        if view is None:
            rec = self.ws.hosts.get(name)
            if rec is None:
                return None
            view = self._host_views[name] = HostView(
                rec.name, rec.type, _HOST_STATES.get(rec.state) or HostState(rec.state),
                rec.vcpus, rec.enabled, rec.position, rec.started_at, rec.finished_at,
                rec.reason, rec.stage,
            )  # fmt: skip
        return view

    def instance_view(self, instance_id: str) -> InstanceView | None:
        view = self._instance_views.get(instance_id)
        if view is None:
            rec = self.ws.instances.get(instance_id)
            if rec is None:
                return None
            view = self._instance_views[instance_id] = InstanceView(
                rec.instance_id, rec.project_id, rec.host, rec.vcpus,
                _INSTANCE_STATES.get(rec.state) or InstanceState(rec.state),
                rec.live_migratable, rec.action, rec.moves, rec.target, rec.wave,
                rec.not_before, rec.impacted_until,
            )  # fmt: skip
        return view

    def project_view(self, project_id: str) -> ProjectView | None:
        view = self._project_views.get(project_id)
        if view is None:
            rec = self.ws.projects.get(project_id)
            if rec is None:
                return None
            view = self._project_views[project_id] = ProjectView(
                rec.project_id, rec.managed, rec.state, rec.state if rec.awaiting else None
            )
        return view

    def host_order(self) -> list[str]:
        if self._order is None or len(self._order) != len(self.ws.hosts):
            hosts = self.ws.hosts
            self._order = sorted(hosts, key=lambda n: hosts[n].position)
        return self._order

    def session_data(self) -> dict[str, Any]:
        rec = self.ws.components.get(SESSION_COMPONENT)
        return dict(rec.body) if rec is not None else {}

    def allowed_actions(self) -> list[str]:
        return [str(a) for a in self.session_data().get("allowed_actions", ())]

    def rules(self) -> tuple[PlacementRule, ...]:
        """The cloud's placement rules (server groups) the session was created with."""
        if self._rules is None:
            found = (self.session_data().get("cloud_constraints") or {}).get("placement") or ()
            self._rules = tuple(PlacementRule.from_dict(r) for r in found)
        return self._rules

    def merge_cloud_constraints(self, found: Mapping[str, Any]) -> None:
        """A listing found the cloud's own constraints (groups, placement rules
        of new instances): fold them into the session's."""
        data = self.session_data()
        known = data.get("cloud_constraints")
        merged = merge_cloud_dicts(known, found)
        if merged != known:
            rec = self.ws.components.get(SESSION_COMPONENT)
            version = rec.schema_version if rec is not None else 1
            self.ws.set_component(SESSION_COMPONENT, version, {**data, "cloud_constraints": merged})
            self._rules = None

    def limits(self, instance_id: str) -> HostLimits | None:
        """``placement_rules.host_limits`` of the instance, or None without rules;
        ``where`` holds only the members of the instance's own groups."""
        rules = self._rules if self._rules is not None else self.rules()
        if not rules:  # most clouds: no placement rules at all
            return None
        mine = [r for r in rules if instance_id in r.members]
        if not mine:
            return None
        where: dict[str, set[str]] = {}
        instances = self.ws.instances
        for rule in mine:
            for member in rule.members:
                rec = instances.get(member)
                if rec is None or member in where:
                    continue
                hosts = set() if rec.state in ABSENT_STATES else {rec.host}
                if rec.state == MOVING_STATE and rec.target and rec.target != rec.host:
                    hosts.add(rec.target)
                where[member] = hosts
        return host_limits(instance_id, mine, where)

    # ------------------------------------------------------------------ session

    def set_session_state(self, state: SessionState, reason: str | None) -> None:
        """Today's ``LoadedSession.fire``: the state, its reason and finish
        time, the percentage, and the admin's ``maintenance_session`` notice."""
        s = self.ws.session
        before = s.state
        changes: dict[str, Any] = {"state": state.value, "phase": "", "updated_at": self.now}
        if state is SessionState.MAINTENANCE_FAILED:
            changes.update(reason=reason, failed_state=before, finished_at=self.now)
        elif state is SessionState.MAINTENANCE_CANCELLED:
            changes.update(reason=reason, finished_at=self.now)
        elif state is SessionState.MAINTENANCE_DONE:
            changes.update(reason=None, finished_at=self.now)
        else:
            changes.update(reason=None)
        self.ws.update_session(**changes)
        self._update_percent()
        self.announce()
        if state in FINAL_SESSION_STATES and before not in _FINAL_VALUES:
            self._steer({"hosts": []})  # nothing is queued any more

    def announce(self) -> None:
        """Send the admin's ``maintenance_session`` with the current state."""
        s = self.ws.session
        self.emit(
            "maintenance_session",
            {
                "session_id": s.id,
                "state": s.state,
                "percent_done": s.percent_done,
                "reason": s.reason,
            },
        )

    def _update_percent(self) -> None:
        s = self.ws.session
        if s.state == SessionState.MAINTENANCE_DONE.value:
            percent = 100
        else:
            index = self.ws.host_index
            in_scope = index.count(*_WORK)
            done = index.count(*_DONE)
            percent = int(100 * done / in_scope) if in_scope else 0
        if percent != s.percent_done:
            self.ws.update_session(percent_done=percent)

    @property
    def final(self) -> bool:
        return self.ws.session.state in _FINAL_VALUES

    # ------------------------------------------------------------------ hosts, instances

    def set_host_state(self, host: str, state: HostState, reason: str | None) -> None:
        before = self.ws.hosts[host].state
        if state in (HostState.ADDED, HostState.DECOMMISSIONED) and (
            self.ws.hosts[host].state != state.value
        ):
            self.host_events.append((host, state))
        self.ws.set_host_state(host, state.value)
        if (before == _QUEUED) != (state is HostState.PENDING) and not self.final:
            self._steer({"host": host, "queued": state is HostState.PENDING})
        self.ws.update_host(host, reason=reason)
        self._host_views.pop(host, None)
        self._update_percent()

    def set_host_times(
        self, host: str, *, started_at: datetime | None, finished_at: datetime | None
    ) -> None:
        marks = int(self.ws.hosts[host].marks)  # plain bits (an enum's | is a Python call)
        if started_at is not None:
            marks |= _STARTED
        if finished_at is not None:
            marks |= _FINISHED
        self.ws.update_host(host, started_at=started_at, finished_at=finished_at, marks=marks)
        self._host_views.pop(host, None)

    def set_host_stage(self, host: str, stage: int) -> None:
        self.ws.update_host(host, stage=stage)
        self._host_views.pop(host, None)

    def set_instance_plan(
        self,
        instance_id: str,
        wave: int | None,
        not_before: datetime | None,
        impacted_until: datetime | None,
    ) -> None:
        self.ws.update_instance(
            instance_id, wave=wave, not_before=not_before, impacted_until=impacted_until
        )
        self.forget_view(instance_id)

    def set_host_facts(self, host: str, vcpus: int, enabled: bool) -> None:
        """The cloud listed ``host`` with these facts (a host being added)."""
        self.ws.set_host_vcpus(host, vcpus)
        self.ws.update_host(host, enabled=enabled)
        self._host_views.pop(host, None)

    def follow_enabled(self, host: str, enabled: bool) -> None:
        """Another session disabled or enabled a target host (not stored:
        :meth:`WorkingSet.follow_enabled`)."""
        self.ws.follow_enabled(host, enabled)
        self._host_views.pop(host, None)

    def forget_host_view(self, host: str) -> None:
        self._host_views.pop(host, None)

    def forget_view(self, instance_id: str) -> None:
        """Drop the instance's cached view after a change it shows, and log
        the change (``changed_since``): every such change comes here."""
        self._instance_views.pop(instance_id, None)
        if self._log is not None:
            self._log.append(instance_id)

    def set_host_enabled(self, host: str, enabled: bool, *, by_session: bool) -> None:
        """A DisableHost / EnableHost ended (the engine's part, before the hook)."""
        self.ws.update_host(host, enabled=enabled, disabled_by_session=by_session)
        self._host_views.pop(host, None)

    def set_instance_state(
        self, instance_id: str, state: InstanceState, action: str | None
    ) -> None:
        # ``_value_``: the member's value without the ``value`` descriptor call.
        self.ws.set_instance_state(instance_id, state._value_, action)
        self.forget_view(instance_id)

    def place(self, instance_id: str, host: str) -> None:
        """A move ended with the instance on ``host`` (the engine's part)."""
        rec = self.ws.instances[instance_id]
        source = rec.host
        if host == source:
            self.ws.set_target(instance_id, None)
        else:
            self.ws.land(instance_id, host)
            if source in self.ws.hosts:
                self.ws.mark_host(source, HostMark.MOVED_OFF)
        self.forget_view(instance_id)

    def vanish(self, instance_id: str) -> None:
        """The cloud no longer lists the instance (the engine's part)."""
        self.ws.set_target(instance_id, None)
        self.ws.set_instance_state(instance_id, InstanceState.GONE.value)
        self.forget_view(instance_id)

    def end_move(self, instance_id: str) -> None:
        """A move that did not move the instance: no room is held for it any more."""
        self.ws.set_target(instance_id, None)
        self.forget_view(instance_id)

    def moved_off(self, host: str) -> Sequence[str]:
        return sorted(i.instance_id for i in self.ws.instances.values() if i.moved_from == host)

    def budget_hosts(self) -> int:
        # The index's count(), written out: every step's context asks.
        by_state = self.ws.host_index.by_state
        found = len(self.ws.hosts)
        for state in _UNBUDGETED:
            names = by_state.get(state)
            if names:
                found -= len(names)
        return found

    @property
    def host_guard(self) -> bool:
        rec = self.ws.components.get(SESSION_COMPONENT)
        return bool(rec.body.get("host_guard")) if rec is not None else False

    def host_labels(self, host: str) -> Labels:
        rec = self.ws.components.get(SESSION_COMPONENT)
        found = (rec.body.get("host_labels") or {}).get(host) if rec is not None else None
        return found or {}

    # ------------------------------------------------------------------ projects, notices

    def ask_project(
        self,
        project_id: str,
        state: str,
        instance_ids: Sequence[str],
        allowed_actions: Sequence[str],
        metadata: Mapping[str, Any] | None,
        actions_at: datetime | None = None,
    ) -> None:
        # The same deadline as the workflow's timer (``WorkflowBase.ask_projects``):
        # the reply intake refuses a reply after it, the notice carries it.
        reply_at = self.now + timedelta(seconds=self.request.reply_window(state))
        self.ws.update_project(project_id, state=state, awaiting=True, reply_at=reply_at)
        self._project_views.pop(project_id, None)
        if not allowed_actions and state in _INSTANCE_CHOICE:
            allowed_actions = self.allowed_actions()  # the cloud driver's, as today
        if metadata is None:
            metadata = self.request.metadata
        self._planned(
            project_id, state, instance_ids, allowed_actions, metadata, reply_at, actions_at
        )

    def stop_awaiting(self, project_id: str, state: str | None) -> None:
        """The project awaits nothing any more (its reply deadline passed, the
        session ends); ``state``, unless None, becomes its state."""
        changes: dict[str, Any] = {"awaiting": False}
        if state is not None:
            changes["state"] = state
        self.ws.update_project(project_id, **changes)
        self._project_views.pop(project_id, None)

    def answered(self, project_id: str, state: str, at: datetime) -> None:
        """The engine took ``project_id``'s reply ``state`` (before the hook)."""
        self.ws.update_project(project_id, state=state, awaiting=False, replied_at=at)
        self._project_views.pop(project_id, None)

    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None:
        self._planned(project_id, state, instance_ids, (), None, None)

    def _planned(
        self,
        project_id: str,
        state: str,
        instance_ids: Sequence[str],
        allowed_actions: Sequence[str],
        metadata: Mapping[str, Any] | None,
        reply_at: datetime | None,
        actions_at: datetime | None = None,
    ) -> None:
        # The ``service`` field first, as ``emit`` puts it (one dict, not two: a
        # move step sends a notice).
        self.ws.emit(
            "maintenance_planned",
            {
                "service": self.service,
                "session_id": self.ws.session.id,
                "project_id": project_id,
                "state": state,
                "instance_ids": list(instance_ids),
                "allowed_actions": list(allowed_actions),
                # (No call for a notice: neither time is set.)
                "reply_at": None if reply_at is None else _iso(reply_at),
                "actions_at": None
                if reply_at is None
                else _iso(max(reply_at, actions_at) if actions_at else reply_at),
                "metadata": dict(metadata or {}),
            },
        )

    def notify_host(self, host: str, state: str) -> None:
        self.emit(
            "maintenance_host",
            {
                "session_id": self.ws.session.id,
                "host": host,
                "state": state,
                "project_id": self.admin_project_id,
            },
        )

    def emit(self, signal: str, payload: dict[str, Any]) -> None:
        self.ws.emit(signal, {"service": self.service, **payload})

    # ------------------------------------------------------------------ steering

    def steer_all(self) -> None:
        """The session starts: the driver learns every host still queued."""
        if self.steering is not None:
            self._steer({"hosts": self.ws.host_index.in_order(_QUEUED)})

    def _steer(self, params: dict[str, Any]) -> None:
        """A steering operation (``OpKind.QUEUE_HOSTS``): one host's change for
        a driver that takes them, else the whole set still queued."""
        if self.steering is None:
            return
        if "host" in params and self.steering != "each":
            params = {"hosts": self.ws.host_index.in_order(_QUEUED)}
        key = f"{self.ws.session.id}:{self.next_op_number()}"
        self.ws.add_op(
            op_record(key, OpKind.QUEUE_HOSTS, None, params, now=self.now, deadline=None)
        )

    # ------------------------------------------------------------------ operations, timers

    def next_op_number(self) -> int:
        number = started_ops(self.ws) + 1
        self.ws.last_op = number
        return number

    def add_op(
        self,
        key: str,
        kind: OpKind,
        op: Operation | None,
        params: Mapping[str, Any],
        timeout: float | None = None,
    ) -> None:
        host_type: str | None = None
        source: str | None = None
        if isinstance(op, RunAction) and op.host is not None:
            host_type = self.ws.hosts[op.host].type
        if isinstance(op, Move | Watch):
            source = self.ws.instances[op.instance_id].host
        if timeout is None and op is not None and (which := _timeout_kind(op)):
            timeout = self.request.timeout(which)
        deadline = self.now + timedelta(seconds=timeout) if timeout else None
        rec = op_record(
            key, kind, op, params, now=self.now, deadline=deadline, host_type=host_type,
            source=source,
        )  # fmt: skip
        self.ws.add_op(rec)
        if op is not None:
            self._typed[key] = op
        if isinstance(op, Move):
            self.ws.aim(op.instance_id, op.action._value_, op.target)
            self.forget_view(op.instance_id)

    def typed_op(self, rec: OpRec) -> Operation | None:
        """The typed operation ``rec`` stands for, once it ended: the one
        submitted, if it was through this adapter, else :func:`op_of` (a
        session loaded again, an operation the engine recorded itself)."""
        op = self._typed.pop(rec.key, None)
        return op if op is not None else op_of(rec)

    def set_timer(self, name: str, due: datetime, data: Mapping[str, str]) -> None:
        self.ws.set_timer(name, due, data)

    def cancel_timer(self, name: str) -> None:
        self.ws.cancel_timer(name)

    # ------------------------------------------------------------------ components

    def component(self, kind: type[S]) -> S:
        name = kind.component
        found = self._components.get(name)
        if found is not None and name in self._kept:
            # Kept from an earlier step: good only while the record still
            # holds the body flushed then (anything else that wrote it, or
            # a reload, makes it stale).
            self._kept.discard(name)
            rec = self.ws.components.get(name)
            flushed = self._flushed.get(name)
            if rec is None or flushed is None or rec.body is not flushed[0]:
                found = None
        if found is None:
            rec = self.ws.components.get(name)
            found = kind() if rec is None else kind.from_json(rec.body, rec.schema_version)
            self._components[name] = found
            self._flushed.pop(name, None)
        assert isinstance(found, kind)
        return found

    def flush(self) -> None:
        """Write the components handed out in this step back into the
        working set (a body equal to the stored one dirties nothing)."""
        components = self.ws.components
        for name, state in self._components.items():
            if name in self._kept:
                continue  # not handed out since the last flush: nothing changed it
            flushed = self._flushed.get(name)
            rec = components.get(name)
            if (
                flushed is not None
                and rec is not None
                and rec.body is flushed[0]
                and _unchanged(state, flushed[1])
            ):
                continue
            self.ws.set_state(state)
            body = components[name].body
            self._flushed[name] = (body, _flushed_row(state, body))

    def forget_components(self) -> None:
        """End of a step: the objects handed out are kept for the next one
        (reading every component from its JSON body each step was a
        visible cost), checked when it first asks for them: a record
        written by anything else since is read afresh. An object not
        flushed (a step that broke off) is dropped."""
        components, flushed_of = self.ws.components, self._flushed
        for name in list(self._components):
            rec = components.get(name)
            flushed = flushed_of.get(name)
            if rec is not None and flushed is not None and rec.body is flushed[0]:
                self._kept.add(name)
            else:
                del self._components[name]
                self._flushed.pop(name, None)
                self._kept.discard(name)
