"""The constrained workflow on the contract: ETSI constraints, several hosts
at once (today's :mod:`fenix_core.workflows.constrained` is the spec).

::

    MAINTENANCE ──► (all answered, maintenance_at, ``pre`` actions, hosts listed) ──► check
    check: a group whose per-host limit cannot hold with one host out, or no
           host that can be emptied ──► SCALE_IN (its project has a manager)
                                        or MAINTENANCE_FAILED naming the group
    controllers first, one at a time (the rolling workflow's drain and loop)
    PLANNED_MAINTENANCE: waves, overlapping:
        open hosts ── disabled first, then PLANNED_MAINTENANCE to each affected
                      project (per wave; one instance per question where
                      instance constraints exist; a lead_time holds its move)
        move members as their groups allow (max_impacted_members at once,
                      recovery_time after each move, anti-affinity and
                      max_instances_per_host on targets, capacity counting
                      arrivals in flight), INSTANCE_ACTION_DONE per instance,
                      ADMIN_ACTION_DONE per project and wave
        each emptied host runs its own stages while others drain
    MAINTENANCE_COMPLETE: ``post`` actions, MAINTENANCE_COMPLETE to every
           project ──► MAINTENANCE_DONE

Which hosts to open and where members go are the pure planner's
(:func:`fenix_core.planner.hosts_to_open`, and when it opens none
:func:`~fenix_core.planner.host_to_open_ahead`;
:func:`~fenix_core.planner.assign_moves`,
:func:`~fenix_core.planner.drain_sequence`) and the second-moves rule's
(:func:`fenix_core.second_moves.may_move_twice`).

Work per step follows what changed (issue 18 item 6): the open hosts and
their instances come from the context's indexes; the targets offered to the
planner are a window of the best hosts from ``ctx.capacity.targets`` (all of
them when the window is larger than the fleet, the sampled instance's own
host included), the walk of an instance without placement rules kept per
placement class (``_Walk``) and patched for the hosts whose capacity
changed (``ctx.capacity.changed_since``), walked anew when it cannot say
(what the draining hosts take, less the moves from them and towards them,
is kept from the same log and the instances': ``_DrainingTaken``; so are
the fleet's targets of the dry run of a host opened ahead: ``_FleetTargets``);
the drain dry run runs only
when at most :data:`DRY_RUN_HOSTS` hosts are left, and counts instead of
placing where counting gives its verdict (``planner.drains_by_count``); per-group counts (work
left, pending hosts holding members) are a cache of this process, rebuilt
from the views when the session was stepped elsewhere (``stamp``) or the
constraints or the inventory changed, and they only rank choices: every
limit is checked against the views. A step builds an opening decision only
when the room the planner's targets can have (``ctx.capacity.room``: the
hosts where instances stay among the most free, counted from the index)
covers the draining hosts' members and
the lightest pending host's, and hands it to the planner only when its own
window's room covers them and its lightest candidate's
(:meth:`ConstrainedWorkflow._may_open`, ``_short_of_room``: the planner's
own totals check, which turned down nine decisions in ten); the instances
in recovery_time are kept per group with a heap of when each recovery ends
(``_Recovery``, read from the instances' ``impacted_until``: not stored in
the waves' state); it asks about, disables and moves
from the draining hosts that changed since (``unasked``, ``undisabled``,
the instances whose action is chosen), advances only the open hosts whose
stage's operation is not running, and works the groups' budgets out once
per pass, per group when asked. A move's end reads the instances of its
own wave (kept per project with the counts), an answer the project's
instances on the draining hosts; a placement hands the planner its members
up to the last one that may start, and reuses the targets whose room did
not change; ``planner.hosts_to_open`` stops once no candidate left fits.
Without a per-host limit, a placement (and the planner's ``fits_all``)
finds each member's target by bisection over the targets sorted by room
(``planner.assign_moves_unlimited``: the same moves); each instance's
``planner.Member`` is kept with the counts, and a decision reads the moves
in flight once. A placement reads the room where instances stay from the
capacity index (``ctx.capacity.room`` with ``least``: the walk
``ctx.capacity.targets`` makes for the one instance standing for the
window) and builds its window only when a member may start; the budgets
read the recoveries' counts as kept, not copied; the questions do not read
again a host whose instances not asked about all wait for their projects'
answers. A placement whose inputs (the views' change numbers, the budgets
of the groups that may start, the instances that may) are those of the
last one worked out, which found no member to start, is not worked out
again; nor is an opening decision whose inputs are those of the last one,
which opened nothing and changed nothing. The idle groups and the weight
each pending host feeds (``_Fed``) are kept with the counts between
opening decisions and worked out again only for the groups whose work left,
pending hosts or members waiting on the open hosts changed, with each fed
host's most weight: the scores the hosts opened ahead are ranked by. The draining
hosts' instances still to leave (``_Draining``: those a placement holds
back, the draining loads of an opening decision) are kept with the counts
and brought up to date from the instances the context's change log names
(``ctx.instances.changed_since``), built anew when it cannot say.

What it keeps: :class:`ConstrainedState` (constant size: the wave counter,
the cache stamp, how many recoveries started, the first wave's partial
host and the second moves it has left, and the moves being retried,
bounded by the groups' impact limits, not by the fleet), the
:class:`~fenix_core.workflows.rolling.RollingState` of the parts it
shares with the rolling workflow, and per host its stage
(``HostView.stage``), per instance its wave, lead time and recovery
(``InstanceView.wave`` / ``not_before`` / ``impacted_until``).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import (
    Callable,
    Collection,
    Container,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from itertools import chain, islice
from operator import attrgetter
from types import MappingProxyType
from typing import Any, ClassVar, Self, TypeGuard

import attrs

from .. import planner, second_moves
from ..constraints import COLD_MIGRATION_INTERRUPTION, ConstraintSet, move_action
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
    OpResult,
    OpStatus,
    RunAction,
    SessionContext,
    TimerFired,
    Watch,
)
from ..controls import expected_host_seconds
from ..model import host_action_types
from ..states import (
    FINAL_SESSION_STATES,
    HostState,
    InstanceAction,
    InstanceState,
    SessionState,
    instance_action,
)
from .base import IN_SCOPE, actions_of, allowed_actions, default_action, retry_delay
from .components.ending import NOT_ENABLED_AGAIN
from .rolling import (
    MAX_SCALE_IN_ROUNDS,
    MAX_WAIT_ROUNDS,
    STAYS,
    RollingState,
    RollingWorkflow,
)

__all__ = [
    "CANDIDATE_WINDOW",
    "COLD_MIGRATION_INTERRUPTION",
    "DRY_RUN_HOSTS",
    "TARGET_WINDOW",
    "ConstrainedState",
    "ConstrainedWorkflow",
]

#: Seconds one move is expected to take (used to rank groups by work left).
_MOVE_ESTIMATE = 30.0
#: Up to this many hosts left, each host opened is checked by a dry run to
#: leave an order in which the rest can still be emptied (it costs hosts x
#: instances per decision; larger sessions rely on the capacity check), and
#: so is each move that could cost a member of a per-host-limited (or
#: anti-affine) group its host (:meth:`ConstrainedWorkflow._keeps_draining`).
DRY_RUN_HOSTS = 200
#: Targets offered to the planner per kind of instance: the best this many
#: from ``ctx.capacity.targets`` (room, rules, most free first).
TARGET_WINDOW = 128
#: Pending hosts offered to the planner as hosts to open in one decision:
#: the best this many by the idle groups' work they hold.
CANDIDATE_WINDOW = 128
#: ``HostView.stage`` of a host in the waves: the index of its next stage in
#: the low bits, and flags.
_STAGE = 0xFFFF
WE_DISABLED = 1 << 16  # this session disabled it: enabled again at the end
BUSY = 1 << 17  # an operation of its current stage runs
DISABLING = 1 << 18  # its DisableHost (before the drain) runs
#: Opened in a first wave (second_moves.first_wave): its instances may land
#: on hosts still queued, and move twice.
FIRST_DRAINED = 1 << 19
_OPEN = (HostState.DRAINING, HostState.DRAINED, HostState.IN_MAINTENANCE)
#: The open hosts that run their stages.
_STAGED = (HostState.DRAINED, HostState.IN_MAINTENANCE)
_WAITING = (InstanceState.ACTION_REQUESTED, InstanceState.ACTION_CHOSEN)
_STILL_TO_MOVE = frozenset({InstanceState.PENDING, *_WAITING})
#: The states of an instance that its (pending or draining) host holds as a
#: member, one the host still has to see leave: not moving (IN_ACTION: it
#: counts where its move ends), not gone, and not out of the session's scope
#: (never moved: a host holding only those is empty, as for ``IN_SCOPE``).
#: The one rule for a host's load (``_Step.members_on``, ``_Draining``) and
#: for the pending hosts named per group (``_Counts.pending_hosts_of``): the
#: groups the kept weights put on a host are those of its load.
_MEMBER_STATES = frozenset(InstanceState) - {
    InstanceState.IN_ACTION,
    InstanceState.GONE,
    InstanceState.OUT_OF_SCOPE,
}
_FINAL = FINAL_SESSION_STATES
_ASKED = SessionState.PLANNED_MAINTENANCE.value
_VCPUS = attrgetter("vcpus")  # a member's vcpus (summed per draining host by a placement)


def _pairs(value: object) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    out = []
    for item in value if isinstance(value, list | tuple) else ():
        iid, attempts, refused = item
        out.append((str(iid), int(attempts), tuple(str(r) for r in refused)))
    return tuple(out)


@attrs.define(slots=True)
class ConstrainedState(ComponentState):
    """What the waves remember between steps (constant size)."""

    component: ClassVar[str] = "constrained"
    #: 2: ``recovering`` (the instances in recovery_time, a list growing
    #: with the fleet rewritten at each move's end) gave way to
    #: ``recoveries``; the instances' ``impacted_until`` say which they are.
    #: 3: ``partial`` and ``partial_twice`` (a first wave's partial last host).
    schema_version: ClassVar[int] = 3

    wave: int = 0  # the last question round
    #: Changes whenever the per-group counts change: a process whose cache
    #: has another stamp rebuilds it.
    stamp: int = 0
    #: Recoveries started (a move's end with a recovery_time): a process
    #: whose mirror of the instances in recovery (:class:`_Recovery`) was
    #: built at another count reads them again from the instances.
    recoveries: int = 0
    #: Moves that failed and wait for their retry: (instance, attempts, refused targets).
    retrying: tuple[tuple[str, int, tuple[str, ...]], ...] = attrs.field(
        default=(), converter=_pairs
    )
    wake: str | None = None  # when the waves wake up by themselves (ISO)
    #: Times the waves, stuck for room, waited for a host outside the session
    #: to come back into service (at most MAX_WAIT_ROUNDS).
    waited: int = 0
    #: Why the first wave has its size (second_moves.FirstWaveSize.why): said
    #: in the plan with each move of its instances onto a queued host.
    first_wave: str | None = None
    #: The first wave's partial last host (second_moves.FirstWave.partial),
    #: while some of its instances may still move twice: ``partial_twice``
    #: of them (a move of one onto a host still queued takes one).
    partial: str | None = None
    partial_twice: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any], version: int) -> Self:
        if version == 1:
            # A session saved by the release before: its instances'
            # ``impacted_until`` say which are in recovery.
            data = {k: v for k, v in data.items() if k != "recovering"}
            version = 2
        if version == 2:
            # Before partial first-wave hosts: none (every first drained
            # host's instances may move twice, as they were opened for).
            data = {**data, "partial": None, "partial_twice": 0}
            version = 3
        return super().from_json(data, version)


class _Recovery:
    """The instances in their group's recovery_time as the budgets read them
    (a cache of this process, kept with the counts): the group of each, how
    many per group, and a heap of when each one's recovery_time ends, so that
    a pass reads only the instances whose recovery ended instead of every one
    in recovery. Built from the instances' ``impacted_until``, then kept by
    each move's end. An instance's ``impacted_until`` only moves later (a new
    move's end), so a heap entry is at most its current end: looked at again
    when it comes up."""

    __slots__ = ("by_group", "group_of", "heap", "source")

    def __init__(self, source: int) -> None:
        self.source = source  # ConstrainedState.recoveries mirrored (another: rebuilt)
        self.group_of: dict[str, str] = {}
        self.by_group: Counter[str] = Counter()
        self.heap: list[tuple[datetime, str]] = []

    def add(self, instance_id: str, group_id: str, until: datetime) -> None:
        """The instance's recovery_time runs until ``until`` (counted once:
        moved again within it, its entry is moved on when it comes up)."""
        if instance_id in self.group_of:
            return
        heapq.heappush(self.heap, (until, instance_id))
        self.group_of[instance_id] = group_id
        self.by_group[group_id] += 1

    def drop(self, instance_id: str) -> None:
        group_id = self.group_of.pop(instance_id)
        left = self.by_group[group_id] - 1
        if left > 0:
            self.by_group[group_id] = left
        else:
            del self.by_group[group_id]

    def ended(self, ctx: SessionContext, now: datetime) -> set[str]:
        """Take out the instances whose recovery_time is over at ``now`` (or
        that left the session): their ids."""
        gone: set[str] = set()
        heap = self.heap
        while heap and heap[0][0] <= now:
            _until, iid = heap[0]
            view = ctx.instances.get(iid)
            if view is not None and view.impacted_until is not None and view.impacted_until > now:
                heapq.heapreplace(heap, (view.impacted_until, iid))  # moved again since
                continue
            heapq.heappop(heap)
            gone.add(iid)
        return gone

    def next_end(self, ctx: SessionContext) -> datetime | None:
        """When the next recovery_time ends (after :meth:`ended`)."""
        heap = self.heap
        while heap:
            until, iid = heap[0]
            view = ctx.instances.get(iid)
            current = view.impacted_until if view is not None else None
            if current is None or current == until:
                return until
            heapq.heapreplace(heap, (current, iid))
        return None


@attrs.frozen
class _PendingLoad:
    """A pending host's members as the planner takes them, with their vCPUs
    and the smallest of them (worked out once: nothing leaves a pending
    host, an arrival drops the entry)."""

    load: planner.HostLoad
    vcpus: int
    least: planner.Member | None

    @classmethod
    def of(cls, name: str, position: int, members: Sequence[planner.Member]) -> _PendingLoad:
        least = min(members, key=lambda m: (m.vcpus, m.instance_id)) if members else None
        load = planner.HostLoad(name, tuple(members), position)
        return cls(load, load.vcpus, least)


@attrs.define(slots=True)
class _Fed:
    """:meth:`ConstrainedWorkflow._idle_and_fed`'s answer, kept between
    opening decisions (a cache of this process, kept with the counts) and
    brought up to date group by group: a decision at 1,000 hosts read every
    group with work left (most of the fleet's) and every pending host of
    each idle one, while between two decisions a few groups' work, pending
    hosts or members waiting on the open hosts change. Each idle group's
    weight is a whole number of seconds (whole recovery times, a whole move
    estimate), so a host's sum is the same whatever the order its groups
    were added and taken out in."""

    #: The members waiting on the open hosts per group it was worked out for.
    waiting: dict[str, int]
    idle: dict[str, float]
    fed: dict[str, float]
    #: Per host of ``fed``, how many idle groups feed it (none left: it is
    #: taken out, as a fresh answer would not name it).
    feeders: Counter[str]
    #: Per idle group, the pending hosts its weight was added to.
    on: dict[str, tuple[str, ...]]
    #: Per host of ``fed``, the most weight of an idle group feeding it, when
    #: known: a host whose most was taken out is left out until worked out
    #: again from its load (:meth:`ConstrainedWorkflow._open_ahead`). Its
    #: summed idle weight needs nothing kept: ``fed`` less ``feeders``.
    top: dict[str, float] = attrs.field(factory=dict)


@attrs.frozen(eq=False)
class _HeldOn:
    """A draining host's instances the engine still has to move
    (:attr:`_Draining.held`) as a placement reads them: their views and
    members in id order, their ids, those of them that moved before, their
    vcpus, their groups (in the order they first come) and the one of least
    (vCPUs, id), the only one of the host :meth:`ConstrainedWorkflow._window_sample`
    can take."""

    views: tuple[InstanceView, ...]
    members: tuple[planner.Member, ...]
    ids: frozenset[str]
    moved: frozenset[str]
    vcpus: int
    groups: dict[str, None]
    least: InstanceView

    @classmethod
    def of(
        cls,
        on: Mapping[str, InstanceView],
        held: Container[str],
        members: Callable[[Iterable[InstanceView]], list[planner.Member]],
    ) -> _HeldOn | None:
        """The instances ``on`` a host that are ``held``; None if none is."""
        views = tuple(on[i] for i in sorted(on) if i in held)
        if not views:
            return None
        made = tuple(members(views))
        fewest = min(v.vcpus for v in views)
        return cls(
            views,
            made,
            frozenset(v.instance_id for v in views),
            frozenset(v.instance_id for v in views if v.moves),
            sum(map(_VCPUS, made)),
            dict.fromkeys(map(_GROUP_OF, made)),
            # (The views are in id order: the first with the fewest vCPUs.)
            next(v for v in views if v.vcpus == fewest),
        )


@attrs.define(slots=True)
class _Draining:
    """The draining hosts' instances still to leave them (their members:
    :data:`_MEMBER_STATES`), and the instances moving now (on any host), kept with the counts
    between decisions and brought up to date
    from the instances changed since ``mark``
    (``ctx.instances.changed_since``) and the hosts that started or stopped
    draining since ``hosts_changes`` (``ctx.hosts.changes()``): each changed
    instance is taken from where it was kept and put where it is now (a
    host that started draining is read whole). Built anew when the log
    cannot say (the session loaded again, a mark older than it keeps):
    never trusted past what the log names."""

    mark: int
    hosts_changes: int
    #: Draining host -> its instances still to leave, by id.
    on: dict[str, dict[str, InstanceView]] = attrs.field(factory=dict)
    #: Instance -> the draining host it is kept under.
    where: dict[str, str] = attrs.field(factory=dict)
    #: Those of them the engine still has to move (``_STILL_TO_MOVE``, not
    #: their manager's own action): what a placement holds back.
    held: dict[str, InstanceView] = attrs.field(factory=dict)
    #: Draining host -> its load for the planner, built when first asked.
    loads: dict[str, planner.HostLoad] = attrs.field(factory=dict)
    #: Draining host -> its ``held`` instances as a placement reads them
    #: (:meth:`held_by_host`), for the hosts with any; the hosts whose
    #: instances changed since (read again when next asked).
    held_on: dict[str, _HeldOn] = attrs.field(factory=dict)
    held_changed: set[str] = attrs.field(factory=set)
    #: Per group, how many of ``held_on``'s hosts hold members of it, and
    #: those of these groups with a per-host limit.
    held_groups: dict[str, int] = attrs.field(factory=dict)
    held_limited: set[str] = attrs.field(factory=set)
    #: Draining host -> its view and chosen list (:meth:`chosen_on`) when
    #: the pump last found it disabled, in flight and each of those
    #: startable, and them by id (:meth:`startable`).
    steady: dict[str, tuple[HostView, list[InstanceView], dict[str, InstanceView]]] = attrs.field(
        factory=dict
    )
    #: Draining host -> its instances whose action is chosen, by id, and
    #: those of them in id order while none changed (:meth:`chosen_on`),
    #: for the hosts with any; the hosts whose list is to be sorted again.
    chosen: dict[str, dict[str, InstanceView]] = attrs.field(factory=dict)
    chosen_sorted: dict[str, list[InstanceView]] = attrs.field(factory=dict)
    chosen_changed: set[str] = attrs.field(factory=set)
    #: Draining host -> one of those lists, and its instances by id if each
    #: may start whenever its host may (:meth:`startable`), else None.
    chosen_plain: dict[str, tuple[list[InstanceView], dict[str, InstanceView] | None]] = (
        attrs.field(factory=dict)
    )
    #: Draining host -> one of those lists and its members (:meth:`members_of`).
    chosen_members: dict[str, tuple[list[InstanceView], list[planner.Member]]] = attrs.field(
        factory=dict
    )
    #: The instances moving now (IN_ACTION, on any host), by id, and in id
    #: order while none changed (:meth:`in_action`).
    moving: dict[str, InstanceView] = attrs.field(factory=dict)
    moving_sorted: list[InstanceView] | None = None
    #: Per group, how many of ``moving`` (built when first asked:
    #: :meth:`moving_per_group`), the group each was counted in, and the
    #: ids whose entry in ``moving`` changed since.
    moving_count: dict[str, int] | None = None
    moving_group: dict[str, str] = attrs.field(factory=dict)
    moving_changed: set[str] = attrs.field(factory=set)
    #: Of ``moving``, those bound for another host, by target and id, the
    #: target each is counted under, and per target those in id order
    #: while none changed (:meth:`arrivals`); the targets changed since.
    arriving: dict[str, dict[str, InstanceView]] = attrs.field(factory=dict)
    bound_for: dict[str, str] = attrs.field(factory=dict)
    arriving_sorted: dict[str, list[InstanceView]] = attrs.field(factory=dict)
    arriving_changed: set[str] = attrs.field(factory=set)

    @classmethod
    def read(cls, ctx: SessionContext) -> _Draining:
        kept = cls(ctx.instances.change_mark(), ctx.hosts.changes())
        for host in ctx.hosts.in_state(HostState.DRAINING):
            kept.read_host(ctx, host.name)
        kept.moving = {i.instance_id: i for i in ctx.instances.in_state(InstanceState.IN_ACTION)}
        for instance_id, view in kept.moving.items():
            kept._bound(instance_id, view)
        return kept

    def brought_up_to_date(self, ctx: SessionContext) -> _Draining:
        """This, up to date with the views (or built anew)."""
        changed = ctx.instances.changed_since(self.mark)
        if changed is None:
            return _Draining.read(ctx)
        hosts_changes = ctx.hosts.changes()
        if not changed and hosts_changes == self.hosts_changes:
            return self
        self.mark = ctx.instances.change_mark()
        on, where, held, loads = self.on, self.where, self.held, self.loads
        # Each changed instance taken out first, from the host it was kept
        # under (before a host that started draining is read whole: one may
        # have left a draining host for it), then put where it is now.
        get, moving = ctx.instances.get, self.moving
        views: list[InstanceView] = []
        for instance_id in changed:
            view = get(instance_id)
            if view is not None:
                views.append(view)
            if view is not None and view.state == InstanceState.IN_ACTION:
                moving[instance_id] = view
                self.moving_sorted = None
                self.moving_changed.add(instance_id)
                self._bound(instance_id, view)
            elif moving.pop(instance_id, None) is not None:
                self.moving_sorted = None
                self.moving_changed.add(instance_id)
                self._bound(instance_id, None)
            was = where.pop(instance_id, None)
            if was is not None:
                del on[was][instance_id]
                held.pop(instance_id, None)
                loads.pop(was, None)
                self.held_changed.add(was)
                chosen = self.chosen.get(was)
                if chosen is not None and chosen.pop(instance_id, None) is not None:
                    self.chosen_changed.add(was)
        if hosts_changes != self.hosts_changes:
            self.hosts_changes = hosts_changes
            names = {h.name for h in ctx.hosts.in_state(HostState.DRAINING)}
            for gone in on.keys() - names:
                for instance_id in on.pop(gone):
                    del where[instance_id]
                    held.pop(instance_id, None)
                loads.pop(gone, None)
                self.held_changed.add(gone)
                self.chosen.pop(gone, None)
                self.chosen_changed.add(gone)
                self.chosen_plain.pop(gone, None)
                self.chosen_members.pop(gone, None)
            for new in names - on.keys():
                self.read_host(ctx, new)
        for view in views:
            if view.host in on:
                self._add(view)
        return self

    def read_host(self, ctx: SessionContext, host: str) -> None:
        """A host that started draining: its instances read whole."""
        self.on[host] = {}
        self.held_changed.add(host)
        self.chosen.pop(host, None)
        self.chosen_changed.add(host)
        for inst in ctx.instances.on(host):
            self._add(inst)

    def _add(self, inst: InstanceView) -> None:
        if inst.state not in _MEMBER_STATES:
            return
        host, instance_id = inst.host, inst.instance_id
        self.on[host][instance_id] = inst
        self.where[instance_id] = host
        self.loads.pop(host, None)
        self.held_changed.add(host)
        if inst.state in _STILL_TO_MOVE and inst.action != InstanceAction.OWN_ACTION:
            self.held[instance_id] = inst
        if inst.state == InstanceState.ACTION_CHOSEN:
            self.chosen.setdefault(host, {})[instance_id] = inst
            self.chosen_changed.add(host)

    def held_by_host(
        self,
        members: Callable[[Iterable[InstanceView]], list[planner.Member]],
        limited: Callable[[str], bool],
    ) -> dict[str, _HeldOn]:
        """Draining host -> its ``held`` instances (:class:`_HeldOn`, their
        ``members`` made by ``members``), for the hosts with any (a copy):
        those of the hosts whose instances changed read again, the others'
        kept; ``held_groups`` and ``held_limited`` (by ``limited``, fixed
        per group for the counts this is kept with) brought up to date
        with them."""
        kept, groups, with_limit = self.held_on, self.held_groups, self.held_limited
        for host in self.held_changed:
            insts = self.on.get(host)
            found = _HeldOn.of(insts, self.held, members) if insts else None
            was = kept.pop(host, None) if found is None else kept.get(host)
            if was is not None:
                for g in was.groups:
                    _count_down(groups, g)
                    if g not in groups:
                        with_limit.discard(g)
            if found is not None:
                kept[host] = found
                for g in found.groups:
                    n = groups.get(g, 0)
                    groups[g] = n + 1
                    if not n and limited(g):
                        with_limit.add(g)
        self.held_changed.clear()
        return dict(kept)

    def _bound(self, instance_id: str, view: InstanceView | None) -> None:
        """A moving instance changed (``view``) or stopped moving (None):
        taken from the target it was counted under, put under its own."""
        was = self.bound_for.pop(instance_id, None)
        if was is not None:
            del self.arriving[was][instance_id]
            self.arriving_changed.add(was)
        if view is not None and view.target is not None and view.target != view.host:
            self.bound_for[instance_id] = view.target
            self.arriving.setdefault(view.target, {})[instance_id] = view
            self.arriving_changed.add(view.target)

    def arrivals(self) -> dict[str, list[InstanceView]]:
        """Target -> the instances moving there now, id order (a copy; the
        lists not to be changed by the caller): those of the targets that
        changed sorted again, the others' kept."""
        return _sorted_again(self.arriving_sorted, self.arriving, self.arriving_changed)

    def in_action(self) -> list[InstanceView]:
        """The instances moving now, id order (not to be changed by the caller)."""
        found = self.moving_sorted
        if found is None:
            moving = self.moving
            found = self.moving_sorted = [moving[i] for i in sorted(moving)]
        return found

    def moving_per_group(self, group_of: Callable[[InstanceView], str]) -> dict[str, int]:
        """Per group, its instances moving now (not to be changed by the
        caller): counted once, then brought up to date from the instances
        whose move started or ended since (an instance's group is fixed for
        the counts this is kept with)."""
        count = self.moving_count
        if count is None:
            count = self.moving_count = {}
            self.moving_group.clear()
            changed: Iterable[str] = self.moving
        else:
            changed = self.moving_changed
        where = self.moving_group
        for instance_id in changed:
            old = where.pop(instance_id, None)
            if old is not None:
                _count_down(count, old)
            view = self.moving.get(instance_id)
            if view is not None:
                g = where[instance_id] = group_of(view)
                count[g] = count.get(g, 0) + 1
        self.moving_changed.clear()
        return count

    def chosen_on(self) -> dict[str, list[InstanceView]]:
        """Draining host -> its instances whose action is chosen, id order
        (a copy; the lists not to be changed by the caller): those of the
        hosts whose chosen changed sorted again, the others' kept."""
        return _sorted_again(self.chosen_sorted, self.chosen, self.chosen_changed)

    def members_of(
        self,
        lists: Iterable[tuple[str | None, list[InstanceView]]],
        members: Callable[[Iterable[InstanceView]], list[planner.Member]],
    ) -> list[planner.Member]:
        """The members (made by ``members``) of the instances of ``lists``,
        in their order: of a host's :meth:`chosen_on` list (named by its
        host) made once per list (a list is kept while none of its instances
        changed, and an instance's member is fixed for the counts this is
        kept with), of the others (host None) made now."""
        out: list[planner.Member] = []
        kept = self.chosen_members
        for host, insts in lists:
            if host is None:
                out.extend(members(insts))
                continue
            found = kept.get(host)
            if found is None or found[0] is not insts:
                found = kept[host] = (insts, members(insts))
            out.extend(found[1])
        return out

    def startable(self, host: str, chosen: list[InstanceView]) -> dict[str, InstanceView] | None:
        """``chosen`` (:meth:`chosen_on`'s list of ``host``) by id when none
        of them has a lead time or is its manager's own action (each may
        then start as soon as its host may), else None: worked out once per
        list (a list is kept while none of its instances changed)."""
        found = self.chosen_plain.get(host)
        if found is not None and found[0] is chosen:
            return found[1]
        plain = all(i.not_before is None and i.action != InstanceAction.OWN_ACTION for i in chosen)
        by_id = {i.instance_id: i for i in chosen} if plain else None
        self.chosen_plain[host] = (chosen, by_id)
        return by_id


