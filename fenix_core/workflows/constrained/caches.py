"""The per-group counts of a session (:class:`_Counts`, a cache of this
process) and what they hold: the pending hosts' loads, the idle groups' weights
(:class:`_Fed`) and the members of limited groups on a target (:class:`_GroupsOn`).

Per-group counts (work left, pending hosts holding members) are a cache of
this process, rebuilt from the views when the session was stepped elsewhere
(``stamp``) or the constraints or the inventory changed, and they only rank
choices: every limit is checked against the views. Each instance's
``planner.Member`` is kept with the counts. The idle groups and the weight
each pending host feeds (``_Fed``) are kept with the counts between opening
decisions and worked out again only for the groups whose work left, pending
hosts or members waiting on the open hosts changed, with each fed host's
most weight: the scores the hosts opened ahead are ranked by."""

from __future__ import annotations

from collections import Counter
from collections.abc import (
    Callable,
    Hashable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

import attrs

from ... import planner
from ...constraints import ConstraintSet
from .budgets import _Recovery
from .draining import _Draining
from .walks import _DrainingTaken, _FleetTargets, _Walk


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
    """:func:`~.opening._idle_and_fed`'s answer, kept between
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
    #: again from its load (:func:`~.opening._open_ahead`). Its
    #: summed idle weight needs nothing kept: ``fed`` less ``feeders``.
    top: dict[str, float] = attrs.field(factory=dict)


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
    #: only add), so its top bounds the smallest host :func:`~.opening._open` could open.
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
    #: Each instance as the planner takes it, built once (:meth:`~.reads._Step.member`).
    members: dict[str, planner.Member] = attrs.field(factory=dict)
    #: The inputs of the last opening decision that opened nothing and
    #: changed nothing (:func:`~.opening._opening_inputs`): one
    #: with the same inputs opens nothing again.
    opened_nothing: tuple[Any, ...] | None = None
    #: The inputs of the last placement that worked out its order, when no
    #: member could start in it (:func:`~.placement._placement_inputs`):
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
    #: next read): what :meth:`~.workflow.ConstrainedWorkflow._run_hosts` advances. Good
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