@attrs.define(slots=True)
class _Counts:
    """Per-group counts of one session, derived from the views (a cache of
    this process): members on hosts still to do, and the pending hosts that
    hold members of each group; the members waiting on each pending host
    (dropped when one arrives there) and which instances the cloud's
    placement rules name (fixed for a session)."""

    stamp: int
    constraints: ConstraintSet
    group: dict[str, str] = attrs.field(factory=dict)
    todo: Counter[str] = attrs.field(factory=Counter)
    pending_hosts_of: dict[str, set[str]] = attrs.field(factory=dict)
    pending_loads: dict[str, _PendingLoad] = attrs.field(factory=dict)
    ruled: dict[str, bool] = attrs.field(factory=dict)
    #: Per group with a per-host limit, the vcpus of its members on pending
    #: hosts (how many of each size): placements keep a host able to take them.
    ahead_sizes: dict[str, Counter[int]] = attrs.field(factory=dict)
    #: The groups' rules (fixed for the constraints the counts were built
    #: on), and whether each has a per-host limit.
    rules: dict[str, planner.GroupRule] = attrs.field(factory=dict)
    #: Per group, its max_impacted_members and the seconds of one round of
    #: its moves (a move and its recovery_time): what its weight is made of.
    pace: dict[str, tuple[int, float]] = attrs.field(factory=dict)
    limited: dict[str, bool] = attrs.field(factory=dict)
    #: (vcpus, host) of the pending hosts with instances, a heap: a lower
    #: bound of each one's load (nothing leaves a pending host, arrivals
    #: only add), so its top bounds the smallest host :meth:`_open` could open.
    pending_floor: list[tuple[int, str]] = attrs.field(factory=list)
    #: Pending hosts holding an instance that moved already (a first wave's
    #: instance parked there, or one moved while waiting made no room): opened
    #: after the others (``planner.hosts_to_open``'s ``last``).
    parked: set[str] = attrs.field(factory=set)
    #: Whether an instance on a pending or draining host is named by the
    #: cloud's placement rules (its targets are then its own: no shortcut),
    #: and whether one is of a group with a per-host limit (without one, no
    #: target counts members: each answers 0 for every group).
    any_ruled: bool = False
    any_limited: bool = False
    #: What the dry run of the waves' move check found for the hosts after
    #: the draining ones, per state it starts from (``planner.drain_sequence``'s
    #: ``verdicts``: exact, whatever changed since).
    verdicts: dict[Hashable, planner.HostLoad | None] = attrs.field(factory=dict)
    #: The instances in recovery_time (built when first read).
    recovery: _Recovery | None = None
    #: Draining hosts that may hold instances not asked about yet (PENDING).
    unasked: set[str] = attrs.field(factory=set)
    #: Hosts of ``unasked`` whose instances not asked about are all of
    #: managed projects awaiting an answer (which are not asked again until
    #: they answer), with those projects: not read again while every one of
    #: them still awaits. An open or an arrival takes the host out.
    blocked: dict[str, frozenset[str]] = attrs.field(factory=dict)
    #: Draining hosts that may not be disabled yet.
    undisabled: set[str] = attrs.field(factory=set)
    #: Per project, the instances asked about in each wave still open
    #: (``InstanceView.wave``), read from the project's instances when first
    #: needed: a move's end looks up its own wave instead of reading every
    #: instance of the project. Changed only with the stamp.
    asked: dict[str, dict[int, list[str]]] = attrs.field(factory=dict)
    #: The targets last built per host when no group has a per-host limit
    #: (a Target is immutable: the same room and kind, the same target).
    targets: dict[str, planner.Target] = attrs.field(factory=dict)
    #: The walks the targets of an instance without placement rules take,
    #: per placement class (:class:`_Walk`), as of the capacity's mark
    #: ``walks_mark``, for the retiring hosts ``walks_retiring``.
    walks: dict[str, _Walk] = attrs.field(factory=dict)
    walks_mark: int = 0
    walks_retiring: frozenset[str] = frozenset()
    #: What each draining host takes (:class:`_DrainingTaken`).
    draining_taken: _DrainingTaken | None = None
    #: The fleet's targets of a dry run (:class:`_FleetTargets`).
    fleet_targets: _FleetTargets | None = None
    #: Each instance as the planner takes it, built once (:meth:`_Step.member`).
    members: dict[str, planner.Member] = attrs.field(factory=dict)
    #: The inputs of the last opening decision that opened nothing and
    #: changed nothing (:meth:`ConstrainedWorkflow._opening_inputs`): one
    #: with the same inputs opens nothing again.
    opened_nothing: tuple[Any, ...] | None = None
    #: The inputs of the last placement that worked out its order, when no
    #: member could start in it (:meth:`ConstrainedWorkflow._placement_inputs`):
    #: a placement with the same inputs finds the same empty order.
    empty_placement: tuple[tuple[Any, ...], dict[str, int]] | None = None
    #: The idle groups and the weight each pending host feeds as last worked
    #: out (:class:`_Fed`), and the groups whose work left (``todo``) or
    #: pending hosts (``pending_hosts_of``) changed since: every change of
    #: either names its group here.
    fed: _Fed | None = None
    refed: set[str] = attrs.field(factory=set)
    #: The draining hosts' instances still to leave (:class:`_Draining`).
    draining: _Draining | None = None
    #: The DRAINED and IN_MAINTENANCE hosts whose stage's operation does not
    #: run (not BUSY), and more (a host that turned BUSY is dropped at the
    #: next read): what :meth:`ConstrainedWorkflow._run_hosts` advances. Good
    #: while ``HostsView.changes`` answers ``idle_open_at`` (no host changed
    #: state), stages changing through ``ConstrainedWorkflow._set_stage``.
    idle_open: set[str] = attrs.field(factory=set)
    idle_open_at: int | None = None

    def ahead(self) -> dict[str, int]:
        """Per group with a per-host limit still to move, its smallest member."""
        return {
            g: min(v for v, n in sizes.items() if n > 0)
            for g, sizes in self.ahead_sizes.items()
            if any(n > 0 for n in sizes.values())
        }

    def pending_member(self, group_id: str, vcpus: int, limited: bool, delta: int) -> None:
        """A member of ``group_id`` arrived on (+1) or left with its host (-1)
        the pending hosts."""
        if limited:
            self.ahead_sizes.setdefault(group_id, Counter())[vcpus] += delta


class _GroupsOn(Mapping[str, int]):
    """Members of each group with a per-host limit on one host, arrivals in
    flight included; counted when first asked about such a group (a group
    without a limit has none counted: the host's instances are not read)."""

    def __init__(
        self,
        counts: dict[str, Counter[str]],
        count: Callable[[str], Counter[str]],
        limited: Callable[[str], bool],
        known: Mapping[str, bool],
        host: str,
    ) -> None:
        self._counts = counts
        self._count = count
        self._limited = limited
        self._known = known  # limited() remembered: read first (asked per member and target)
        self._host = host

    def _mine(self) -> Counter[str]:
        found = self._counts.get(self._host)
        if found is None:
            found = self._counts[self._host] = self._count(self._host)
        return found

    def __getitem__(self, group_id: str) -> int:
        if not self._limited(group_id):
            return 0  # as a Counter answers for a group it does not hold
        return self._mine()[group_id]

    def get(self, group_id: str, default: int = 0) -> int:  # type: ignore[override]
        limited = self._known.get(group_id)
        if not (self._limited(group_id) if limited is None else limited):
            return default
        return self._mine().get(group_id, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


#: A target's members when no group has a per-host limit (none are counted).
_NONE: Mapping[str, int] = MappingProxyType({})
_GROUP_OF = attrgetter("group_id")  # a member's group (read for every member of a decision)
#: A host view's place in the fleet's order (a sort key read in C, no call per view).
_POSITION = attrgetter("position", "name")


def _sorted_again(
    kept: dict[str, list[InstanceView]],
    by_key: dict[str, dict[str, InstanceView]],
    changed: set[str],
) -> dict[str, list[InstanceView]]:
    """A copy of ``kept`` (key -> its instances of ``by_key`` in id order)
    with the keys in ``changed`` sorted again, those left empty dropped from
    both; ``changed`` is emptied."""
    for key in changed:
        insts = by_key.get(key)
        if insts:
            kept[key] = [insts[i] for i in sorted(insts)]
        else:
            kept.pop(key, None)
            by_key.pop(key, None)
    changed.clear()
    return dict(kept)


class _Impacted(Mapping[str, int]):
    """Members of each group impacted now: those in recovery_time (the
    mirror's count per group, read as it is, not copied: at 1,000 hosts it
    holds most of the fleet's groups, and a pass asks about a few) plus
    those moving that are not in recovery. The mirror does not change while
    a pass reads it: a recovery starts at a move's end, and those that ended
    are taken out before the pass."""

    __slots__ = ("_moving", "_recovering")

    def __init__(self, recovering: Mapping[str, int], moving: Mapping[str, int]) -> None:
        self._recovering = recovering
        self._moving = moving

    def get(self, group_id: str, default: Any = None) -> Any:
        found = self._recovering.get(group_id)
        moving = self._moving.get(group_id)
        if moving is None:
            return default if found is None else found
        return moving if found is None else found + moving

    def __getitem__(self, group_id: str) -> int:
        found = self.get(group_id)
        if found is None:
            raise KeyError(group_id)
        return int(found)

    def __iter__(self) -> Iterator[str]:
        yield from self._recovering
        yield from (g for g in self._moving if g not in self._recovering)

    def __len__(self) -> int:
        return len(self._recovering) + sum(1 for g in self._moving if g not in self._recovering)


class _Budgets:
    """How many more members of each group may be impacted now: its
    ``max_impacted_members`` less its members moving or in recovery_time
    (``impacted``), for the groups with work left or impacted; worked out
    per group when first asked, and taken from as moves start."""

    def __init__(self, step: _Step, impacted: Mapping[str, int]) -> None:
        self._rule = step.rule
        self._todo = step.counts.todo  # changed in place only
        self._impacted = impacted
        self._left: dict[str, int] = {}

    def get(self, group_id: str, default: int) -> int:
        found = self._left.get(group_id)
        if found is not None:
            return found
        impacted = self._impacted.get(group_id)
        if impacted is None:
            if group_id not in self._todo:
                return default
            impacted = 0
        # The group's rule is kept with the counts (its constraints are
        # looked up, a key parsed, once per session, not once per pass).
        found = self._left[group_id] = self._rule(group_id).max_impacted - impacted
        return found

    def take(self, group_id: str) -> None:
        """A member of the group starts moving."""
        self._left[group_id] = self.get(group_id, 0) - 1


class _Admission:
    """``ctx.admit`` of the hosts of one pass, asked once for all the hosts
    in flight (admitted, their work not ended): the context answers the
    same for each of them, admitted unless the session is paused
    (docs/plugins.md), and nothing in a pass pauses or resumes it. A host
    not in flight is asked on its own (its answer is the pipeline's)."""

    __slots__ = ("_ctx", "_in_flight")

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._in_flight: bool | None = None  # the answer for a host in flight, once asked

    def admitted(self, host: HostView) -> bool:
        if not host.in_flight:
            return self._ctx.admit(host.name).admitted
        found = self._in_flight
        if found is None:
            found = self._in_flight = self._ctx.admit(host.name).admitted
        return found


class _Step:
    """What one decision reads more than once (built per hook call)."""

    def __init__(
        self,
        wf: ConstrainedWorkflow,
        ctx: SessionContext,
        counts: _Counts,
        budgets: _Budgets | None = None,
    ) -> None:
        self.wf, self.ctx, self.counts = wf, ctx, counts
        self._budgets = budgets
        self.cs = counts.constraints
        self.rules = counts.rules
        self._on_host: dict[str, Counter[str]] = {}
        self._arrivals: dict[str, list[InstanceView]] | None = None
        self._in_action: list[InstanceView] | None = None
        self._moving: dict[str, InstanceView] | None = None  # read with the arrivals
        self._free = ctx.capacity.free  # read for every target of a window

    def group(self, inst: InstanceView) -> str:
        found = self.counts.group.get(inst.instance_id)
        if found is None:
            found = self.counts.group[inst.instance_id] = self.cs.group_key_of(
                inst.instance_id, inst.project_id
            )
        return found

    def rule(self, key: str) -> planner.GroupRule:
        found = self.rules.get(key)
        if found is None:
            found = self.rules[key] = planner.GroupRule.of(self.cs.group_by_key(key), key)
        return found

    def rules_of(self, members: Iterable[planner.Member]) -> dict[str, planner.GroupRule]:
        """The rules of the members' groups, in the order the groups first
        come: each group looked up once, not once per member (a decision
        reads the members of up to 128 candidate hosts)."""
        rule, kept = self.rule, self.rules.get
        return {
            g: found if (found := kept(g)) is not None else rule(g)
            for g in dict.fromkeys(map(_GROUP_OF, members))
        }

    def limited(self, key: str) -> bool:
        """Whether the group has a per-host limit (anti-affinity or a maximum)."""
        found = self.counts.limited.get(key)
        if found is None:
            found = self.counts.limited[key] = self.rule(key).host_limit() is not None
        return found

    def any_limited(self, groups: Mapping[str, object]) -> bool:
        """Whether one of the groups (the keys) has a per-host limit: read
        in one go while each one's answer is kept (a placement asks about
        every group of the draining hosts' members)."""
        known = self.counts.limited
        if known.keys() >= groups.keys():
            return any(map(known.__getitem__, groups))
        return any(map(self.limited, groups))

    def member(self, inst: InstanceView) -> planner.Member:
        """The instance as the planner takes it (kept with the counts: a
        Member is immutable, and an instance's group is fixed for the
        constraints the counts were built on)."""
        kept = self.counts.members.get(inst.instance_id)
        if kept is not None and kept.vcpus == inst.vcpus:
            return kept
        found = self.counts.members[inst.instance_id] = planner.Member(
            inst.instance_id, inst.project_id, self.group(inst), inst.vcpus
        )
        return found

    def members(self, insts: Iterable[InstanceView]) -> list[planner.Member]:
        """:meth:`member` of each instance, the kept ones read in the loop
        (a decision reads the members of every draining host)."""
        kept, member, out = self.counts.members, self.member, []
        for inst in insts:
            found = kept.get(inst.instance_id)
            out.append(found if found is not None and found.vcpus == inst.vcpus else member(inst))
        return out

    def members_on(self, host: str) -> list[planner.Member]:
        """The host's members (:data:`_MEMBER_STATES`), its load."""
        return self.members(i for i in self.ctx.instances.on(host) if i.state in _MEMBER_STATES)

    def draining(self) -> _Draining:
        """The draining hosts' instances still to leave, up to date."""
        kept = self.counts.draining
        found = _Draining.read(self.ctx) if kept is None else kept.brought_up_to_date(self.ctx)
        self.counts.draining = found
        return found

    def draining_load(self, view: HostView, draining: _Draining) -> planner.HostLoad:
        """A draining host's members (``members_on``), from ``draining``:
        the same load while none of its instances changed."""
        found = draining.loads.get(view.name)
        if found is None or found.position != view.position:
            insts = draining.on.get(view.name)
            members = (
                self.members([insts[i] for i in sorted(insts)])
                if insts is not None
                else self.members_on(view.name)
            )
            found = draining.loads[view.name] = planner.HostLoad(
                view.name, tuple(members), view.position
            )
        return found

    def pending_load(self, view: HostView) -> planner.HostLoad:
        """A pending host's members (kept between steps: nothing leaves a
        pending host, an arrival drops its entry)."""
        return self.pending(view).load

    def pending(self, view: HostView) -> _PendingLoad:
        found = self.counts.pending_loads.get(view.name)
        if found is None or found.load.position != view.position:
            found = self.counts.pending_loads[view.name] = _PendingLoad.of(
                view.name, view.position, self.members_on(view.name)
            )
        return found

    def ruled(self, instance_id: str) -> bool:
        """Whether the cloud's placement rules name the instance."""
        found = self.counts.ruled.get(instance_id)
        if found is None:
            found = self.counts.ruled[instance_id] = bool(
                self.ctx.capacity.limits(instance_id).rules
            )
        return found

    def in_action(self) -> list[InstanceView]:
        """The instances moving now (kept: :meth:`_Draining.in_action`),
        read once per decision (the budgets
        and the arrivals read them; no move starts
        between those reads: a decision's moves are sent at its end)."""
        if self._in_action is None:
            moving = self._moving
            self._in_action = (
                self.draining().in_action()
                if moving is None
                else [moving[i] for i in sorted(moving)]
            )
        return self._in_action

    def arrivals(self) -> dict[str, list[InstanceView]]:
        """Target -> instances moving there now (each list in id order), as
        :meth:`in_action` gives them: read with them, from what
        :class:`_Draining` keeps (the moves are taken as they are, sorted
        only if :meth:`in_action` is asked), unless they were read before."""
        if self._arrivals is None:
            if self._in_action is None:
                kept = self.draining()
                self._moving = dict(kept.moving)
                self._arrivals = kept.arrivals()
            else:
                self._arrivals = {}
                for inst in self._in_action:
                    if inst.target is not None and inst.target != inst.host:
                        self._arrivals.setdefault(inst.target, []).append(inst)
        return self._arrivals

    def _limited_on(self, host: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for inst in [*self.ctx.instances.on(host), *self.arrivals().get(host, ())]:
            if inst.state == InstanceState.GONE:
                continue
            g = self.group(inst)
            if self.rule(g).host_limit() is not None:
                found[g] += 1
        return found

    def budgets(self, cst: ConstrainedState) -> _Budgets:
        """The groups' budgets (:class:`_Budgets`), worked out once per pass
        of the waves: the moves started in it take from them."""
        if self._budgets is None:
            self._budgets = _Budgets(self, self.wf._impacted(self.ctx, self, cst))
        return self._budgets

    def next(self) -> _Step:
        """A fresh step for the next decision of the same pass (the moves just
        sent arrive somewhere), with the budgets as they are now."""
        return _Step(self.wf, self.ctx, self.counts, self._budgets)

    def targets(self, window: Iterable[tuple[HostView, bool]]) -> list[planner.Target]:
        """The targets of a window's hosts (:meth:`target` of each, in one
        loop: a window is up to TARGET_WINDOW hosts)."""
        if self.counts.any_limited:
            return [self.target(view, stays) for view, stays in window]
        free_of, kept, out = self._free, self.counts.targets, []
        walked = self._walked_free().get
        for view, stays in window:
            name = view.name
            free = walked(name)
            if free is None:
                free = free_of(name)
            found = kept.get(name)
            if found is None or found.free != free or found.stays != stays:
                found = kept[name] = planner.Target(name, free, stays, _NONE)
            out.append(found)
        return out

    def _walked_free(self) -> Mapping[str, int]:
        """The free vCPUs per host the kept walk holds (:class:`_Walk`, the
        window's hosts mostly) when they are those of now (no host's
        capacity changed since it was brought up to date); else none."""
        walks = self.counts.walks
        if len(walks) != 1:
            return _NONE
        changed = self.ctx.capacity.changed_since(self.counts.walks_mark)
        if changed is None or changed:
            return _NONE
        (walk,) = walks.values()
        return walk.free

    def target(self, view: HostView, stays: bool) -> planner.Target:
        if not self.counts.any_limited:  # no member is counted on any host
            # The window's hosts change little between decisions: a target
            # whose room and kind did not change is the one built before.
            free = self._free(view.name)
            kept = self.counts.targets.get(view.name)
            if kept is None or kept.free != free or kept.stays != stays:
                kept = self.counts.targets[view.name] = planner.Target(
                    view.name, free, stays, _NONE
                )
            return kept
        return planner.Target(
            view.name,
            self._free(view.name),
            stays,
            _GroupsOn(
                self._on_host, self._limited_on, self.limited, self.counts.limited, view.name
            ),
        )


class ConstrainedWorkflow(RollingWorkflow):
    """Parallel, constraint-aware maintenance (``workflow="constrained"``)."""

    name: ClassVar[str] = "constrained"
    #: Managers may leave instances out of their reply: their constraints
    #: (migration_type, max_interruption_time) decide.
    requires_instance_actions: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, _Counts] = {}

    # ------------------------------------------------------------------ hooks

    def start(self, ctx: SessionContext) -> None:
        self._counts.pop(ctx.session_id, None)
        super().start(ctx)

    def on_retry(self, ctx: SessionContext) -> None:
        cst = ctx.state_of(ConstrainedState)
        for host in list(ctx.hosts.in_state(HostState.FAILED)):
            if host.stage:
                self._set_stage(ctx, host.name, 0)
        wave = cst.wave
        fresh = ConstrainedState(wave=wave)
        for field in attrs.fields(ConstrainedState):
            setattr(cst, field.name, getattr(fresh, field.name))
        cst.stamp = _new_stamp()
        super().on_retry(ctx)

    def advance(self, ctx: SessionContext) -> None:
        super().advance(ctx)
        if ctx.session.state in _FINAL:
            self._counts.pop(ctx.session_id, None)

    def on_timer(self, ctx: SessionContext, timer: TimerFired) -> None:
        if timer.name == "waves":
            ctx.state_of(ConstrainedState).wake = None
        super().on_timer(ctx, timer)

    def on_operation(self, ctx: SessionContext, result: OpResult) -> None:
        st = ctx.state_of(RollingState)
        op = result.op
        if isinstance(op, Inventory | ListHosts | Locate) and not self._found_nothing(ctx, result):
            self._changed(ctx)  # hosts or instances appeared or left: count again
        if ctx.session.state not in _FINAL and self._wave_op(ctx, op):
            if result.status != OpStatus.DONE and self._escalated(ctx, st, result):
                self._after(ctx, st)
                return
            if isinstance(op, Move | Watch):
                self._wave_move_ended(ctx, st, op, result)
            else:
                self._wave_host_op_ended(ctx, op, result)
            self._after(ctx, st)
            return
        if ctx.session.state in _FINAL and self._wave_op(ctx, op):
            self._wave_ended_later(ctx, st, op, result)
            self._after(ctx, st)
            return
        super().on_operation(ctx, result)

    def _found_nothing(self, ctx: SessionContext, result: OpResult) -> bool:
        """An emptied host's listing (``verify_empty``) that found no
        instance: nothing was added or placed anywhere, and what it may have
        found gone was on that host, which the counts do not cover."""
        op = result.op
        if not isinstance(op, Inventory) or len(op.hosts) != 1:
            return False
        view = ctx.hosts.get(op.hosts[0])
        return (
            result.status == OpStatus.DONE
            and not result.result.get("instances")
            and view is not None
            and view.state not in (HostState.PENDING, HostState.DRAINING)
        )

    def answered(
        self,
        ctx: SessionContext,
        project_id: str,
        awaited: str,
        instance_actions: Mapping[str, str],
    ) -> None:
        st = ctx.state_of(RollingState)
        if st.drain_host is not None:  # a controller drained alone
            super().answered(ctx, project_id, awaited, instance_actions)
            return
        if awaited != _ASKED:
            return
        cs = ctx.constraints
        # Those asked about are on the draining hosts: the project's
        # instances there (an index), not all of them, in id order.
        requested = [
            inst
            for host in ctx.hosts.in_state(HostState.DRAINING)
            for inst in ctx.instances.of_on(project_id, host.name)
            if inst.state == InstanceState.ACTION_REQUESTED
        ]
        requested.sort(key=lambda i: i.instance_id)
        for inst in requested:
            chosen = instance_actions.get(inst.instance_id)
            action = chosen or self._action_for(ctx, inst, cs, managed=True)
            ctx.set_instance_state(inst.instance_id, InstanceState.ACTION_CHOSEN, action=action)

    # ------------------------------------------------------------------ decisions

    def _decide(self, ctx: SessionContext, st: RollingState) -> bool:
        """Controllers first, one at a time (the rolling way); then the
        computes in waves."""
        if st.phase == "listing":
            return False
        controllers = [
            h
            for h in ctx.hosts.in_state(HostState.PENDING, HostState.DRAINED)
            if h.type != "compute"
        ]
        if any(h.state == HostState.DRAINED for h in controllers) or any(
            h.type != "compute" for h in ctx.hosts.without_instances(HostState.PENDING)
        ):
            self._go(ctx, st, SessionState.START_MAINTENANCE)
            return True
        pending = [h for h in controllers if h.state == HostState.PENDING]
        planned = ctx.session.state == SessionState.PLANNED_MAINTENANCE
        if pending:
            if not planned:  # the least loaded first: its instances move again later
                pending.sort(key=lambda h: (self._used(ctx, h.name), h.position))
            choice = next((h.name for h in pending if self._fits_elsewhere(ctx, h.name)), None)
            if choice is None:
                return self._scale_in_or_fail(ctx, st, pending)
            if not ctx.admit(choice).admitted:
                return False
            st.listed = False
            self._go(
                ctx,
                st,
                SessionState.PLANNED_MAINTENANCE if planned else SessionState.PREPARE_MAINTENANCE,
            )
            st.drain_host, st.phase = choice, "disable"
            st.waiting_move, st.move_attempts, st.refused, st.retry_wait = None, 0, (), False
            return True
        if not ctx.hosts.in_state(HostState.PENDING, *_OPEN):
            self._go(ctx, st, SessionState.MAINTENANCE_COMPLETE)
            st.phase = "post"
            return True
        if not planned:
            if not self._feasible(ctx, st):
                return False
            st.listed = False
        # (Once in the waves, ``listed`` is reset when a host opens: resetting
        # it at each decision listed the hosts again and again at one instant
        # when nothing could open.)
        self._go(ctx, st, SessionState.PLANNED_MAINTENANCE)
        st.phase = "waves"
        return True

    def _drain(self, ctx: SessionContext, st: RollingState) -> bool:
        if st.phase == "waves":
            return self._waves(ctx, st)
        return super()._drain(ctx, st)

    def _next_host_to_maintain(self, ctx: SessionContext) -> HostView | None:
        """START_MAINTENANCE here is for controllers only, one at a time: a
        drained one, else an empty one; computes are maintained in the waves."""
        for host in ctx.hosts.in_state(HostState.DRAINED):
            if host.type != "compute":
                return host
        for host in ctx.hosts.without_instances(HostState.PENDING):
            if host.type != "compute":
                return host
        return None

    # ------------------------------------------------------------------ feasibility

    def _feasible(self, ctx: SessionContext, st: RollingState) -> bool:
        """Before any compute is touched: can the constraints hold at all?
        (Once per session: it reads every host and instance.)"""
        step = _Step(self, ctx, self._counts_of(ctx))
        counts: Counter[str] = Counter()
        owners: dict[str, str] = {}
        pending: list[planner.HostLoad] = []
        for host in ctx.hosts:
            for inst in ctx.instances.on(host.name):
                if inst.state in IN_SCOPE or inst.state == InstanceState.OUT_OF_SCOPE:
                    g = step.group(inst)
                    counts[g] += 1
                    owners[g] = inst.project_id
            if host.state == HostState.PENDING and host.type == "compute":
                pending.append(
                    planner.HostLoad(host.name, tuple(step.members_on(host.name)), host.position)
                )
        rules = {g: step.rule(g) for g in counts}
        targets = self._all_targets(ctx, step)
        bad = planner.infeasible_groups(counts, rules, len(targets))
        if bad:
            details = "; ".join(
                f"group {ctx.constraints.group_by_key(g).group_id} of project {owners[g]} has "
                f"{counts[g]} members and allows {rules[g].host_limit()} per host, but only "
                f"{len(targets) - 1} hosts stay in service while one is maintained"
                for g in bad
            )
            self._scale_in_or_fail_for(ctx, st, {owners[g] for g in bad}, details)
            return False
        member_rules = {m.group_id: step.rule(m.group_id) for load in pending for m in load.members}
        if planner.drains_by_count(pending, targets, member_rules):
            return True  # the dry run's verdict, by counting
        _order, stuck = planner.drain_sequence(pending, targets, member_rules)
        if stuck is None:
            return True
        limited = sorted(
            {
                m.group_id
                for m in stuck.members
                if m.group_id in member_rules and member_rules[m.group_id].host_limit()
            }
        )
        if limited:
            owners_of = {m.group_id: m.project_id for m in stuck.members}
            why = (
                f"host {stuck.host} cannot be emptied: its instances of group(s) "
                + ", ".join(ctx.constraints.group_by_key(g).group_id for g in limited)
                + " find no host with room that keeps their anti-affinity or per-host limit"
            )
            self._scale_in_or_fail_for(ctx, st, {owners_of[g] for g in limited}, why)
        else:
            self._scale_in_or_fail(
                ctx, st, list(ctx.hosts.in_state(HostState.PENDING, type="compute"))
            )
        return False

    def _scale_in_or_fail_for(
        self, ctx: SessionContext, st: RollingState, projects: set[str], why: str
    ) -> None:
        if not st.listed:
            ctx.submit(ListHosts())  # a host added meanwhile may make room
            st.phase = "listing"
            return
        managed = sorted(p for p in projects if self._managed(ctx, p))
        rounds = st.scale_in_rounds
        if not managed:
            ctx.fail(f"the constraints cannot hold during maintenance: {why}")
            return
        if rounds >= MAX_SCALE_IN_ROUNDS or (rounds and st.scale_in_freed <= 0):
            ctx.fail(f"the constraints still cannot hold after {rounds} SCALE_IN round(s): {why}")
            return
        st.scale_in_rounds += 1
        st.scale_in_load = self._load(ctx)
        st.listed = False
        self._go(ctx, st, SessionState.SCALE_IN)
        st.phase = "confirm"
        self.ask_projects(
            ctx,
            "SCALE_IN",
            {
                p: [i.instance_id for i in ctx.instances.of(p) if i.state in IN_SCOPE]
                for p in managed
            },
            metadata={**ctx.request.metadata, "reason": why},
        )

    # ------------------------------------------------------------------ waves

    def _waves(self, ctx: SessionContext, st: RollingState) -> bool:
        cst = ctx.state_of(ConstrainedState)
        step = _Step(self, ctx, self._counts_of(ctx))
        self._run_hosts(ctx, step)
        if ctx.session.state in _FINAL:
            return False
        held = False
        for _ in range(2):  # opening hosts may let more moves start at once
            self._ask(ctx, step, cst)
            held = self._pump(ctx, step, cst) or held
            if ctx.session.state in _FINAL:
                return False
            step = step.next()  # the moves just sent arrive somewhere
            opened, waits = self._open(ctx, step, cst)
            held = held or waits
            if not opened:
                break
            step = step.next()
        self._run_hosts(ctx, step)
        if ctx.session.state in _FINAL:
            return False
        if not ctx.hosts.in_state(HostState.PENDING, *_OPEN) and not ctx.instances.in_state(
            InstanceState.IN_ACTION
        ):
            return self._decide(ctx, st)
        if not held and not self._in_flight(ctx, cst):
            self._stuck(ctx, st, step, cst)
        return False

    def _in_flight(self, ctx: SessionContext, cst: ConstrainedState) -> bool:
        """Anything that will wake the session by itself: a move, a host's
        operation, a question, a timer of the waves."""
        if ctx.instances.in_state(InstanceState.IN_ACTION) or cst.wake is not None:
            return True
        if ctx.projects.awaiting_count():
            return True
        # One state at a time, the index's lists as they are (the hosts of
        # several states together are sorted first; any one will do), the
        # states where most hosts are BUSY first.
        return any(
            h.stage & (BUSY | DISABLING)
            for state in (*_STAGED, HostState.DRAINING)
            for h in ctx.hosts.in_state(state)
        )

    def _run_hosts(self, ctx: SessionContext, step: _Step) -> None:
        """Advance every open host that may: an emptied draining one becomes
        drained, a drained one runs its stages (side by side). A host whose
        stage's operation runs (BUSY) is advanced when it ends
        (:meth:`_wave_host_op_ended`), so only the others are looked at: the
        draining hosts without instances (an index) and the idle ones."""
        hosts = list(ctx.hosts.without_instances(HostState.DRAINING))
        hosts += self._idle_open(ctx, step.counts)
        hosts.sort(key=_POSITION)
        for host in hosts:
            if host.type != "compute":
                continue
            if (
                host.state == HostState.DRAINING
                and not host.stage & DISABLING
                and not host.enabled
                and not self._in_scope_on(ctx, host.name)
                and host.name not in step.arrivals()  # read only when it decides
            ):
                ctx.set_host_state(host.name, HostState.DRAINED)
                host = ctx.hosts.get(host.name) or host
            if host.state in (HostState.DRAINED, HostState.IN_MAINTENANCE):
                self._run_wave_host(ctx, host)
                if ctx.session.state in _FINAL:
                    return

    def _idle_open(self, ctx: SessionContext, counts: _Counts) -> list[HostView]:
        """The DRAINED and IN_MAINTENANCE hosts that are not BUSY. Most open
        hosts are BUSY, and they stay so for many steps: the idle ones are
        kept (``_Counts.idle_open``) and all of them are looked at again only
        after a host changed state, or when ``counts`` are no longer the
        session's (counted again since: :meth:`_set_stage` keeps the new ones)."""
        changes = ctx.hosts.changes()
        if counts.idle_open_at != changes or self._counts.get(ctx.session_id) is not counts:
            counts.idle_open = {
                h.name for state in _STAGED for h in ctx.hosts.in_state(state) if not h.stage & BUSY
            }
            counts.idle_open_at = changes
        idle = []
        for name in list(counts.idle_open):
            view = ctx.hosts.get(name)
            if view is not None and view.state in _STAGED and not view.stage & BUSY:
                idle.append(view)
            else:
                counts.idle_open.discard(name)
        return idle

    def _set_stage(self, ctx: SessionContext, host: str, stage: int) -> None:
        """``ctx.set_host_stage``, the host kept among the idle open ones
        (:meth:`_idle_open`) when it is not BUSY."""
        ctx.set_host_stage(host, stage)
        counts = self._counts.get(ctx.session_id)
        if counts is not None and not stage & BUSY:
            counts.idle_open.add(host)

    def _run_wave_host(self, ctx: SessionContext, host: HostView) -> None:
        """Advance the host's stages as far as possible (the rolling stages;
        it was disabled before its drain)."""
        flags = host.stage & ~_STAGE
        index = host.stage & _STAGE
        if flags & BUSY:
            return
        st = ctx.state_of(RollingState)
        stages = self._stages(ctx, st, host)
        specs = actions_of(ctx.request.actions, *host_action_types(host.type))
        while index < len(stages):
            view = ctx.hosts.get(host.name)
            assert view is not None
            name = stages[index]
            if name == "verify_empty":
                ctx.submit(Inventory((host.name,)))
                self._set_stage(ctx, host.name, index | flags | BUSY)
                return
            if name == "notify_in":
                if not ctx.admit(host.name).admitted:
                    break  # paused: a host not yet in maintenance does not go in
                if self._in_scope_on(ctx, host.name):
                    # Something arrived since it was emptied (a replacement
                    # pod, a scheduler's choice): it waits with the pending
                    # hosts to be drained again (a drained host cannot go
                    # back to DRAINING).
                    ctx.set_host_state(host.name, HostState.PENDING)
                    self._set_stage(ctx, host.name, flags & ~FIRST_DRAINED)
                    cst = ctx.state_of(ConstrainedState)
                    if cst.partial == host.name:
                        cst.partial, cst.partial_twice = None, 0
                    self._changed(ctx)
                    return
                ctx.set_host_state(host.name, HostState.IN_MAINTENANCE)
                ctx.notify_host(host.name, "IN_MAINTENANCE")
            elif name == "disable":
                if view.enabled:
                    ctx.submit(
                        DisableHost(host.name, reason=f"maintenance session {ctx.session_id}")
                    )
                    self._set_stage(ctx, host.name, index | flags | BUSY)
                    return
            elif name.startswith("action:"):
                spec = specs[int(name.partition(":")[2])]
                ctx.submit(RunAction(spec, f"host:{host.name}", host.name))
                self._set_stage(ctx, host.name, index | flags | BUSY)
                return
            elif name == "host_up":
                ctx.submit(HostUp(host.name))
                self._set_stage(ctx, host.name, index | flags | BUSY)
                return
            elif name == "enable":
                if flags & WE_DISABLED:
                    ctx.submit(EnableHost(host.name))
                    self._set_stage(ctx, host.name, index | flags | BUSY)
                    return
            elif name == "decommission":
                ctx.set_host_state(
                    host.name, HostState.DECOMMISSIONED, reason="decommissioned: left disabled"
                )
                ctx.host_done(host.name)
                flags &= ~WE_DISABLED  # never enabled again, also not on failure
            elif name == "notify_complete":
                ctx.set_host_state(host.name, HostState.MAINTAINED)
                ctx.host_done(host.name)
                ctx.notify_host(host.name, "MAINTENANCE_COMPLETE")
            index += 1
        self._set_stage(ctx, host.name, index | flags)

    def _wave_op(self, ctx: SessionContext, op: Any) -> bool:
        """Whether the operation is the waves' (not the controllers' rolling part)."""
        if isinstance(op, Move | Watch):
            inst = ctx.instances.get(op.instance_id)
            host = ctx.hosts.get(inst.host) if inst is not None else None
            st = ctx.state_of(RollingState)
            return host is not None and host.type == "compute" and st.drain_host is None
        if isinstance(op, Inventory):
            if len(op.hosts) != 1:
                return False
            view = ctx.hosts.get(op.hosts[0])
            return view is not None and view.type == "compute" and bool(view.stage & BUSY)
        if isinstance(op, DisableHost | EnableHost | HostUp | RunAction) and op.host is not None:
            view = ctx.hosts.get(op.host)
            return (
                view is not None
                and view.type == "compute"
                and bool(view.stage & (BUSY | DISABLING))
            )
        return False

    def _wave_host_op_ended(self, ctx: SessionContext, op: Any, result: OpResult) -> None:
        host: str = op.hosts[0] if isinstance(op, Inventory) else op.host
        view = ctx.hosts.get(host)
        assert view is not None
        ok = result.status == OpStatus.DONE
        flags, index = view.stage & ~_STAGE, view.stage & _STAGE
        if view.state in (HostState.SKIPPED, HostState.REMOVED):
            self._set_stage(ctx, host, index | (flags & ~(BUSY | DISABLING)))
            return
        if isinstance(op, DisableHost) and flags & DISABLING:
            flags &= ~DISABLING
            if not ok:
                self._set_stage(ctx, host, index | flags)
                self._host_failed(ctx, host, f"disable host on {host} failed: {result.detail}")
                return
            self._set_stage(ctx, host, index | flags | WE_DISABLED)
            return
        flags &= ~BUSY
        if not ok and isinstance(op, HostUp):
            why = f"host {host} did not come back after maintenance: {result.detail}"
            self._set_stage(ctx, host, index | (flags & ~WE_DISABLED))  # left disabled
            ctx.set_host_state(host, HostState.FAILED, reason=why + "; left disabled")
            ctx.fail(why)
            return
        if not ok:
            what = (
                f"{op.spec.type} action {op.spec.plugin!r} failed on {host}"
                if isinstance(op, RunAction)
                else f"{type(op).__name__} on {host} failed"
            )
            self._set_stage(ctx, host, index | flags)
            self._host_failed(ctx, host, f"{what}: {result.detail}")
            return
        if isinstance(op, DisableHost):
            flags |= WE_DISABLED
        elif isinstance(op, EnableHost):
            flags &= ~WE_DISABLED
        self._set_stage(ctx, host, (index + 1) | flags)
        fresh = ctx.hosts.get(host)
        assert fresh is not None
        self._run_wave_host(ctx, fresh)

    def _wave_ended_later(
        self, ctx: SessionContext, st: RollingState, op: Any, result: OpResult
    ) -> None:
        """After the end: keep the records right, decide nothing."""
        if isinstance(op, Move | Watch):
            self._wave_move_ended(ctx, st, op, result)
            return
        host: str = op.hosts[0] if isinstance(op, Inventory) else op.host
        view = ctx.hosts.get(host)
        if view is None:
            return
        flags, index = view.stage & ~_STAGE, view.stage & _STAGE
        flags &= ~(BUSY | DISABLING)
        if result.status == OpStatus.DONE and isinstance(op, DisableHost):
            flags |= WE_DISABLED
        elif isinstance(op, EnableHost):
            flags &= ~WE_DISABLED  # enabled again (or it failed: not tried twice)
        elif result.status != OpStatus.DONE and isinstance(op, HostUp):
            flags &= ~WE_DISABLED  # did not come back: left disabled
        self._set_stage(ctx, host, index | flags)

    def _after(self, ctx: SessionContext, st: RollingState) -> None:
        was_ended = st.ended
        super()._after(ctx, st)
        if ctx.session.state not in _FINAL or ctx.session.state == SessionState.MAINTENANCE_DONE:
            return
        if not was_ended:
            cst = ctx.state_of(ConstrainedState)
            ctx.cancel_timer("waves")
            for iid, _attempts, _refused in cst.retrying:
                ctx.cancel_timer(f"retry_move:{iid}")
            cst.retrying, cst.wake = (), None
        # Enable again every host this session disabled in the waves, once
        # nothing runs on it (after the end: a pass over the hosts per step).
        for host in ctx.hosts:
            if not host.stage & WE_DISABLED or host.stage & (BUSY | DISABLING):
                continue
            if host.state in NOT_ENABLED_AGAIN or host.enabled:
                self._set_stage(ctx, host.name, host.stage & ~WE_DISABLED)
                continue
            ctx.submit(EnableHost(host.name))
            self._set_stage(ctx, host.name, host.stage | BUSY)

    # ------------------------------------------------------------------ questions

    def _ask(self, ctx: SessionContext, step: _Step, cst: ConstrainedState) -> None:
        """Tell the projects about instances on open hosts not asked yet."""
        cs = step.cs
        fresh: dict[str, list[InstanceView]] = {}
        # The draining hosts that may hold instances not asked about: those
        # opened or landed on since, and those whose projects still owe an answer.
        unasked, blocked = step.counts.unasked, step.counts.blocked
        waits: dict[str, bool] = {}  # per project: managed and awaiting an answer

        def awaiting(project_id: str) -> bool:
            found = waits.get(project_id)
            if found is None:
                project = ctx.projects.get(project_id)
                found = waits[project_id] = (
                    project is not None and project.managed and bool(project.awaiting)
                )
            return found

        for host in self._by_position(ctx, unasked):
            draining = host.state == HostState.DRAINING
            held_by = blocked.get(host.name)
            if held_by is not None:
                if draining and all(awaiting(p) for p in held_by):
                    continue  # its instances wait for those answers (skipped below)
                del blocked[host.name]
            projects: set[str] = set()
            if draining:
                for inst in ctx.instances.on(host.name):
                    if inst.state == InstanceState.PENDING:
                        fresh.setdefault(inst.project_id, []).append(inst)
                        projects.add(inst.project_id)
            if not projects:
                unasked.discard(host.name)
            elif all(awaiting(p) for p in projects):
                blocked[host.name] = frozenset(projects)
        if not fresh:
            return
        wave = cst.wave + 1
        asked: dict[str, list[InstanceView]] = {}
        for project_id, insts in sorted(fresh.items()):
            project = ctx.projects.get(project_id)
            managed = project is not None and project.managed
            if managed and project is not None and project.awaiting:
                continue  # asked already; these wait for the answer
            if managed and any(cs.instance(i.instance_id, i.project_id) for i in insts):
                # Fenix's ETSI workflow asked about one instance at a time, and
                # the managers written for it (OPNFV Doctor's VNFM, Tacker) act
                # on instance_ids[0] only: the others wait for the next question.
                insts = insts[:1]
            for inst in insts:
                own = cs.instance(inst.instance_id, inst.project_id)
                lead = own.lead_time if own is not None else 0
                not_before = ctx.now + timedelta(seconds=lead) if lead else None
                self._plan(ctx, step.counts, inst, wave if managed else None, not_before)
                if managed:
                    ctx.set_instance_state(inst.instance_id, InstanceState.ACTION_REQUESTED)
                else:
                    ctx.set_instance_state(
                        inst.instance_id,
                        InstanceState.ACTION_CHOSEN,
                        action=self._action_for(ctx, inst, cs, managed=False),
                    )
            if managed:
                asked[project_id] = insts
        if not asked:
            return
        cst.wave = wave
        cst.stamp = step.counts.stamp = _new_stamp()  # the waves asked changed
        for project_id, insts in asked.items():
            # Each project hears only of its own instances, with the action the
            # engine proposes for each from its constraints (it may answer
            # with another one).
            proposed = {i.instance_id: self._action_for(ctx, i, cs, managed=True) for i in insts}
            # A lead time holds the moves (not_before): the notice says when.
            held = [p.not_before for i in insts if (p := ctx.instances.get(i.instance_id))]
            self.ask_projects(
                ctx,
                _ASKED,
                {project_id: [i.instance_id for i in insts]},
                allowed_actions=allowed_actions(ctx),
                metadata={**ctx.request.metadata, "proposed_actions": proposed},
                actions_at=max((t for t in held if t is not None), default=None),
            )

    def _action_for(
        self, ctx: SessionContext, inst: InstanceView, cs: ConstraintSet, *, managed: bool
    ) -> str:
        """How to move an instance (:func:`fenix_core.constraints.move_action`)."""
        allowed = allowed_actions(ctx)
        own = cs.instance(inst.instance_id, inst.project_id)
        found = move_action(own, allowed, live_migratable=inst.live_migratable, managed=managed)
        return found if found is not None else default_action(inst.live_migratable, allowed)

    # ------------------------------------------------------------------ moves

    def _pump(self, ctx: SessionContext, step: _Step, cst: ConstrainedState) -> bool:
        """Start every move the groups, targets and capacity allow now; True
        if the pipeline holds the moves (a pause)."""
        now = ctx.now
        budgets = step.budgets(cst)
        # The instances that may start now; made members for the planner
        # only when a group of theirs may lose one (most passes none may).
        ready: list[InstanceView] = []
        # Of whom ``ready`` is made, in its order: a host's whole chosen list
        # (its members kept with it: :meth:`_Draining.members_of`), or
        # instances of a host with None.
        ready_from: list[tuple[str | None, list[InstanceView]]] = []
        views: dict[str, InstanceView] = {}
        own_actions: list[InstanceView] = []
        wake: datetime | None = None
        held = False
        refused = {iid: frozenset(r) for iid, _a, r in cst.retrying if r}
        # The draining hosts with instances whose action is chosen, and those
        # that may still have to be disabled: the others have nothing to do.
        # (An instance whose action is chosen on a host that no longer
        # drains has nothing to do either: only the draining hosts' are kept.)
        kept = step.draining()
        chosen_on = kept.chosen_on()
        undisabled = step.counts.undisabled
        admission = _Admission(ctx)
        # A host whose view and chosen list are those it had when last found
        # disabled, in flight and with all its chosen startable is that
        # still, but for what is bound for it now and a pause (most hosts;
        # both read once a pass: :meth:`_Step.arrivals`, :class:`_Admission`).
        steady = kept.steady
        for host in self._by_position(ctx, undisabled.union(chosen_on)):
            name = host.name
            chosen = chosen_on.get(name)
            last = steady.get(name)
            if (
                last is not None
                and last[0] is host
                and last[1] is chosen
                and name not in step.arrivals()
                and admission.admitted(host)
            ):
                undisabled.discard(name)
                ready.extend(last[1])
                ready_from.append((name, last[1]))
                views.update(last[2])
                continue
            steady.pop(name, None)
            if host.state != HostState.DRAINING:
                undisabled.discard(name)
                continue
            if not self._disabled_for_drain(ctx, host, step):
                continue  # nothing leaves a host before it is disabled
            undisabled.discard(name)
            if not chosen:
                continue
            if not admission.admitted(host):
                held = True  # paused: moves in flight end, no new one starts
                continue
            startable = kept.startable(name, chosen)
            if startable is not None:  # (most hosts: no loop)
                if host.in_flight:
                    steady[name] = (host, chosen, startable)
                ready.extend(chosen)
                ready_from.append((name, chosen))
                views.update(startable)
                continue
            start = len(ready)
            for inst in chosen:
                if inst.not_before is not None and inst.not_before > now:
                    wake = inst.not_before if wake is None else min(wake, inst.not_before)
                    continue
                if inst.action == InstanceAction.OWN_ACTION:
                    own_actions.append(inst)
                else:
                    ready.append(inst)
                    views[inst.instance_id] = inst
            if len(ready) > start:
                ready_from.append((None, ready[start:]))
        for inst in own_actions:
            g = step.group(inst)
            if budgets.get(g, 0) > 0:
                budgets.take(g)
                ctx.submit(Watch(inst.instance_id))
        if (
            ready
            and self._any_may_start(step, budgets, ready)
            and not self._same_empty_placement(
                step, budgets, ready, inputs := self._placement_inputs(ctx, ready)
            )
        ):
            waiting = kept.members_of(ready_from, step.members)
            # Place the members whose groups may lose one more now, in
            # planner.completion_order: a member that moved once first (it
            # goes only where it stays, the others may still go elsewhere),
            # then those of the host with least left to move, so that hosts
            # empty one by one, come back and take instances for good soonest
            # (placing every waiting member largest first gave the room to
            # members whose groups could not move, and spread each group's
            # budget over every open host: the first host came back at 907 s
            # instead of 630 s on the reference scenario).
            ahead = step.counts.ahead()
            # The members of the draining hosts that cannot start yet are
            # placed too, in their turn (not moved): the room they will need
            # is not given to a member after them.
            kept = step.draining()
            later = self._not_startable(kept, views)
            # Everyone placed (those that may start and ``later``: the
            # draining hosts' held instances), read per host from what is
            # kept of each (:class:`_HeldOn`): where each is, which moved
            # before, each host's members and vcpus, worked out again only
            # for the hosts whose instances changed. Then per host whether it
            # was opened in the first wave (looked up once) and the vcpus it
            # has left to move (the first drained hosts' members aside).
            held_on = kept.held_by_host(step.members, step.limited)
            # (In no particular order: the completion order is the same
            # whatever order its members come in.)
            on_host = {name: on.members for name, on in held_on.items()}
            # The groups still to come too: the placement keeps room for
            # them by their per-host limit. Their rules are needed only when
            # one of them has one (most placements: none has). Those of the
            # held instances' groups are kept (a pass scanned them all, at
            # 300 hosts hundreds of groups).
            limited = bool(kept.held_limited) or step.any_limited(
                dict.fromkeys(chain(map(_GROUP_OF, waiting), ahead))
            )
            groups = (
                dict.fromkeys(chain(map(_GROUP_OF, waiting), kept.held_groups, ahead))
                if limited
                else {}
            )
            rules = {g: step.rule(g) for g in groups}
            # (The host each held instance is kept under is the one its view
            # names; nothing changes the kept instances before the moves are
            # sent, at the end of the pass.)
            host_of = kept.where
            moved = set().union(*(on.moved for on in held_on.values()))
            first: set[str] = set()
            first_drained: dict[str, bool] = {}
            left_on: dict[str, int] = {}
            vcpus_on: dict[str, int] = {}
            for name, on in held_on.items():
                h = ctx.hosts.get(name)
                on_first = first_drained[name] = h is not None and bool(h.stage & FIRST_DRAINED)
                vcpus_on[name] = on.vcpus
                if on_first:
                    first.update(on.ids)
                else:
                    left_on[name] = on.vcpus
            # The window is built only when a member may start (below); the
            # room where instances stay is read from the capacity index when
            # one instance stands for the window, else from its hosts.
            window: list[tuple[HostView, bool]] | None = None
            # (Without placement rules the sample is the least instance of
            # each host type: among the least of each host.)
            sample = self._window_sample(  # read once
                ctx,
                step,
                chain.from_iterable(on.views for on in held_on.values())
                if step.counts.any_ruled
                else (on.least for on in held_on.values()),
            )
            stay_room = self._window_stay_room(ctx, step, sample)
            if stay_room is None:
                window = self._window(ctx, step, sample)
                free_of = ctx.capacity.free
                stay_room = sum(max(0, free_of(view.name)) for view, stays in window if stays)
            # A host opened ahead of its room (_open_ahead): its members take
            # only what the others leave, the longest chains' first, and the
            # others keep the room they need while their groups wait. (The
            # first drained hosts' members may go where they do not stay.)
            behind = planner.hosts_beyond_room(left_on, stay_room)
            work: dict[str, float] = {}
            for name in behind:
                for g in held_on[name].groups:  # (in the order of its members)
                    if g not in work:
                        work[g] = self._weight(step, g)
            left = {g: budgets.get(g, 0) for g in dict.fromkeys(map(_GROUP_OF, waiting))}
            reserve = bool(behind) and limited
            # The first wave's partial last host: only the first of its
            # members in the order, as many as it may still move twice.
            partial = cst.partial if cst.partial and first_drained.get(cst.partial) else None
            allowance = cst.partial_twice
            # (The hosts keep their place: it is by the vcpus of all their
            # members, vcpus_on.)
            order = planner.completion_order_by_host(
                self._may_be_placed(on_host, left, later, limited, behind, partial),
                vcpus_on,
                moved=moved,
                behind=behind,
                work=work,
            )
            if behind and not reserve:
                # Counted, not placed: without a per-host limit, the room is
                # all that the other hosts' members need kept.
                order = planner.left_over_room(
                    order,
                    host_of=host_of,
                    behind=behind,
                    budgets=left,
                    room=stay_room
                    - sum(vcpus for name, vcpus in vcpus_on.items() if name not in behind),
                )
            order = self._up_to_last_startable(order, left, later, limited, host_of, partial)
            step.counts.empty_placement = None if order else (inputs, left)

            def place(targets: list[planner.Target], waiting_makes_room: bool) -> dict[str, str]:
                twice: set[str] = set()
                spent = 0
                # When no member off the first drained hosts may move twice
                # (waiting makes room), those, most of the order, are not
                # weighed one by one.
                others_may = any(
                    second_moves.may_move_twice(
                        moved_before=before,
                        first_drained=False,
                        waiting_makes_room=waiting_makes_room,
                    )
                    for before in (False, True)
                )
                weighed = order if others_may else [m for m in order if m.instance_id in first]
                for m in weighed:
                    on_first = m.instance_id in first
                    if on_first and partial is not None and host_of[m.instance_id] == partial:
                        on_first = spent < allowance
                        spent += on_first
                    if second_moves.may_move_twice(
                        moved_before=m.instance_id in moved,
                        first_drained=on_first,
                        waiting_makes_room=waiting_makes_room,
                    ):
                        twice.add(m.instance_id)
                moves, _blocked = planner.assign_moves(
                    order,
                    left,
                    targets,
                    rules,
                    twice=twice,
                    ahead=ahead,
                    held=later,
                    reserve=reserve,
                    keeps=keeps,
                )
                return dict(moves)

            # No member may start (on a full cloud, most passes while a host
            # opened ahead waits for room): no target to build, nothing to
            # place, nothing to sort.
            plan: dict[str, str] = {}
            if order:
                if window is None:
                    window = self._window(ctx, step, sample)
                targets = step.targets(window)
                keeps = self._keeps_draining(ctx, step, targets)
                plan = place(targets, True)
                if not plan and not self._waiting_makes_room(ctx, step, cst):
                    plan = place(targets, False)  # waiting would not make room: no limit
            if plan:
                queued = {t.host for t in targets if not t.stays}
                weights: dict[str, float] = {}  # each group's weight worked out once

                def by_weight(m: planner.Member) -> tuple[float, int, str]:
                    weight = weights.get(m.group_id)
                    if weight is None:
                        weight = weights[m.group_id] = self._weight(step, m.group_id)
                    return (-weight, -m.vcpus, m.instance_id)

                # Only the members placed are sorted (the key names each
                # member: the same order as sorting them all, without the
                # weights of the groups of those left waiting).
                placed = [m for m in waiting if m.instance_id in plan]
                placed.sort(key=by_weight)
                for m in placed:
                    target = plan[m.instance_id]
                    if budgets.get(m.group_id, 0) <= 0:
                        continue
                    budgets.take(m.group_id)
                    inst = views[m.instance_id]
                    action = inst.action or default_action(
                        inst.live_migratable, allowed_actions(ctx)
                    )
                    no = refused.get(inst.instance_id, frozenset())
                    # A target the cloud refused in this move is not asked for again:
                    # its scheduler chooses (its own placement rules hold).
                    goal = None if target in no else target
                    why = None
                    if goal is not None and goal in queued:
                        # Said in the plan: it lands on a host it will leave again.
                        why = second_moves.why_again(
                            moved_before=m.instance_id in moved,
                            first_drained=m.instance_id in first,
                            wave=cst.first_wave,
                        )
                        if partial is not None and inst.host == partial and not inst.moves:
                            self._spend_partial(ctx, cst)
                    ctx.submit(Move(inst.instance_id, instance_action(action), goal, no, why))
        ends = self._recovery(ctx, step, cst).next_end(ctx)
        if ends is not None:
            wake = ends if wake is None else min(wake, ends)
        self._wake_at(ctx, cst, wake)
        return held

    def _keeps_draining(
        self, ctx: SessionContext, step: _Step, targets: Sequence[planner.Target]
    ) -> Callable[[Sequence[tuple[str, str]]], bool] | None:
        """Whether the draining hosts, then the pending ones, can still all
        be emptied once the given moves (instance, target) are sent: the dry
        run that let the hosts open (:meth:`_open_hosts`' ``feasible``), read
        from the views as they are now, with the moves' members on their
        targets. The waves place members as their groups let them move,
        where the dry run had placed them all its own way: a target it kept
        for a member of an anti-affine or per-host-limited group could be
        filled first, and the session failed half-way (tests/
        constrained_layouts.py, ONCE_DEAD_ENDS). A move is run through the
        dry run only when the room where instances stay (on ``targets``, the
        placement's) is short of what the draining hosts hold, or
        when it takes on its target a place a limited member still to move
        could take (:func:`planner.takes_a_place`): the others keep every
        limited member's hosts while the draining hosts fit where instances
        stay (the dry run at every move cost 8x the CPU of a 30-host full
        cloud with per-host limits). None (no check) where no group with a per-host limit
        has a member left to move (room alone then decides, as it did when
        the hosts opened), or while more than :data:`DRY_RUN_HOSTS` hosts
        are pending (as for the opening's dry run). The dry run of the hosts
        after the draining ones is kept per state it starts from
        (``step.counts.verdicts``): most moves checked leave the same state
        once the draining hosts are emptied."""
        if not step.counts.any_limited:
            return None
        pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
        if len(pending) > DRY_RUN_HOSTS:
            return None
        draining: list[planner.HostLoad] = []
        # Whether the room where instances stay is short of what the
        # draining hosts hold (worked out once, when read() first reads).
        short: list[bool] = []
        loads = [step.pending_load(h) for h in pending]
        members: dict[str, planner.Member] = {}
        rules: dict[str, planner.GroupRule] = {}
        # The limited members still to move, per (group, vcpus).
        still: Counter[tuple[str, int]] = Counter()
        dry: list[planner.Target] = []
        leaving: dict[str, list[planner.Member]] = {}

        def read() -> None:
            """What the check reads, once, when a placement first asks."""
            kept = step.draining()
            draining.extend(
                step.draining_load(h, kept) for h in ctx.hosts.in_state(HostState.DRAINING)
            )
            members.update((m.instance_id, m) for d in draining for m in d.members)
            rules.update(step.rules_of(chain(*(d.members for d in (*draining, *loads)))))
            still.update(
                (m.group_id, m.vcpus)
                for d in (*draining, *loads)
                for m in d.members
                if rules[m.group_id].host_limit() is not None
            )
            # (A move where instances stay takes as much room as it settles.)
            short.append(stay_room < sum(d.vcpus for d in draining))

        def read_dry() -> None:
            """The dry run's targets and the moves in flight, once, when a
            move first needs the dry run. Every host that takes instances,
            not the placement's window: a host with too little room for the
            members placed now may take a smaller instance of a host after
            them."""
            dry.extend(self._all_targets(ctx, step))
            dry.extend(step.target(h, False) for h in ctx.hosts.in_state(HostState.DRAINING))
            on = {d.host for d in draining}
            for inst in step.in_action():
                if inst.host in on and inst.target is not None and inst.target != inst.host:
                    leaving.setdefault(inst.host, []).append(step.member(inst))

        # Room where instances stay, against what the draining hosts still
        # hold: while it covers them, only a move that takes a limited
        # member's place can leave them unable to empty.
        stay_room = sum(max(0, t.free) for t in targets if t.stays and t.free is not None)
        if any(t.stays and t.free is None for t in targets):
            stay_room = 1 << 30

        def keeps(moves: Sequence[tuple[str, str]]) -> bool:
            if not short:
                read()
            placed = [(members[i], host) for i, host in moves]
            if not short[0] and not planner.takes_a_place(placed, targets, rules, still):
                return True
            if not dry:
                read_dry()
            return planner.drains_after(
                placed,
                draining,
                loads,
                dry,
                rules,
                leaving=leaving,
                verdicts=step.counts.verdicts,
            )

        return keeps

    @staticmethod
    def _placement_inputs(ctx: SessionContext, ready: list[InstanceView]) -> tuple[Any, ...]:
        """What a placement's order is worked out from, as values that
        change with it, but for the budgets: the request (the retiring
        hosts), the hosts', instances' and capacity's change numbers (the
        members, their hosts and flags, the room, the moves in flight, the
        groups' work and what waits on the pending hosts all change with
        them: the views' ``changes``, exact when another process stepped the
        session, whose load answers numbers never answered before), and the
        instances that may start (the lead times and the controls said so at
        ``now``). Read after the moves of :meth:`_pump`'s own actions are
        sent (a sent move changes the instances' number)."""
        return (
            ctx.request,
            ctx.hosts.changes(),
            ctx.instances.changes(),
            ctx.capacity.changes(),
            [inst.instance_id for inst in ready],
        )

    @staticmethod
    def _same_empty_placement(
        step: _Step, budgets: _Budgets, ready: list[InstanceView], inputs: tuple[Any, ...]
    ) -> bool:
        """Whether the last placement that worked out its order found it
        empty with these inputs and the same budgets of the groups of the
        instances that may start (the only budgets the order reads: a
        recovery that ended elsewhere changes none of them; read only when
        the rest is the same): this one would find it empty again (nothing
        to place, no move to send). Only that last one is kept, and a pass
        that finds members to start forgets it, so what a pass changes
        besides the views' numbers (a first drained host's flag as its
        second moves run out) never meets an outcome kept from before it."""
        kept = step.counts.empty_placement
        if kept is None or kept[0][0] is not inputs[0] or kept[0][1:] != inputs[1:]:
            return False
        group = step.counts.group
        left: dict[str, int] = {}
        for inst in ready:
            g = group.get(inst.instance_id) or step.group(inst)
            if g not in left:
                left[g] = budgets.get(g, 0)
        return left == kept[1]

    def _spend_partial(self, ctx: SessionContext, cst: ConstrainedState) -> None:
        """One of the partial first-wave host's second moves is taken; the
        last one makes it a host like the later ones (its other instances
        move only where they stay)."""
        cst.partial_twice -= 1
        if cst.partial_twice > 0 or cst.partial is None:
            return
        view = ctx.hosts.get(cst.partial)
        if view is not None:
            self._set_stage(ctx, view.name, view.stage & ~FIRST_DRAINED)
        cst.partial, cst.partial_twice = None, 0

    @staticmethod
    def _any_may_start(step: _Step, budgets: _Budgets, ready: Iterable[InstanceView]) -> bool:
        """Whether a group of the instances may lose one more member now
        (each group's budget looked up once: a pass reads every instance
        whose action is chosen, most of them of groups that may not)."""
        known = step.counts.group
        seen: set[str] = set()
        for inst in ready:
            g = known.get(inst.instance_id)
            if g is None:
                g = step.group(inst)
            if g in seen:
                continue
            if budgets.get(g, 0) > 0:
                return True
            seen.add(g)
        return False

    @staticmethod
    def _may_be_placed(
        on_host: Mapping[str, Sequence[planner.Member]],
        budgets: Mapping[str, int],
        held: Container[str],
        limited: bool,
        behind: Container[str],
        partial: str | None,
    ) -> Mapping[str, Sequence[planner.Member]]:
        """Each host's members less those :meth:`_up_to_last_startable`
        leaves out wherever they come in the order (neither may start nor
        are held), left out before the order is sorted: at 1,000 hosts most
        of the draining hosts' members. Those of the hosts ``behind`` are
        all kept (``planner.left_over_room`` counts the room left over
        through them, their groups waiting or not), and so are the
        ``partial`` host's. Whole when a group has a per-host limit
        (``limited``)."""
        if limited:
            return on_host
        return {
            host: members
            if host in behind or host == partial
            else [m for m in members if m.instance_id in held or budgets[m.group_id] > 0]
            for host, members in on_host.items()
        }

    @staticmethod
    def _up_to_last_startable(
        order: list[planner.Member],
        budgets: Mapping[str, int],
        held: Container[str],
        limited: bool,
        host_of: Mapping[str, str],
        partial: str | None,
    ) -> list[planner.Member]:
        """``order`` as ``planner.assign_moves`` reads it, without reserve:
        up to its last member that may start (not held, its group with
        budget left), since it moves none after it and places the held ones
        after it only for those behind them; and before that, without the
        members that neither may start nor are held (their group may lose
        no more now: it passes over them; at 1,000 hosts most of the order)
        but those of the first wave's ``partial`` host (each one counts
        against the host's second moves, startable or not). Whole when a
        group has a per-host limit (``limited``): its members anywhere in
        the order say what the placement keeps room for (``ahead``)."""
        if limited:
            return order
        kept: list[planner.Member] = []
        end = 0
        for m in order:
            if m.instance_id not in held and budgets.get(m.group_id, 0) > 0:
                kept.append(m)
                end = len(kept)
            elif m.instance_id in held or host_of[m.instance_id] == partial:
                kept.append(m)
        del kept[end:]
        return kept

    @staticmethod
    def _not_startable(kept: _Draining, views: Mapping[str, InstanceView]) -> set[str]:
        """The instances of the draining hosts that will leave by a move but
        cannot start now (not asked or answered yet, their lead time, their
        host not disabled yet): those ``kept`` holds (an instance its
        manager moves is not the engine's to place) less those in ``views``
        (those that may start, all held)."""
        return kept.held.keys() - views.keys()

    @staticmethod
    def _by_position(ctx: SessionContext, names: Iterable[str]) -> list[HostView]:
        """The views of the hosts named, in position order (those that are)."""
        views = [v for n in names if (v := ctx.hosts.get(n)) is not None]
        views.sort(key=_POSITION)
        return views

    def _disabled_for_drain(self, ctx: SessionContext, host: HostView, step: _Step) -> bool:
        """Disable ``host`` before the first instance leaves it (no new
        instance lands on a host being emptied). True once it is disabled
        and no move sent to it while it was a target is still on its way."""
        if host.stage & DISABLING:
            return False
        if host.name in step.arrivals():
            return False  # sent while it was a target: they land first, then leave
        if host.enabled:
            ctx.submit(DisableHost(host.name, reason=f"maintenance session {ctx.session_id}"))
            self._set_stage(ctx, host.name, host.stage | DISABLING)
            return False
        return True

    def _impacted(self, ctx: SessionContext, step: _Step, cst: ConstrainedState) -> _Impacted:
        """Members of each group impacted now: moving, or within recovery_time
        after a move (read from the views: the moves in flight and the
        instances in recovery, not the groups)."""
        recovery = self._recovery(ctx, step, cst)
        # The moving per group are kept (a few hundred moves at 1,000
        # hosts, a few of which start or end between two passes), less
        # those in recovery: moving again while in recovery, counted once.
        kept = step.draining()
        moving = dict(kept.moving_per_group(step.group))  # (a copy: this pass's)
        for iid in recovery.group_of.keys() & kept.moving.keys():
            _count_down(moving, kept.moving_group[iid])
        return _Impacted(recovery.by_group, moving)

    def _recovery(self, ctx: SessionContext, step: _Step, cst: ConstrainedState) -> _Recovery:
        """The instances still in their group's recovery_time, those whose
        recovery ended taken out."""
        found = self._recovering(ctx, step, cst)
        for iid in found.ended(ctx, ctx.now):
            found.drop(iid)
        return found

    @staticmethod
    def _recovering(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> _Recovery:
        """The instances in recovery as last read (those whose recovery ended
        since are taken out by :meth:`_recovery`); built from the instances'
        ``impacted_until`` when this process has not mirrored every recovery
        started (another process stepped the session, or the counts were
        built again): one pass over the session's instances."""
        counts = step.counts
        found = counts.recovery
        if found is None or found.source != cst.recoveries:
            found = counts.recovery = _Recovery(cst.recoveries)
            now = ctx.now
            for state in InstanceState:
                for view in ctx.instances.in_state(state):
                    until = view.impacted_until
                    if until is not None and until > now:
                        found.add(view.instance_id, step.group(view), until)
        return found

    def _waiting_makes_room(self, ctx: SessionContext, step: _Step, cst: ConstrainedState) -> bool:
        """Whether something under way may yet make room where instances stay:
        a host being maintained, a move, a group's recovery_time."""
        if (
            ctx.instances.in_state(InstanceState.IN_ACTION)
            or self._recovering(ctx, step, cst).group_of
        ):
            return True
        for host in ctx.hosts.in_state(*_OPEN):
            if host.type != "compute":
                continue
            if host.state != HostState.DRAINING or not self._in_scope_on(ctx, host.name):
                return True
        return False

    def _wave_move_ended(
        self, ctx: SessionContext, st: RollingState, op: Move | Watch, result: OpResult
    ) -> None:
        inst = ctx.instances.get(op.instance_id)
        if inst is None:
            return
        cst = ctx.state_of(ConstrainedState)
        origin = ctx.hosts.get(inst.host)
        ok = result.status == OpStatus.DONE
        if not ok and (origin is None or origin.state in (HostState.SKIPPED, HostState.REMOVED)):
            self._forget_retry(cst, op.instance_id)
            if inst.state == InstanceState.IN_ACTION:
                left = origin is not None and origin.state == HostState.SKIPPED
                ctx.set_instance_state(
                    op.instance_id, InstanceState.FAILED if left else InstanceState.PENDING
                )
            return
        if not ok and ctx.session.state in _FINAL:
            if inst.state == InstanceState.IN_ACTION:
                ctx.set_instance_state(op.instance_id, InstanceState.PENDING)
            return
        if not ok and isinstance(op, Watch):
            ctx.set_instance_state(op.instance_id, InstanceState.FAILED)
            ctx.fail(
                f"instance {op.instance_id} of project {inst.project_id} was not moved off "
                f"its host by its manager (OWN_ACTION): {result.detail}"
            )
            return
        if not ok:
            assert isinstance(op, Move)
            self._wave_move_failed(ctx, cst, op, inst, result)
            return
        self._forget_retry(cst, op.instance_id)
        if result.result.get("gone"):
            ctx.set_instance_state(op.instance_id, InstanceState.GONE)
        else:
            where = ctx.hosts.get(inst.host)
            stays = where is not None and where.state in STAYS
            ctx.set_instance_state(
                op.instance_id, InstanceState.DONE if stays else InstanceState.PENDING
            )
        counts = self._counts_of(ctx)
        step = _Step(self, ctx, counts)
        g = step.group(inst)
        recovery = float(step.rule(g).recovery_time)
        moved = ctx.instances.get(op.instance_id)
        assert moved is not None
        if recovery > 0:
            until = ctx.now + timedelta(seconds=recovery)
            ctx.set_instance_plan(
                op.instance_id, wave=moved.wave, not_before=None, impacted_until=until
            )
            mirrored = counts.recovery
            if mirrored is not None and mirrored.source == cst.recoveries:
                mirrored.add(op.instance_id, g, until)
                mirrored.source = cst.recoveries + 1
            cst.recoveries += 1
        # The per-group counts: one member less to do, or one more on a pending
        # host (an instance still on an open host did not leave it).
        dest = ctx.hosts.get(moved.host)
        counts.pending_loads.pop(moved.host, None)  # one more member waits there
        if moved.state == InstanceState.GONE or dest is None or dest.state not in _OPEN:
            counts.refed.add(g)
            if moved.state == InstanceState.GONE or dest is None or dest.state != HostState.PENDING:
                counts.todo[g] -= 1
            else:
                counts.pending_hosts_of.setdefault(g, set()).add(moved.host)
                counts.pending_member(g, moved.vcpus, step.limited(g), +1)
                counts.parked.add(moved.host)
                if dest.type == "compute":  # its load is worked out when it is the lightest
                    heapq.heappush(counts.pending_floor, (0, moved.host))
            cst.stamp = counts.stamp = _new_stamp()
        elif dest.state == HostState.DRAINING and moved.state == InstanceState.PENDING:
            # Sent while it was a target: it lands, is asked about, and leaves.
            counts.unasked.add(moved.host)
            counts.blocked.pop(moved.host, None)
            cst.stamp = counts.stamp = _new_stamp()
        if ctx.session.state in _FINAL:
            return
        if self._managed(ctx, inst.project_id):
            ctx.notify_project(inst.project_id, "INSTANCE_ACTION_DONE", [op.instance_id])
        self._admin_action_done(ctx, cst, counts, moved)

    def _wave_move_failed(
        self,
        ctx: SessionContext,
        cst: ConstrainedState,
        op: Move,
        inst: InstanceView,
        result: OpResult,
    ) -> None:
        entry = next((e for e in cst.retrying if e[0] == op.instance_id), None)
        attempts = entry[1] if entry else 0
        refused = set(entry[2]) if entry else set()
        if result.result.get("refused") and op.target is not None:
            # The cloud refused the host (no room, its rules), nothing was
            # started: not an attempt. The host is listed again, so that what
            # filled it (another session, a tenant) counts in the next plan.
            refused.add(op.target)
            self._relist_refused(ctx, op.target)
        elif (
            result.result.get("refused")
            and cst.waited < MAX_WAIT_ROUNDS
            and self._out_of_service_elsewhere(ctx)
        ):
            # Its scheduler found no host while another session maintains one
            # outside this session: its room comes back; not an attempt.
            cst.waited += 1
        else:
            attempts += 1
        ctx.set_instance_state(op.instance_id, InstanceState.ACTION_CHOSEN)
        if attempts <= ctx.request.max_migration_retries:
            due = ctx.now + retry_delay(attempts + cst.waited, f"{ctx.session_id}:{op.instance_id}")
            self._forget_retry(cst, op.instance_id)
            cst.retrying = (*cst.retrying, (op.instance_id, attempts, tuple(sorted(refused))))
            # Not moved again before its back-off: the waves wake up for it.
            ctx.set_instance_plan(
                op.instance_id, wave=inst.wave, not_before=due, impacted_until=inst.impacted_until
            )
            self._wake_at(ctx, cst, due)
            return
        self._forget_retry(cst, op.instance_id)
        ctx.set_instance_state(op.instance_id, InstanceState.FAILED)
        ctx.fail(
            f"{op.action} of instance {op.instance_id} from {inst.host} failed after "
            f"{attempts} attempt(s): {result.detail}"
        )

    @staticmethod
    def _relist_refused(ctx: SessionContext, host: str) -> None:
        """List what runs on a refused target now (the engine applies it to
        the session's facts). Only a host the waves never drain: the listing
        must not be taken for a drained host's own."""
        view = ctx.hosts.get(host)
        if view is not None and view.state in STAYS:
            ctx.submit(Inventory((host,)))

    @staticmethod
    def _forget_retry(cst: ConstrainedState, instance_id: str) -> None:
        if any(e[0] == instance_id for e in cst.retrying):
            cst.retrying = tuple(e for e in cst.retrying if e[0] != instance_id)

    def _admin_action_done(
        self, ctx: SessionContext, cst: ConstrainedState, counts: _Counts, inst: InstanceView
    ) -> None:
        """ADMIN_ACTION_DONE to a project once every instance it was asked
        about in one wave has moved."""
        wave = inst.wave
        if wave is None:
            return
        ids = sorted(self._asked_of(ctx, counts, inst.project_id).get(wave, ()))
        asked = [v for i in ids if (v := ctx.instances.get(i)) is not None and v.wave == wave]
        if any(i.state in (*_WAITING, InstanceState.IN_ACTION) for i in asked):
            return
        for i in asked:
            self._plan(ctx, counts, i, None, i.not_before)
        cst.stamp = counts.stamp = _new_stamp()  # the waves asked changed
        if self._managed(ctx, inst.project_id):
            ctx.notify_project(
                inst.project_id, "ADMIN_ACTION_DONE", sorted(i.instance_id for i in asked)
            )

    @staticmethod
    def _asked_of(ctx: SessionContext, counts: _Counts, project_id: str) -> dict[int, list[str]]:
        """The project's open waves (``_Counts.asked``), read from its
        instances the first time."""
        found = counts.asked.get(project_id)
        if found is None:
            found = counts.asked[project_id] = {}
            for inst in ctx.instances.of(project_id):
                if inst.wave is not None:
                    found.setdefault(inst.wave, []).append(inst.instance_id)
        return found

    @staticmethod
    def _plan(
        ctx: SessionContext,
        counts: _Counts,
        inst: InstanceView,
        wave: int | None,
        not_before: datetime | None,
    ) -> None:
        """Set the instance's wave and lead time (its recovery kept), and
        ``counts.asked`` with them."""
        waves = counts.asked.get(inst.project_id)
        if waves is not None and inst.wave != wave:
            if inst.wave is not None:
                left = waves.get(inst.wave)
                if left is not None and inst.instance_id in left:
                    left.remove(inst.instance_id)
                    if not left:
                        del waves[inst.wave]
            if wave is not None:
                waves.setdefault(wave, []).append(inst.instance_id)
        ctx.set_instance_plan(
            inst.instance_id, wave=wave, not_before=not_before, impacted_until=inst.impacted_until
        )

    # ------------------------------------------------------------------ opening hosts

    def _open(self, ctx: SessionContext, step: _Step, cst: ConstrainedState) -> tuple[bool, bool]:
        """Open the pending hosts that give idle groups work: (any opened,
        the pipeline held one). A decision whose inputs are those of the
        last one, which opened nothing and changed nothing, is not made
        again (most steps at 300 hosts and more, while the room where
        instances stay is short)."""
        counts = step.counts
        inputs = self._opening_inputs(ctx, step, cst)
        if inputs == counts.opened_nothing and inputs[0] is ctx.request:
            return False, False
        found = self._open_hosts(ctx, step, cst)
        # Kept only when it changed nothing the inputs do not show: no
        # number moved, and the waves' state is as it was (a first wave's
        # decision that opened nothing still sets its partial host).
        kept = found == (False, False) and self._opening_inputs(ctx, step, cst) == inputs
        counts.opened_nothing = inputs if kept else None
        return found

    def _opening_inputs(
        self, ctx: SessionContext, step: _Step, cst: ConstrainedState
    ) -> tuple[Any, ...]:
        """What an opening decision reads, as values that change with it:
        the request (the parallel hosts, the controls, the retiring hosts),
        the hosts', instances' and capacity's change numbers (the draining
        and pending hosts and their members, the room, the moves in flight,
        the groups' work: the views' ``changes``, exact when another process
        stepped the session), whether instances are in recovery (what
        waiting may yet free) and the waves' state it writes."""
        return (
            ctx.request,
            ctx.hosts.changes(),
            ctx.instances.changes(),
            ctx.capacity.changes(),
            bool(self._recovering(ctx, step, cst).group_of),
            cst.partial,
            cst.partial_twice,
            cst.first_wave,
            cst.stamp,
        )

    def _open_hosts(
        self, ctx: SessionContext, step: _Step, cst: ConstrainedState
    ) -> tuple[bool, bool]:
        """:meth:`_open`'s decision, made."""
        if self._none_left_to_open(ctx):
            return False, False
        open_now = len(ctx.hosts.in_state(*_OPEN, type="compute"))
        cap = ctx.request.max_parallel_hosts
        slots = (cap - open_now) if cap is not None else len(ctx.hosts)
        if slots <= 0:
            return False, False
        may, left_over = self._may_open(ctx, step, cst)
        if not may:
            return self._open_ahead(ctx, step, cst, left_over)
        counts = step.counts
        waiting: Counter[str] = Counter()  # members per group left on the open hosts
        draining: list[planner.HostLoad] = []
        kept = step.draining()
        for host in ctx.hosts.in_state(HostState.DRAINING):
            drain = step.draining_load(host, kept)
            draining.append(drain)
            waiting.update(m.group_id for m in drain.members)
        # A group with work left and fewer members waiting on the open hosts
        # than it may move at once, also while its members are moving or in
        # recovery_time: a host opened for it now has its next members ready
        # when that ends (the longest chain waited for a host to open after
        # each recovery, 883 s over the reference scenario's bound; with one
        # member waiting of two it may move, each round moved one).
        # Each pending host ranked by the idle weight it feeds; the planner
        # chooses among the best CANDIDATE_WINDOW (and every empty host).
        idle, fed = self._idle_and_fed(step, waiting)
        names: set[str] = set(self._best(fed))
        names.update(
            h.name for h in ctx.hosts.without_instances(HostState.PENDING) if h.type == "compute"
        )
        pending_count = len(ctx.hosts.in_state(HostState.PENDING, type="compute"))
        if (
            not names
            and not draining
            and pending_count
            and not ctx.instances.in_state(InstanceState.IN_ACTION)
        ):
            # Nothing in flight and no group idle with work: open the lightest
            # host anyway, so that the session always makes progress.
            pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
            names.add(min(pending, key=lambda h: (self._used(ctx, h.name), h.position)).name)
            idle = dict.fromkeys(counts.todo, 1.0)
        if not names:
            return False, False
        candidates: list[planner.HostLoad] = []
        lightest: int | None = None  # vCPUs of the lightest candidate with members
        least: list[planner.Member] = [m for d in draining for m in d.members]
        for name in sorted(names):
            view = ctx.hosts.get(name)
            if view is not None and view.state == HostState.PENDING and view.type == "compute":
                load = step.pending(view)
                candidates.append(load.load)
                if load.least is not None:
                    least.append(load.least)
                    lightest = load.vcpus if lightest is None else min(lightest, load.vcpus)
                else:
                    lightest = 0  # an empty host: always worth opening
        # The targets of the smallest member (every computes' window holds
        # them), and of each member the cloud's placement rules name (the
        # members are read one by one only when some are).
        members = []
        if counts.any_ruled:
            members = [m for c in candidates for m in c.members] + [
                m for d in draining for m in d.members
            ]
        picked = {m.instance_id for m in members if step.ruled(m.instance_id)}
        if least:
            picked.add(min(least, key=lambda m: (m.vcpus, m.instance_id)).instance_id)
        sample = [v for i in sorted(picked) if (v := ctx.instances.get(i)) is not None]
        window = self._window(ctx, step, sample)
        if draining and lightest and self._short_of_room(ctx, window, draining, lightest):
            return self._open_ahead(ctx, step, cst)
        targets = step.targets(window)
        if not members:
            members = [m for c in candidates for m in c.members] + [
                m for d in draining for m in d.members
            ]
        rules = step.rules_of(members)
        feasible = None
        if pending_count <= DRY_RUN_HOSTS:

            def feasible(opened: Sequence[str]) -> bool:
                pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
                loads = [*draining] + [step.pending_load(h) for h in pending]
                all_rules = dict(rules)
                all_rules.update(step.rules_of(chain.from_iterable(d.members for d in loads)))
                known = {t.host for t in targets}
                extra = [step.target(h, False) for h in pending if h.name not in known]
                dry = (
                    targets
                    + extra
                    + [step.target(h, False) for h in ctx.hosts.in_state(HostState.DRAINING)]
                )
                order = [*(h.host for h in draining), *opened]
                # Counting answers alike where it is exact (one-vCPU instances,
                # no per-host limit), without placing every member everywhere.
                return planner.drains_together(loads, dry, all_rules, order)

        # A host opened now moves its instances only where they stay: it
        # opens when they fit there now (second_moves.opening_targets). A
        # host holding parked instances opens after the others: it takes the
        # most room where instances stay for the room it gives back (see
        # second_moves).
        chosen = planner.hosts_to_open(
            candidates,
            draining=draining,
            targets=second_moves.opening_targets(targets),
            idle_groups=idle,
            slots=slots,
            rules=rules,
            feasible=feasible,
            last=counts.parked,
            wait=self._opening_wait(ctx, step, cst, waiting),
        )
        if not chosen and draining:
            return self._open_ahead(ctx, step, cst)
        first: set[str] = set()
        wave: second_moves.FirstWave | None = None
        if (
            not draining
            and all(not c.members for c in candidates if c.host in chosen)
            and not self._waiting_makes_room(ctx, step, cst)
        ):
            # Nothing where instances stay can take any host's instances and
            # nothing is out of service: the first wave (second_moves), as
            # wide as the hosts' expected work says the longest chain needs.
            size = None
            if any(c.members for c in candidates):
                size = self._first_wave_size(ctx, step, targets)
            wave = second_moves.first_wave(
                candidates,
                targets=targets,
                idle_groups=idle,
                slots=slots,
                instances=sum(counts.todo.values()),
                rules=rules,
                feasible=feasible,
                share=second_moves.FIRST_WAVE_SHARE if size is None else size.share,
            )
            chosen = list(wave.hosts)
            first = {c.host for c in candidates if c.members and c.host in chosen}
            if first and size is not None:
                cst.first_wave = size.why
        result = self._open_chosen(ctx, step, cst, chosen, first)
        if wave is not None:
            # Its partial last host, if opened: only so many of its
            # instances move twice (none held back by the controls).
            view = ctx.hosts.get(wave.partial) if wave.partial in first else None
            if view is not None and view.state == HostState.DRAINING:
                cst.partial, cst.partial_twice = view.name, wave.twice
            else:
                cst.partial, cst.partial_twice = None, 0
        return result

    @staticmethod
    def _none_left_to_open(ctx: SessionContext) -> bool:
        """No pending compute host while hosts drain (the end of a session):
        a decision would find no candidate, and no first wave to settle
        (there is one only while nothing drains), so it opens nothing and
        changes nothing. Known without building it (the draining hosts'
        loads and the idle groups, at every pass of the session's tail)."""
        return not ctx.hosts.in_state(HostState.PENDING, type="compute") and bool(
            ctx.hosts.in_state(HostState.DRAINING)
        )

    def _opening_wait(
        self, ctx: SessionContext, step: _Step, cst: ConstrainedState, waiting: Counter[str]
    ) -> Callable[[planner.HostLoad], float]:
        """How long a pending host opened now would wait for its groups'
        slots before it is empty (``planner.opening_wait``): each group's
        slots held by its members moving (a move and its recovery_time
        ahead, at most) or in recovery_time (until it ends), then taken by
        its members ``waiting`` on the open hosts. Worked out per group on
        first use: the moves and recoveries under way are read once per
        decision, and only if a candidate is ranked."""
        busy: dict[str, list[float]] | None = None
        slots: dict[str, list[float]] = {}

        def group_slots(group_id: str) -> list[float]:
            nonlocal busy
            if busy is None:
                busy = self._busy_until(ctx, step, cst)
            found = slots.get(group_id)
            if found is None:
                found = slots[group_id] = planner.group_slots(
                    step.rule(group_id),
                    busy.get(group_id, ()),
                    waiting.get(group_id, 0),
                    move_seconds=_MOVE_ESTIMATE,
                )
            return found

        def wait(load: planner.HostLoad) -> float:
            return planner.opening_wait(load, group_slots, step.rule, move_seconds=_MOVE_ESTIMATE)

        return wait

    def _busy_until(
        self, ctx: SessionContext, step: _Step, cst: ConstrainedState
    ) -> dict[str, list[float]]:
        """Per group, the seconds from now until each of its members moving
        or in recovery_time frees its slot (a move under way: a whole move
        and the recovery_time, at most)."""
        now = ctx.now
        busy: dict[str, list[float]] = {}
        recovery = self._recovery(ctx, step, cst)
        for until, instance_id in recovery.heap:
            group_id = recovery.group_of.get(instance_id)
            if group_id is not None:
                busy.setdefault(group_id, []).append(max(0.0, (until - now).total_seconds()))
        for view in ctx.instances.in_state(InstanceState.IN_ACTION):
            group_id = step.group(view)
            busy.setdefault(group_id, []).append(_MOVE_ESTIMATE + step.rule(group_id).recovery_time)
        return busy

    def _open_chosen(
        self,
        ctx: SessionContext,
        step: _Step,
        cst: ConstrainedState,
        chosen: Sequence[str],
        first: Container[str],
    ) -> tuple[bool, bool]:
        """Start draining the ``chosen`` hosts that the controls admit (those
        of ``first``: the first drained hosts): (any opened, one held)."""
        counts = step.counts
        opened = held = False
        controls = ctx.request.controls
        # A host refused for its zone (rack ...) keeps no host of an open zone
        # from going; a window, pacing or a pause holds every host alike, and
        # asking about another host would restart a gate's checks.
        try_others = bool(controls.max_topology_in_maintenance) and not controls.gates
        for name in chosen:
            if not ctx.admit(name).admitted:
                held = True
                if try_others:
                    continue
                return opened, True  # a window, pacing, a gate or a pause holds the rest
            opened = True
            ctx.set_host_state(name, HostState.DRAINING)
            counts.parked.discard(name)
            counts.unasked.add(name)
            counts.blocked.pop(name, None)
            counts.undisabled.add(name)
            view = ctx.hosts.get(name)
            if view is not None and (view.stage & _STAGE or name in first):
                # Its stages start afresh; a first drained host says so.
                self._set_stage(
                    ctx, name, view.stage & ~_STAGE | (FIRST_DRAINED if name in first else 0)
                )
            for inst in ctx.instances.on(name):
                g = step.group(inst)
                found = counts.pending_hosts_of.get(g)
                if found is not None:
                    found.discard(name)
                    counts.refed.add(g)
                if inst.state not in (InstanceState.GONE, InstanceState.OUT_OF_SCOPE):
                    counts.pending_member(g, inst.vcpus, step.limited(g), -1)
            view = ctx.hosts.get(name)
            if view is not None:
                self._disabled_for_drain(ctx, view, step)
        if opened:
            cst.stamp = counts.stamp = _new_stamp()
            ctx.state_of(RollingState).listed = False  # progress: list again when stuck
        return opened, held

    def _idle_and_fed(
        self, step: _Step, waiting: Mapping[str, int]
    ) -> tuple[Mapping[str, float], Mapping[str, float]]:
        """The idle groups (work left, fewer of their members ``waiting`` on
        the open hosts than they may move at once) with their weights, and
        for each pending host the idle weight it feeds (each group it holds
        members of: its weight + 1): :meth:`_idle_and_fed_of`'s answer, kept
        with the counts (:class:`_Fed`, not to be changed by the caller) and
        worked out again only for the groups whose work left, pending hosts
        (``refed``) or members waiting changed since the last one."""
        counts = step.counts
        kept = counts.fed
        # The groups whose pending hosts changed (taken: those from now on
        # are the next decision's).
        refed, counts.refed = counts.refed, set()
        changed: Iterable[str]
        if kept is None:
            kept = counts.fed = _Fed({}, {}, {}, Counter(), {})
            changed = counts.todo  # every group with work
        else:
            before = kept.waiting
            if before == waiting:  # (compared whole first: most decisions)
                changed = refed
            else:
                changed = {
                    g
                    for g in before.keys() | waiting.keys()
                    if before.get(g, 0) != waiting.get(g, 0)
                }
                changed |= refed
        kept.waiting = dict(waiting)
        idle, fed, feeders, on, top = kept.idle, kept.fed, kept.feeders, kept.on, kept.top
        rules, rule, paces, weight_of = step.rules, step.rule, counts.pace, self._weight
        todo, hosts_of = counts.todo, counts.pending_hosts_of.get
        for g in changed:
            # Its weight now (None: not idle), then what it fed taken out and
            # the new put in; on the same hosts, only the change of weight
            # (nothing when none: its members waiting changed, within what
            # it may move at once).
            weight = None
            left = todo.get(g, 0)
            if left > 0:
                w = waiting.get(g, 0)
                if w == 0 or w < (rules.get(g) or rule(g)).max_impacted:
                    pace = paces.get(g)
                    weight = (
                        weight_of(step, g) if pace is None else math.ceil(left / pace[0]) * pace[1]
                    )
                    if not weight.is_integer():  # sums in another order could round otherwise
                        counts.fed = None
                        return self._idle_and_fed_of(step, waiting)
            was = idle.get(g)
            if weight is None:
                names: tuple[str, ...] = ()
            elif was is not None and g not in refed:
                # Idle before too, and its pending hosts the same set since
                # (every change of them names it in ``refed``): those it fed.
                names = on[g]
            else:
                names = tuple(hosts_of(g, ()))
            if was is not None and weight is not None and on[g] == names:
                if weight != was:
                    idle[g] = weight
                    change = weight - was
                    for name in names:
                        fed[name] += change
                        most = top.get(name)
                        if feeders[name] == 1 or (most is not None and weight > most):
                            top[name] = weight  # (the only idle group feeding it: its most)
                        elif most == was:  # its most, now less: not known any more
                            del top[name]
                continue
            if was is not None:  # its weight taken out of the hosts it fed
                del idle[g]
                add = was + 1.0
                for name in on.pop(g):
                    n = feeders[name] - 1
                    if n:
                        feeders[name] = n
                        fed[name] -= add
                        if top.get(name) == was:  # its most: not known any more
                            del top[name]
                    else:
                        del feeders[name], fed[name]
                        top.pop(name, None)
            if weight is None:
                continue
            idle[g] = weight
            on[g] = names
            add = weight + 1.0
            for name in names:
                had = fed.get(name)
                if had is None:
                    fed[name] = add
                    top[name] = weight
                else:
                    fed[name] = had + add
                    most = top.get(name)
                    if most is not None and weight > most:
                        top[name] = weight
                feeders[name] += 1
        return idle, fed

    def _idle_and_fed_of(
        self, step: _Step, waiting: Mapping[str, int]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """:meth:`_idle_and_fed` worked out from every group with work left."""
        counts = step.counts
        # Every group with work left is looked at (most of the fleet's groups
        # at 1,000 hosts, twice per decision): the lookups are bound once,
        # and the weight (:meth:`_weight`) of a group with ``left`` members
        # still to do is worked out from its kept pace.
        rules, rule, paces, weight_of = step.rules, step.rule, counts.pace, self._weight
        waiting_of = waiting.get
        idle: dict[str, float] = {}
        for g, left in counts.todo.items():
            if left <= 0:
                continue
            w = waiting_of(g, 0)
            if w != 0 and w >= (rules.get(g) or rule(g)).max_impacted:
                continue
            pace = paces.get(g)
            idle[g] = weight_of(step, g) if pace is None else math.ceil(left / pace[0]) * pace[1]
        fed: dict[str, float] = {}
        fed_get = fed.get
        hosts_of = counts.pending_hosts_of.get
        for g, weight in idle.items():
            for name in hosts_of(g, ()):
                fed[name] = fed_get(name, 0.0) + weight + 1.0
        return idle, fed

    def _open_ahead(
        self,
        ctx: SessionContext,
        step: _Step,
        cst: ConstrainedState,
        left_over: int | None = None,
    ) -> tuple[bool, bool]:
        """When no host can be opened whole, open one ahead of its room
        (``planner.host_to_open_ahead``): while the room where instances stay
        covers every draining host's members with some left over, the host
        the ranking puts first, if its member of the longest idle chain fits
        in what is left, the session can still be emptied with it open (the
        dry run) and its member fits with the draining hosts' on the targets.
        Its members then take only the room the others leave
        (:meth:`_pump`). One at a time: none while a draining host's members
        are not all covered. ``left_over``: :meth:`_left_over_room` when the
        caller worked it out already (nothing changed since)."""
        if left_over is None:
            left_over = self._left_over_room(ctx, step)
        if left_over <= 0:
            return False, False  # also when nothing drains (an empty load)
        draining = list(ctx.hosts.in_state(HostState.DRAINING))
        if not draining:
            return False, False
        counts = step.counts
        kept = step.draining()
        loads = [step.draining_load(h, kept) for h in draining]
        waiting = Counter(m.group_id for load in loads for m in load.members)
        idle, fed = self._idle_and_fed(step, waiting)
        candidates = [
            step.pending(view).load
            for name in sorted(self._best(fed))
            if (view := ctx.hosts.get(name)) is not None
            and view.state == HostState.PENDING
            and view.type == "compute"
        ]
        found = planner.host_to_open_ahead(
            candidates,
            idle_groups=idle,
            room=left_over,
            last=counts.parked,
            scores=self._kept_scores(counts, idle, candidates),
        )
        if found is None:
            return False, False
        load, member = found
        need = [m for d in loads for m in d.members]
        sample = [v for m in (*need, member) if (v := ctx.instances.get(m.instance_id)) is not None]
        targets = [
            step.target(view, stays)
            for view, stays in self._window(ctx, step, sample)
            if stays and view.name != load.host
        ]
        rules = step.rules_of([*need, *load.members])
        if not planner.fits_all([*need, member], targets, rules):
            return False, False
        pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
        if len(pending) <= DRY_RUN_HOSTS:
            loads += [step.pending_load(h) for h in pending]
            # (Every pending host's members: chained, not a generator per member.)
            rules.update(step.rules_of(chain.from_iterable(d.members for d in loads)))
            dry = self._fleet_targets(ctx, step) + [step.target(h, False) for h in draining]
            order = [*(h.name for h in draining), load.host]
            if not planner.drains_together(loads, dry, rules, order):
                return False, False
        return self._open_chosen(ctx, step, cst, [load.host], ())

    def _fleet_targets(self, ctx: SessionContext, step: _Step) -> list[planner.Target]:
        """Every host an instance may be placed on now (:func:`_target_state`
        not None) as a target, in the hosts' order: what a dry run over the
        fleet places on. Kept with the counts (:class:`_FleetTargets`) and
        patched from the hosts whose capacity changed while no group has a
        per-host limit (a target then counts no member: it is its room and
        kind); built from every host otherwise (:meth:`_all_targets`)."""
        if step.counts.any_limited:
            return self._all_targets(ctx, step)
        retiring = self._retiring(ctx)
        kept = step.counts.fleet_targets
        if kept is None or not kept.brought_up_to_date(ctx, step, retiring):
            kept = step.counts.fleet_targets = _FleetTargets.read(ctx, step, retiring)
        return kept.targets()

    @staticmethod
    def _kept_scores(
        counts: _Counts, idle: Mapping[str, float], candidates: Sequence[planner.HostLoad]
    ) -> dict[str, tuple[float, float]] | None:
        """Each candidate's score for ``planner.host_to_open_ahead`` (the
        most and the summed weight of the idle groups it holds members of)
        from the weights kept with :class:`_Fed`, when ``idle`` is its answer:
        the groups it put on a host are those of the host's load, both
        counting the members of :data:`_MEMBER_STATES`. None otherwise (the
        planner works them out from the loads). A most not known (taken
        out) is worked out from the load and kept."""
        kept = counts.fed
        if kept is None or kept.idle is not idle:
            return None
        top, sums, feeders = kept.top, kept.fed, kept.feeders
        scores: dict[str, tuple[float, float]] = {}
        for load in candidates:
            name = load.host
            total = sums.get(name)
            if total is None:
                continue
            most = top.get(name)
            if most is None:
                most = max((w for g in load.groups if (w := idle.get(g)) is not None), default=None)
                if most is None:
                    continue
                top[name] = most
            scores[name] = (most, total - feeders[name])
        return scores

    def _first_wave_size(
        self, ctx: SessionContext, step: _Step, targets: Sequence[planner.Target]
    ) -> second_moves.FirstWaveSize:
        """How many second moves the first wave may add
        (:func:`~fenix_core.second_moves.first_wave_size`), from what the
        session knows at its start: the pending hosts' loads, the groups'
        chains, and a host's expected work (declared ``host_seconds``, else
        the plan's assumption per action: ``controls.expected_host_seconds``)."""
        capacities: list[int] = []
        per_host: list[list[int]] = []
        for host in ctx.hosts.in_state(HostState.PENDING, type="compute"):
            capacities.append(host.vcpus)
            per_host.append([i.vcpus for i in ctx.instances.on(host.name) if i.state in IN_SCOPE])
        stay_room = sum(t.free or 0 for t in targets if t.stays)
        actions = actions_of(ctx.request.actions, *host_action_types("compute"))
        work = expected_host_seconds(ctx.request.controls, len(actions))
        todo = step.counts.todo
        chain = planner.makespan_lower_bound(
            host_work=[work] * len(capacities),
            max_parallel_hosts=max(1, len(capacities)),
            members_by_group=todo,
            rules={g: step.rule(g) for g, left in todo.items() if left > 0},
            move_seconds=_MOVE_ESTIMATE,
            first_final_move_at=second_moves.first_final_move_at(
                [(work, bool(v)) for v in per_host],
                stay_room=stay_room > 0,
                move_seconds=_MOVE_ESTIMATE,
            ),
        ).group_bound
        return second_moves.first_wave_size(
            [sum(v) for v in per_host],
            capacities,
            instance_vcpus=[c for v in per_host for c in v],
            forced=second_moves.moves_lower_bound(per_host, stay_room=stay_room).forced,
            chain=chain,
            work=work,
            move_seconds=_MOVE_ESTIMATE,
            stay_room=stay_room,
        )

    def _may_open(
        self, ctx: SessionContext, step: _Step, cst: ConstrainedState
    ) -> tuple[bool, int | None]:
        """False when no pending host can be opened for lack of room, known
        without building a decision: the free vCPUs the planner's targets
        can have at most (:meth:`_window_room`) fall short of the members
        left on the draining hosts plus the lightest pending host's (at most
        any candidate's), so ``planner.hosts_to_open`` would turn every
        candidate down on its totals. An empty pending host, an instance
        under the cloud's placement rules (its targets are its own), or the
        first wave's case (nothing drains, nothing under way makes room)
        always decides. With it, :meth:`_left_over_room` when worked out
        (:meth:`_open_ahead` reads it next)."""
        counts = step.counts
        if counts.any_ruled:
            return True, None
        if any(h.type == "compute" for h in ctx.hosts.without_instances(HostState.PENDING)):
            return True, None
        if next(iter(ctx.hosts.in_state(HostState.DRAINING)), None) is None and (
            not self._waiting_makes_room(ctx, step, cst)
        ):
            return True, None  # the first wave's case: it may open hosts anyway
        floor = self._pending_floor(ctx, step)
        if floor is None:
            return True, None
        left_over = self._left_over_room(ctx, step)
        return left_over >= floor, left_over

    @staticmethod
    def _short_of_room(
        ctx: SessionContext,
        window: Sequence[tuple[HostView, bool]],
        draining: Sequence[planner.HostLoad],
        lightest: int,
    ) -> bool:
        """Whether ``planner.hosts_to_open`` turns every candidate down on its
        totals (its ``_Room.may_fit``): the free vCPUs of the window's hosts
        where instances stay (its targets after
        ``second_moves.opening_targets``) fall short of the draining hosts'
        members plus the lightest candidate's, none of them empty. Then it
        opens nothing whatever the rest of the decision, and the rest is not
        built. (Nothing drains: the first wave may open hosts anyway, not
        decided here.)"""
        room = sum(max(0, ctx.capacity.free(view.name)) for view, stays in window if stays)
        return room < sum(d.vcpus for d in draining) + lightest

    def _window_room(self, ctx: SessionContext) -> int:
        """At most the free vCPUs of the targets a decision to open hosts
        offers the planner (no instance under the cloud's placement rules):
        :meth:`_window` takes the first :data:`TARGET_WINDOW` hosts
        of ``ctx.capacity.targets`` (most free first, then by name, the
        instance's own host and the retiring ones skipped) whatever their
        state, and a host opened now fits only where instances stay
        (:func:`~fenix_core.second_moves.opening_targets`). So: the room of
        the hosts where instances stay among the first TARGET_WINDOW + 1 of
        ``most_free`` (one more for the own host), as
        ``ctx.capacity.room`` counts it from the index. (Counting, of the
        hosts with the same free vCPUs, as many where instances stay as
        positions were left, whatever their names, let nine decisions in ten
        through at 300 hosts: each was built and turned down whole.)"""
        return ctx.capacity.room("compute", TARGET_WINDOW + 1, STAYS, exclude=self._retiring(ctx))

    def _left_over_room(self, ctx: SessionContext, step: _Step) -> int:
        """The window's room where instances stay (at most) less the draining
        hosts' members still to leave."""
        return self._window_room(ctx) - self._draining_load(ctx, step)

    def _draining_load(self, ctx: SessionContext, step: _Step) -> int:
        """vCPUs of the members still to leave the draining hosts (not
        moving), kept: :class:`_DrainingTaken`."""
        kept = step.counts.draining_taken
        taken = None if kept is None else kept.brought_up_to_date(ctx)
        if taken is None:
            taken = step.counts.draining_taken = _DrainingTaken.read(ctx)
        return taken.total

    def _pending_floor(self, ctx: SessionContext, step: _Step) -> int | None:
        """At most the vCPUs of the lightest pending compute host with
        instances (None: there is none)."""
        heap = step.counts.pending_floor
        while heap:
            vcpus, name = heap[0]
            view = ctx.hosts.get(name)
            if view is None or view.state != HostState.PENDING:
                heapq.heappop(heap)
                continue
            exact = step.pending(view).vcpus
            if exact == vcpus:
                return vcpus
            heapq.heapreplace(heap, (exact, name))
        return None

    @staticmethod
    def _best(fed: Mapping[str, float]) -> list[str]:
        """The :data:`CANDIDATE_WINDOW` hosts of ``fed`` first by (weight,
        name), highest first (in no order: the callers sort them or not)."""
        if len(fed) <= CANDIDATE_WINDOW:
            return list(fed)
        # The weight of the last one taken, then the hosts above it and as
        # many of those at it as are left, by name: the weights alone
        # (floats, compared in C) sort 4-5 times faster than the (weight,
        # name) items, for the few hundred hosts fed at 1,000 hosts.
        floor = sorted(fed.values(), reverse=True)[CANDIDATE_WINDOW - 1]
        best = [n for n, w in fed.items() if w > floor]
        at = sorted([n for n, w in fed.items() if w == floor], reverse=True)
        best += at[: CANDIDATE_WINDOW - len(best)]
        return best

    # ------------------------------------------------------------------ targets

    def _target_state(self, ctx: SessionContext, view: HostView) -> bool | None:
        """Whether an instance placed on ``view`` stays (True), moves again
        (False), or the host takes none (None)."""
        return _target_state(view, self._retiring(ctx))

    def _window(
        self, ctx: SessionContext, step: _Step, instances: Iterable[InstanceView]
    ) -> list[tuple[HostView, bool]]:
        """The hosts whose targets are offered to the planner (``step.targets``
        builds them, only when a decision needs them), and whether instances
        stay on each: for each kind of instance (its host's type and its
        vCPUs; an instance under the cloud's placement rules on its own), the
        best :data:`TARGET_WINDOW` hosts of ``ctx.capacity.targets`` that
        take instances, and the host of the instance standing for its kind
        when it has room for it (a target of the others of the kind, which
        ``ctx.capacity.targets`` leaves out)."""
        seen: dict[str, tuple[HostView, bool]] = {}
        kinds: set[tuple[str, int]] = set()
        retiring = self._retiring(ctx)
        # The views read once: a window is up to TARGET_WINDOW hosts, built
        # a few times a step.
        host_view, targets, free = ctx.hosts.get, ctx.capacity.targets, ctx.capacity.free
        walks: dict[str, _Walk] | None = None
        for inst in self._window_sample(ctx, step, instances):
            host = host_view(inst.host)
            kind = (host.type if host is not None else "", inst.vcpus)
            own: tuple[str, ...] = ()
            if not step.ruled(inst.instance_id):
                if kind in kinds or any(k[0] == kind[0] and k[1] <= kind[1] for k in kinds):
                    continue  # a smaller instance of the type saw these hosts already
                kinds.add(kind)
                # Its own host is no target of its own, but it is one of the
                # others of its kind (a queued host in a first wave): without
                # it, on a small cloud, the first wave found no room for a
                # host's instances that its own host had.
                if host is not None and free(host.name) >= inst.vcpus:
                    own = (host.name,)
                if host is not None and inst.vcpus > 0:
                    # The walk its targets take, kept (the first TARGET_WINDOW
                    # with room for it, its own host passed over).
                    if walks is None:
                        walks = self._walks(ctx, step.counts, retiring)
                    walk = walks.get(host.type)
                    if walk is None:
                        walk = walks[host.type] = _Walk.walked(ctx, host.type, retiring)
                    taken, least, stays_of = 0, -inst.vcpus, walk.stays
                    for minus_free, name in walk.keys:
                        if minus_free > least or taken == TARGET_WINDOW:
                            break
                        if name == host.name:
                            continue
                        taken += 1
                        if name not in seen and (stays := stays_of[name]) is not None:
                            view = host_view(name)  # (its view as it is now)
                            if view is not None:
                                seen[name] = (view, stays)
                    for name in own:
                        view = host_view(name)
                        stays = _target_state(view, retiring) if view is not None else None
                        if name not in seen and view is not None and stays is not None:
                            seen[name] = (view, stays)
                    continue
            for name in (*islice(targets(inst.instance_id, exclude=retiring), TARGET_WINDOW), *own):
                if name in seen:
                    continue
                view = host_view(name)
                stays = _target_state(view, retiring) if view is not None else None
                if view is None or stays is None:
                    continue
                seen[name] = (view, stays)
        return list(seen.values())

    @staticmethod
    def _walks(ctx: SessionContext, counts: _Counts, retiring: frozenset[str]) -> dict[str, _Walk]:
        """The kept walks (``counts.walks``) brought up to date with the hosts
        whose capacity changed since they were (``ctx.capacity.changed_since``);
        dropped when that is not known (a load, an old mark) or the retiring
        hosts changed, and each one left too short, to be walked anew."""
        walks, capacity = counts.walks, ctx.capacity
        if walks:
            changed = (
                capacity.changed_since(counts.walks_mark)
                if counts.walks_retiring is retiring
                else None
            )
            if changed is None:
                walks.clear()
            elif changed:
                for placement_class, walk in list(walks.items()):
                    if not walk.patched(ctx, changed, retiring):
                        del walks[placement_class]
        counts.walks_mark = capacity.change_mark()
        counts.walks_retiring = retiring
        return walks

    def _window_stay_room(
        self, ctx: SessionContext, step: _Step, instances: Sequence[InstanceView]
    ) -> int | None:
        """The free vCPUs of :meth:`_window`'s hosts where instances stay,
        read from the capacity index without building the window, when one
        instance stands for it (no instance under the cloud's placement
        rules, one host type, computes): its window is the first
        TARGET_WINDOW hosts of ``ctx.capacity.targets`` (enabled hosts of
        its type with room for it, most free first, then by name; its own
        host and the retiring ones passed over), which is the walk
        ``ctx.capacity.room`` counts with ``least`` its vCPUs, plus its own
        host when that has room for it. None: only the window says (a pass
        where no member may start then builds it all the same)."""
        if step.counts.any_ruled:
            return None
        sample = self._window_sample(ctx, step, instances)
        if not sample:
            return 0  # an empty window
        if len(sample) > 1:
            return None
        (inst,) = sample
        own = ctx.hosts.get(inst.host)
        if own is None or own.type != "compute" or step.ruled(inst.instance_id):
            return None
        retiring = self._retiring(ctx)
        room = ctx.capacity.room(
            "compute",
            TARGET_WINDOW,
            STAYS,
            exclude=retiring | {own.name},
            least=inst.vcpus,
        )
        free = ctx.capacity.free(own.name)
        if free >= inst.vcpus and _target_state(own, retiring):
            room += free
        return room

    @staticmethod
    def _window_sample(
        ctx: SessionContext, step: _Step, instances: Iterable[InstanceView]
    ) -> list[InstanceView]:
        """The instances whose targets make the window, by (vCPUs, id): all
        of them when the cloud's placement rules name some, else the
        smallest of each host type (the others' targets are among its own).
        A placement reads the members of every draining host: their hosts'
        types are looked up once per host."""
        if step.counts.any_ruled:
            return sorted(instances, key=lambda i: (i.vcpus, i.instance_id))
        types: dict[str, str] = {}
        least: dict[str, InstanceView] = {}
        # A host's instances come one after another (each draining host's
        # members): its type and the least of that type are looked up once
        # per run of them, not per instance.
        on: str | None = None
        kind, found = "", None
        for inst in instances:
            if inst.host != on:
                if found is not None:
                    least[kind] = found
                on = inst.host
                known = types.get(on)
                if known is None:
                    host = ctx.hosts.get(on)
                    known = types[on] = host.type if host is not None else ""
                kind, found = known, least.get(known)
            # (vcpus, id) compared without building the two tuples.
            if (
                found is None
                or inst.vcpus < found.vcpus
                or (inst.vcpus == found.vcpus and inst.instance_id < found.instance_id)
            ):
                found = inst
        if found is not None:
            least[kind] = found
        return sorted(least.values(), key=lambda i: (i.vcpus, i.instance_id))

    def _all_targets(self, ctx: SessionContext, step: _Step) -> list[planner.Target]:
        """Every host that takes instances (the checks before the first
        wave, and the dry run of the waves' moves: :meth:`_keeps_draining`)."""
        out = []
        for view in ctx.hosts:
            stays = self._target_state(ctx, view)
            if stays is not None:
                out.append(step.target(view, stays))
        return out

    # ------------------------------------------------------------------ bookkeeping

    def _counts_of(self, ctx: SessionContext) -> _Counts:
        """This session's per-group counts, rebuilt from the views if another
        process stepped it, or the constraints changed."""
        cst = ctx.state_of(ConstrainedState)
        cs = ctx.constraints
        found = self._counts.get(ctx.session_id)
        if found is not None and found.stamp == cst.stamp and found.constraints is cs:
            return found
        found = _Counts(cst.stamp, cs)
        step = _Step(self, ctx, found)
        for host in ctx.hosts:
            if host.state == HostState.DRAINING:
                found.unasked.add(host.name)
                found.undisabled.add(host.name)
            elif host.state != HostState.PENDING:
                continue
            load = 0
            for inst in ctx.instances.on(host.name):
                if inst.state in (InstanceState.GONE, InstanceState.OUT_OF_SCOPE):
                    continue
                g = step.group(inst)
                found.todo[g] += 1
                if step.ruled(inst.instance_id):
                    found.any_ruled = True
                if step.limited(g):
                    found.any_limited = True
                if host.state == HostState.PENDING:
                    found.pending_member(g, inst.vcpus, step.limited(g), +1)
                    if inst.moves:
                        found.parked.add(host.name)
                    if inst.state in _MEMBER_STATES:  # as its load counts it
                        found.pending_hosts_of.setdefault(g, set()).add(host.name)
                        load += inst.vcpus
            if load and host.type == "compute":
                found.pending_floor.append((load, host.name))
        heapq.heapify(found.pending_floor)
        self._counts[ctx.session_id] = found
        return found

    def _changed(self, ctx: SessionContext) -> None:
        """Hosts or instances changed outside the workflow: count again."""
        self._counts.pop(ctx.session_id, None)
        ctx.state_of(ConstrainedState).stamp = _new_stamp()

    def _weight(self, step: _Step, group_id: str) -> float:
        """How long a group still needs at best: its remaining rounds of moves."""
        pace = step.counts.pace.get(group_id)
        if pace is None:
            g = step.cs.group_by_key(group_id)
            pace = step.counts.pace[group_id] = (
                g.max_impacted_members,
                _MOVE_ESTIMATE + g.recovery_time,
            )
        rounds = math.ceil(max(0, step.counts.todo[group_id]) / pace[0])
        return rounds * pace[1]

    def _wake_at(self, ctx: SessionContext, cst: ConstrainedState, when: datetime | None) -> None:
        if when is None:
            return
        current = datetime.fromisoformat(cst.wake) if cst.wake is not None else None
        if current is not None and current <= when:
            return
        ctx.set_timer("waves", when)
        cst.wake = when.isoformat()

    def _stuck(
        self, ctx: SessionContext, st: RollingState, step: _Step, cst: ConstrainedState
    ) -> None:
        """Nothing in flight, nothing to wait for, hosts left: say why and
        fail; or, while a host outside the session is out of service, wait
        for it (up to MAX_WAIT_ROUNDS times in a session)."""
        waiting = [
            i.instance_id
            for h in ctx.hosts.in_state(HostState.DRAINING)
            for i in ctx.instances.on(h.name)
            if i.state == InstanceState.ACTION_CHOSEN
        ]
        if waiting and cst.waited < MAX_WAIT_ROUNDS and self._out_of_service_elsewhere(ctx):
            # Another session maintains a host outside this one: its room
            # comes back with it (the inventory tells when it is enabled).
            cst.waited += 1
            self._wake_at(ctx, cst, ctx.now + retry_delay(cst.waited, ctx.session_id))
            return
        if waiting:
            ctx.fail(
                "no target host has room for "
                + ", ".join(waiting[:5])
                + (" ..." if len(waiting) > 5 else "")
                + " within capacity, anti-affinity and per-host limits"
            )
            return
        pending = list(ctx.hosts.in_state(HostState.PENDING, type="compute"))
        if pending:
            self._scale_in_or_fail(ctx, st, pending)


#: Hosts a kept walk (:class:`_Walk`) holds beyond a window's: walked anew
#: once it holds no more than a window's (TARGET_WINDOW, and the own host).
_WALK_SLACK = 64


class _Walk:
    """The walk ``ctx.capacity.targets`` makes for an instance without
    placement rules of one placement class before its own host is passed
    over: the enabled hosts of the class with known capacity, none retiring,
    most free first then by name (``keys``: (-free, name) sorted), the
    first TARGET_WINDOW + _WALK_SLACK of them (all when ``complete``), each
    host's free vCPUs as kept (``free``) and whether an instance placed on
    it stays (``stays``: :func:`_target_state`). An instance's window reads
    its first hosts with room for it; kept with the counts and patched for
    the hosts whose capacity changed, instead of walked at each window
    (between two windows a few hosts change, of about a hundred)."""

    __slots__ = ("complete", "free", "keys", "placement_class", "stays")

    def __init__(self, placement_class: str) -> None:
        self.placement_class = placement_class
        self.keys: list[tuple[int, str]] = []
        self.free: dict[str, int] = {}
        self.stays: dict[str, bool | None] = {}
        self.complete = True

    @classmethod
    def walked(cls, ctx: SessionContext, placement_class: str, retiring: frozenset[str]) -> _Walk:
        walk = cls(placement_class)
        keys, free_of, stays_of, host_view = walk.keys, walk.free, walk.stays, ctx.hosts.get
        kept = TARGET_WINDOW + _WALK_SLACK
        for name, free in ctx.capacity.most_free(placement_class):
            view = host_view(name)
            if not _walked_through(view, placement_class, retiring):
                continue
            if len(keys) == kept:
                walk.complete = False
                break
            keys.append((-free, name))
            free_of[name] = free
            stays_of[name] = _target_state(view, retiring)
        return walk

    def patched(
        self, ctx: SessionContext, changed: Collection[str], retiring: frozenset[str]
    ) -> bool:
        """Brought up to date with the hosts ``changed`` names (every host
        whose free vCPUs, enabled flag, state, type or vCPUs changed since it
        was); False when too few hosts are left to stand for the walk."""
        keys, free_of, stays_of = self.keys, self.free, self.stays
        # Out first: what is left is the walk's start less the hosts changed.
        for name in changed:
            free = free_of.pop(name, None)
            if free is not None:
                del keys[bisect_left(keys, (-free, name))]
                del stays_of[name]
        if not keys and not self.complete:
            return False
        last = keys[-1] if keys else None
        host_view, capacity_free = ctx.hosts.get, ctx.capacity.free
        for name in changed:
            view = host_view(name)
            if not _walked_through(view, self.placement_class, retiring):
                continue
            free = capacity_free(name)
            key = (-free, name)
            if self.complete or (last is not None and key < last):
                insort(keys, key)
                free_of[name] = free
                stays_of[name] = _target_state(view, retiring)
        kept = TARGET_WINDOW + _WALK_SLACK
        if len(keys) > kept:
            for _minus, name in keys[kept:]:
                del free_of[name], stays_of[name]
            del keys[kept:]
            self.complete = False
        return self.complete or len(keys) > TARGET_WINDOW


def _walked_through(
    view: HostView | None, placement_class: str, retiring: frozenset[str]
) -> TypeGuard[HostView]:
    """Whether a walk (:class:`_Walk`) holds the host: one that
    ``ctx.capacity.most_free`` names for the class (of the class, enabled,
    of known capacity) and the session does not retire. The one rule for a
    walk made and a walk patched: a host changed is put back in only if a
    walk made now would hold it."""
    return (
        view is not None
        and view.type == placement_class
        and view.enabled
        and view.vcpus > 0
        and view.name not in retiring
    )


class _FleetTargets:
    """The targets of :meth:`ConstrainedWorkflow._fleet_targets` (no group
    with a per-host limit): one slot per host in the hosts' order (``rank``),
    its target or None (it takes no instance), as of the capacity's
    ``mark`` for the retiring hosts ``retiring``. A target reads its host's
    free vCPUs, state and enabled flag, and ``ctx.capacity.changed_since``
    names a host when any of them changes: only those hosts are read again,
    where a dry run read every host of the fleet (each time a host may open
    ahead of its room)."""

    __slots__ = ("mark", "rank", "retiring", "slots")

    def __init__(self, mark: int, retiring: frozenset[str]) -> None:
        self.mark = mark
        self.retiring = retiring
        self.rank: dict[str, int] = {}
        self.slots: list[planner.Target | None] = []

    @classmethod
    def read(cls, ctx: SessionContext, step: _Step, retiring: frozenset[str]) -> _FleetTargets:
        found = cls(ctx.capacity.change_mark(), retiring)
        for view in ctx.hosts:
            found.rank[view.name] = len(found.slots)
            found.slots.append(found._target(step, view))
        return found

    def brought_up_to_date(
        self, ctx: SessionContext, step: _Step, retiring: frozenset[str]
    ) -> bool:
        """Patched from the hosts changed since ``mark``; False when it cannot
        be (the log cannot say, another fleet or retiring hosts)."""
        changed = ctx.capacity.changed_since(self.mark)
        if changed is None or retiring != self.retiring or len(ctx.hosts) != len(self.slots):
            return False
        rank, slots, host_view = self.rank, self.slots, ctx.hosts.get
        for name in changed:
            at = rank.get(name)
            if at is None:
                return False
            slots[at] = self._target(step, host_view(name))
        self.mark = ctx.capacity.change_mark()
        return True

    def targets(self) -> list[planner.Target]:
        return [t for t in self.slots if t is not None]

    def _target(self, step: _Step, view: HostView | None) -> planner.Target | None:
        stays = None if view is None else _target_state(view, self.retiring)
        return None if view is None or stays is None else step.target(view, stays)


class _DrainingTaken:
    """The vCPUs of the members still to leave each draining host (``on``):
    what the host takes (its vCPUs less its free ones: its instances and the
    moves towards it) less the moves from it and towards it (``moving``, per
    host, from each move in flight kept in ``moves``); and their sum. Kept
    with the counts as of the capacity's ``mark`` and the instances'
    ``moves_mark``, and brought up to date from the hosts whose capacity
    changed (``ctx.capacity.changed_since``, which names a host that starts
    or stops draining too) and the instances changed since (a move started
    or ended: ``ctx.instances.changed_since``), instead of read from each
    draining host and each move in flight at each opening decision."""

    __slots__ = ("mark", "moves", "moves_mark", "moving", "on", "total")

    def __init__(self, mark: int, moves_mark: int) -> None:
        self.mark = mark
        self.moves_mark = moves_mark
        self.on: dict[str, int] = {}
        self.total = 0
        #: Moving instance -> the hosts it is counted under in ``moving`` (its
        #: own, and its target when another) and its vCPUs.
        self.moves: dict[str, tuple[tuple[str, ...], int]] = {}
        self.moving: dict[str, int] = {}

    @classmethod
    def read(cls, ctx: SessionContext) -> _DrainingTaken:
        found = cls(ctx.capacity.change_mark(), ctx.instances.change_mark())
        for inst in ctx.instances.in_state(InstanceState.IN_ACTION):
            found._moved(inst.instance_id, inst)
        for host in ctx.hosts.in_state(HostState.DRAINING):
            found._count(ctx, host.name)
        return found

    def brought_up_to_date(self, ctx: SessionContext) -> _DrainingTaken | None:
        """Itself, up to date; None when the logs cannot say (a load)."""
        capacity, instances = ctx.capacity, ctx.instances
        changed = capacity.changed_since(self.mark)
        moved = instances.changed_since(self.moves_mark)
        if changed is None or moved is None:
            return None
        if moved:
            hosts = set(changed)
            get = instances.get
            for instance_id in moved:
                hosts.update(self._moved(instance_id, get(instance_id)))
            self.moves_mark = instances.change_mark()
            changed = hosts
        if changed:
            for name in changed:
                self.total -= self.on.pop(name, 0)
                self._count(ctx, name)
            self.mark = capacity.change_mark()
        return self

    def _count(self, ctx: SessionContext, name: str) -> None:
        """The host's members still to leave, counted in when it drains."""
        view = ctx.hosts.get(name)
        if view is not None and view.state == HostState.DRAINING:
            self.on[name] = left = view.vcpus - ctx.capacity.free(name) - self.moving.get(name, 0)
            self.total += left

    def _moved(self, instance_id: str, view: InstanceView | None) -> tuple[str, ...]:
        """The instance's move taken out of ``moving`` and its move now (if
        it moves) put in: the hosts whose count changed."""
        moving = self.moving
        was = self.moves.pop(instance_id, None)
        if was is not None:
            for host in was[0]:
                moving[host] -= was[1]
        if view is None or view.state != InstanceState.IN_ACTION:
            return () if was is None else was[0]
        target = view.target
        now = (view.host,) if target is None or target == view.host else (view.host, target)
        self.moves[instance_id] = (now, view.vcpus)
        for host in now:
            moving[host] = moving.get(host, 0) + view.vcpus
        return now if was is None else (*was[0], *now)


def _count_down(count: dict[str, int], key: str) -> None:
    """One fewer of ``key`` in ``count`` (dropped at none)."""
    n = count[key] - 1
    if n:
        count[key] = n
    else:
        del count[key]


def _target_state(view: HostView, retiring: frozenset[str]) -> bool | None:
    """Whether an instance placed on ``view`` stays (True), moves again
    (False), or the host takes none (None); ``retiring``: the hosts the
    session decommissions."""
    if view.type != "compute" or not view.enabled or view.name in retiring:
        return None
    state = view.state
    if state in STAYS:
        return True
    if state == HostState.PENDING:
        return False
    return None


def _new_stamp() -> int:
    return random.getrandbits(48) or 1
