"""Placement decisions, as pure functions (no I/O, no clock, no database).

The rolling workflow asks two questions, and both are answered here:

* which host to empty next, such that all its instances fit elsewhere
  (:func:`choose_host_to_drain`), and
* where one instance should go (:func:`choose_target`).

A :class:`Slot` is a host that can receive instances. ``stays`` marks hosts an
instance will not have to leave again in this session (already maintained, or
not part of the session): they are preferred, so that each instance moves once
where capacity allows. Among equal candidates an instance goes where its
project has the fewest instances (spreading replicas of one application), then
to the fullest host that still fits it (best fit keeps whole hosts free).

A :class:`Movable` carries the cloud's placement rules for it
(:class:`~fenix_core.placement_rules.HostLimits`): hosts a hard rule forbids
are never chosen, and a soft rule's preference comes before all of the above.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter, defaultdict
from collections.abc import (
    Callable,
    Collection,
    Container,
    Hashable,
    Iterable,
    Mapping,
    MutableMapping,
    Sequence,
)
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Literal

import attrs

from .placement_rules import HostLimits

if TYPE_CHECKING:
    from .constraints import ConstraintSet, GroupConstraints
    from .model import Host, Instance

__all__ = [
    "Blocked",
    "DrainCandidate",
    "GroupRule",
    "HostLoad",
    "LowerBound",
    "Member",
    "Movable",
    "Slot",
    "SlotIndex",
    "Target",
    "assign_moves",
    "capacity_shortfall",
    "choose_host_to_drain",
    "choose_target",
    "choose_target_indexed",
    "completion_order",
    "completion_order_by_host",
    "drain_seconds",
    "drain_sequence",
    "drains_after",
    "drains_by_count",
    "first_maintained_at",
    "fits_all",
    "group_chain_seconds",
    "host_to_open_ahead",
    "hosts_beyond_room",
    "hosts_to_open",
    "infeasible_groups",
    "left_over_room",
    "makespan_lower_bound",
    "max_hosts_out",
    "plan_placement",
    "takes_a_place",
]


@attrs.frozen
class Movable:
    """An instance that has to leave its host, with the cloud's rules on where
    it may go (``limits``)."""

    instance_id: str
    project_id: str
    vcpus: int
    limits: HostLimits = attrs.field(factory=HostLimits)


@attrs.frozen
class Slot:
    """A host that can receive instances. ``free`` None means unknown capacity."""

    host: str
    free: int | None
    stays: bool
    project_load: Mapping[str, int] = attrs.field(factory=dict)


@attrs.frozen
class DrainCandidate:
    host: str
    items: tuple[Movable, ...]


def _fits(slot_free: int | None, vcpus: int) -> bool:
    return slot_free is None or slot_free >= vcpus


def choose_target(
    item: Movable,
    slots: Sequence[Slot],
    *,
    free: Mapping[str, int | None] | None = None,
    load: Mapping[str, Mapping[str, int]] | None = None,
) -> str | None:
    """The best host for ``item`` among ``slots``, or None if none has room.

    ``free`` / ``load`` override the slots' own figures (used while planning
    several moves at once).
    """
    best: tuple[int, bool, int, int, str] | None = None
    best_host: str | None = None
    for slot in slots:
        slot_free = free[slot.host] if free is not None and slot.host in free else slot.free
        if not _fits(slot_free, item.vcpus) or not item.limits.allows(slot.host):
            continue
        project_load = (load or {}).get(slot.host, slot.project_load)
        key = (
            item.limits.penalty.get(slot.host, 0),
            not slot.stays,
            project_load.get(item.project_id, 0),
            slot_free if slot_free is not None else 1 << 30,
            slot.host,
        )
        if best is None or key < best:
            best, best_host = key, slot.host
    return best_host


_UNKNOWN_FREE = 1 << 30  # how choose_target ranks a slot of unknown capacity


class SlotIndex:
    """Slots kept so that the best target is found without a scan of every
    host: per (stays, free vCPUs) the host names in order, the distinct free
    figures sorted, and per project the hosts where it has instances.

    ``choose_target_indexed`` over it answers what ``choose_target`` answers
    over ``slots()``; the brute-force function stays as the oracle."""

    def __init__(self, slots: Iterable[Slot] = ()) -> None:
        self._slots: dict[str, Slot] = {}
        self._frees: dict[bool, list[int]] = {True: [], False: []}
        self._names: dict[tuple[bool, int], list[str]] = {}
        self._loaded: dict[str, set[str]] = {}  # project -> hosts where it has load
        for slot in slots:
            self.put(slot)

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, host: str) -> Slot | None:
        return self._slots.get(host)

    def slots(self) -> list[Slot]:
        return list(self._slots.values())

    def put(self, slot: Slot) -> None:
        """Add ``slot``, or replace the one of its host."""
        self.remove(slot.host)
        self._slots[slot.host] = slot
        free = _UNKNOWN_FREE if slot.free is None else slot.free
        names = self._names.setdefault((slot.stays, free), [])
        if not names:
            bisect.insort(self._frees[slot.stays], free)
        bisect.insort(names, slot.host)
        for project, n in slot.project_load.items():
            if n:
                self._loaded.setdefault(project, set()).add(slot.host)

    def remove(self, host: str) -> None:
        slot = self._slots.pop(host, None)
        if slot is None:
            return
        free = _UNKNOWN_FREE if slot.free is None else slot.free
        names = self._names[(slot.stays, free)]
        names.pop(bisect.bisect_left(names, host))
        if not names:
            del self._names[(slot.stays, free)]
            frees = self._frees[slot.stays]
            frees.pop(bisect.bisect_left(frees, free))
        for project, n in slot.project_load.items():
            if n:
                self._loaded[project].discard(host)

    def loaded(self, project_id: str) -> Collection[str]:
        return self._loaded.get(project_id, set())

    def plain(self, stays: bool, vcpus: int) -> Iterable[tuple[int, str]]:
        """(free, host) of the slots with ``stays``, room for ``vcpus``,
        best fit first."""
        frees = self._frees[stays]
        for free in frees[bisect.bisect_left(frees, vcpus) :]:
            for host in self._names[(stays, free)]:
                yield free, host


def _target_key(item: Movable, slot: Slot) -> tuple[int, bool, int, int, str] | None:
    """``choose_target``'s ranking of ``slot`` for ``item`` (None: not a target)."""
    if not _fits(slot.free, item.vcpus) or not item.limits.allows(slot.host):
        return None
    return (
        item.limits.penalty.get(slot.host, 0),
        not slot.stays,
        slot.project_load.get(item.project_id, 0),
        _UNKNOWN_FREE if slot.free is None else slot.free,
        slot.host,
    )


def choose_target_indexed(
    item: Movable, index: SlotIndex, *, exclude: Collection[str] = ()
) -> str | None:
    """What ``choose_target(item, [s for s in index.slots() if s.host not in
    exclude])`` answers, without a scan of every slot.

    Hosts with a soft-rule penalty or with instances of the item's project
    are few (its group's members, its project's hosts): ranked one by one.
    Every other host ranks by (not stays, free, name) alone, so the best of
    them is the first in the index's best-fit order that no rule forbids.
    With an affinity rule (``limits.only``) the candidates are those hosts."""
    limits = item.limits
    if limits.only is not None:
        special: Collection[str] = limits.only
    else:
        special = {*limits.penalty, *index.loaded(item.project_id)}
    best: tuple[int, bool, int, int, str] | None = None
    for host in special:
        slot = index.get(host)
        if slot is None or host in exclude:
            continue
        key = _target_key(item, slot)
        if key is not None and (best is None or key < best):
            best = key
    if limits.only is None:
        for stays in (True, False):
            for free, host in index.plain(stays, item.vcpus):
                if host in special or host in exclude or not limits.allows(host):
                    continue
                key = (0, not stays, 0, free, host)
                if best is None or key < best:
                    best = key
                break  # the first plain one is the best plain one with this ``stays``
    return None if best is None else best[-1]


def plan_placement(items: Sequence[Movable], slots: Sequence[Slot]) -> dict[str, str] | None:
    """Place every item (largest first); None if one of them fits nowhere.

    The plan respects capacity: no slot receives more vcpus than it has free.
    """
    free: dict[str, int | None] = {s.host: s.free for s in slots}
    load: dict[str, dict[str, int]] = {s.host: dict(s.project_load) for s in slots}
    plan: dict[str, str] = {}
    for item in sorted(items, key=lambda i: (-i.vcpus, i.instance_id)):
        host = choose_target(item, slots, free=free, load=load)
        if host is None:
            return None
        plan[item.instance_id] = host
        slot_free = free[host]
        if slot_free is not None:
            free[host] = slot_free - item.vcpus
        load[host][item.project_id] = load[host].get(item.project_id, 0) + 1
    return plan


def moves_again(plan: Mapping[str, str], slots: Sequence[Slot]) -> int:
    """How many planned moves land on a host the instance must leave again."""
    stays = {s.host for s in slots if s.stays}
    return sum(1 for host in plan.values() if host not in stays)


def choose_host_to_drain(
    candidates: Iterable[DrainCandidate],
    slots: Sequence[Slot],
    *,
    look_ahead: int = 64,
) -> tuple[str, dict[str, str]] | None:
    """The first candidate (in the given order) whose instances all fit on the
    other slots, preferring one whose instances all land where they stay.

    Returns ``(host, plan)`` or None when no candidate can be emptied, which
    means the projects have to scale in. After the first feasible candidate, at
    most ``look_ahead`` more are tried in search of one with no double moves.
    """
    fallback: tuple[str, dict[str, str]] | None = None
    looked_after_fallback = 0
    for candidate in candidates:
        if fallback is not None:
            looked_after_fallback += 1
            if looked_after_fallback > look_ahead:
                break
        others = [s for s in slots if s.host != candidate.host]
        plan = plan_placement(candidate.items, others)
        if plan is None:
            continue
        if moves_again(plan, others) == 0:
            return candidate.host, plan
        if fallback is None:
            fallback = (candidate.host, plan)
    return fallback


# --------------------------------------------------------------------------- waves
#
# The constrained workflow drains several hosts at once. Each decision is made
# from a snapshot (what is where, what is in flight, which group may lose how
# many more members now) by the functions below; they never look at the clock
# or the database themselves.


@attrs.frozen
class GroupRule:
    """A group's rules, as the planner needs them."""

    group_id: str
    max_impacted: int = 1
    recovery_time: float = 0.0
    anti_affinity: bool = False
    max_per_host: int = 0  # 0: no limit

    @classmethod
    def of(cls, group: GroupConstraints, group_id: str | None = None) -> GroupRule:
        """The rules of a group's constraints; ``group_id`` names it (default: its id)."""
        return cls(
            group_id=group.group_id if group_id is None else group_id,
            max_impacted=group.max_impacted_members,
            recovery_time=float(group.recovery_time),
            anti_affinity=group.anti_affinity_group,
            max_per_host=group.max_instances_per_host,
        )

    def host_limit(self) -> int | None:
        """At most this many members on one host (None: no limit)."""
        if self.anti_affinity:
            return 1
        return self.max_per_host or None


@attrs.frozen
class Member:
    """An instance waiting to leave a host that is being drained."""

    instance_id: str
    project_id: str
    group_id: str
    vcpus: int


@attrs.frozen
class Target:
    """A host that may receive instances now.

    ``free`` counts arrivals in flight (None: unknown capacity); ``stays``
    marks hosts an instance will not have to leave again; ``members`` counts
    each group's members on the host, arrivals in flight included.
    """

    host: str
    free: int | None
    stays: bool
    members: Mapping[str, int] = attrs.field(factory=dict)


@attrs.frozen
class Blocked:
    """Why a member could not start moving now."""

    instance_id: str
    reason: Literal["group", "room"]


def assign_moves(
    waiting: Sequence[Member],
    budgets: Mapping[str, int],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    *,
    twice: Container[str] | None = None,
    ahead: Mapping[str, int] | None = None,
    held: Container[str] = (),
    reserve: bool = False,
    keeps: Callable[[Sequence[tuple[str, str]]], bool] | None = None,
) -> tuple[list[tuple[str, str]], list[Blocked]]:
    """Which waiting members start moving now, and where to.

    ``waiting`` is in priority order; ``budgets`` says how many more members
    of each group may be impacted now. A member starts only if its group has
    budget left and some target has room for it and keeps its group's
    anti-affinity and per-host limit, counting the moves chosen here. Among
    the targets that fit, one where the instance stays is preferred, then one
    with the fewest members of its group, then one that stays able to take a
    member of the groups with a per-host limit still to move (``ahead``: per
    such group, the fewest vcpus of those members), then the fullest (best
    fit). Best fit alone would fill a host that an anti-affine group needs as
    one of its distinct hosts. ``twice``: the members that may go to a target
    they will have to leave again (None: all); the others wait for room where
    they stay (:mod:`fenix_core.second_moves`). ``rules`` must hold every
    group of ``ahead``: without its limit, a host that already holds as many
    members as the group allows would count as a place kept for it.
    ``held``: members of ``waiting`` that cannot start now (not answered
    yet, their lead time): placed in their turn like the others, whatever
    their group's budget, so that the room and the places below a per-host
    limit they will need are not given to a member after them, but neither
    moved nor named as blocked. ``reserve``: a member whose group may lose
    no more now is placed in its turn too (named as blocked, not moved), so
    that the room it will need is not given to a member after it (the
    constrained workflow's hosts opened ahead of their room:
    :func:`host_to_open_ahead`).
    ``keeps``: given the moves chosen so far in this call and one more
    (instance, target) pairs, whether the hosts being drained can still all
    be emptied after them (the constrained workflow's dry run,
    :func:`drains_together`). A member takes the best target that keeps
    them so, in the order above; with none it is blocked for room (it
    waits, and the next member may take its group's budget).

    Where no group of ``waiting`` has a per-host limit (and nothing is
    reserved or checked), the targets are searched by bisection
    (:func:`assign_moves_unlimited`, the same placement); otherwise, or when
    that variant declines, by a pass over every target for each member.
    """
    unruled = sorted(g for g in ahead or () if g not in rules)
    if unruled:
        raise ValueError(f"ahead: no rule for group(s) {', '.join(unruled)} in rules")
    ahead = _limited_ahead(waiting, rules, ahead)
    if not ahead and not reserve and keeps is None and not _any_host_limit(waiting, rules):
        found = assign_moves_unlimited(waiting, budgets, targets, twice=twice, held=held)
        if found is not None:
            return found
    return _assign_moves_scan(
        waiting,
        budgets,
        targets,
        rules,
        twice=twice,
        ahead=ahead,
        held=held,
        reserve=reserve,
        keeps=keeps,
    )


def _any_host_limit(waiting: Iterable[Member], rules: Mapping[str, GroupRule]) -> bool:
    """Whether a group of ``waiting`` has a per-host limit."""
    for group_id in {m.group_id for m in waiting}:
        rule = rules.get(group_id)
        if rule is not None and rule.host_limit() is not None:
            return True
    return False


def _assign_moves_scan(
    waiting: Sequence[Member],
    budgets: Mapping[str, int],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    *,
    twice: Container[str] | None,
    ahead: Mapping[str, int],
    held: Container[str],
    reserve: bool,
    keeps: Callable[[Sequence[tuple[str, str]]], bool] | None = None,
) -> tuple[list[tuple[str, str]], list[Blocked]]:
    """:func:`assign_moves` by a pass over every target for each member
    (``ahead``: already limited to the groups with a per-host limit)."""
    budget = dict(budgets)
    free = {t.host: t.free for t in targets}
    # Per target, the members of each group placed on it in this call.
    added: dict[str, dict[str, int]] = {}
    sizes = _ahead_by_size(ahead, rules)
    # Per target (by position), the most members of one group on it.
    peaks: list[int | None] = [None] * len(targets) if ahead else []
    moves: list[tuple[str, str]] = []
    blocked: list[Blocked] = []
    for item in waiting:
        later = item.instance_id in held
        if not later and budget.get(item.group_id, 0) <= 0:
            blocked.append(Blocked(item.instance_id, "group"))
            if not reserve:
                continue
            later = True  # placed, not moved
        rule = rules.get(item.group_id)
        limit = rule.host_limit() if rule is not None else None
        best: tuple[bool, int, int, int, str] | None = None
        only_stays = twice is not None and item.instance_id not in twice
        checked = keeps is not None and not later
        fitting: list[tuple[bool, int, int, int, str]] = []
        for index, t in enumerate(targets):
            moves_again = not t.stays
            if moves_again and (only_stays or (not checked and best is not None and not best[0])):
                continue  # a target where it stays is found (or the only kind allowed)
            room = free[t.host]
            if room is not None and room < item.vcpus:
                continue
            added_here = added.get(t.host, _NONE_ADDED)
            here = t.members.get(item.group_id, 0) + added_here.get(item.group_id, 0)
            if limit is not None and here >= limit:
                continue
            closes = 0
            if ahead and room is not None:
                peak = peaks[index]
                if peak is None:
                    peak = peaks[index] = max(t.members.values(), default=0)
                closes = _slots_closed(t, room, item, sizes, added_here, peak)
            key = (moves_again, here, closes, room if room is not None else 1 << 30, t.host)
            if checked:
                fitting.append(key)
            elif best is None or key < best:
                best = key
        if checked and keeps is not None:
            # The best target after which the hosts can still be emptied.
            fitting.sort()
            best = next((k for k in fitting if keeps([*moves, (item.instance_id, k[-1])])), None)
        if best is None:
            if not later:
                blocked.append(Blocked(item.instance_id, "room"))
            continue
        host = best[-1]
        if not later:
            moves.append((item.instance_id, host))
            budget[item.group_id] -= 1
        room = free[host]
        if room is not None:
            free[host] = room - item.vcpus
        on = added.setdefault(host, {})
        on[item.group_id] = on.get(item.group_id, 0) + 1
    return moves, blocked


_NONE_ADDED: Mapping[str, int] = {}


#: The room key of a target of unknown capacity (:func:`assign_moves`).
_UNKNOWN_ROOM = 1 << 30


def assign_moves_unlimited(
    waiting: Sequence[Member],
    budgets: Mapping[str, int],
    targets: Sequence[Target],
    *,
    twice: Container[str] | None = None,
    held: Container[str] = (),
) -> tuple[list[tuple[str, str]], list[Blocked]] | None:
    """:func:`assign_moves`' search when no group has a per-host limit (so
    no ``ahead``) and no target counts members: the same moves and blocked
    members, each member's target found by bisection over the targets kept
    sorted by room (the fullest that fits first) instead of a pass over every
    target. None when a precondition it can see does not hold (targets named
    twice or counting members, a member too large for the room key): then
    :func:`assign_moves` decides.

    Without a per-host limit, a target's key for a member is (moves again,
    members of its group placed there in this call, room, name): a target
    where it stays beats every one it would leave again, and among them the
    one without a member of its group placed yet with the least room that
    fits comes first; only when none fits are those with members of its
    group compared (few: those this call placed it on)."""
    if any(m.vcpus > _UNKNOWN_ROOM for m in waiting):
        return None
    free: dict[str, int | None] = {}
    stays_on: dict[str, bool] = {}
    # Per kind (True: instances stay there), (room key, host) sorted.
    by_room: dict[bool, list[tuple[int, str]]] = {True: [], False: []}
    for t in targets:
        host, room = t.host, t.free
        if t.members or host in free:
            return None
        free[host], stays_on[host] = room, t.stays
        by_room[t.stays].append((_UNKNOWN_ROOM if room is None else room, host))
    for rooms in by_room.values():
        rooms.sort()
    budget = dict(budgets)
    added: dict[tuple[str, str], int] = {}
    placed_on: dict[str, set[str]] = {}  # group -> hosts this call placed a member of it on
    moves: list[tuple[str, str]] = []
    blocked: list[Blocked] = []

    def best_of(stays: bool, item: Member) -> tuple[int, int, str] | None:
        rooms, group = by_room[stays], item.group_id
        crowded = placed_on.get(group, ())
        k = bisect.bisect_left(rooms, (item.vcpus, ""))
        while k < len(rooms):
            room, host = rooms[k]
            if host not in crowded:
                return (0, room, host)
            k += 1
        best: tuple[int, int, str] | None = None
        for host in crowded:
            if stays_on[host] is not stays:
                continue
            left = free[host]
            key = _UNKNOWN_ROOM if left is None else left
            if key < item.vcpus:
                continue
            found = (added[(host, group)], key, host)
            if best is None or found < best:
                best = found
        return best

    for item in waiting:
        later = item.instance_id in held
        if not later and budget.get(item.group_id, 0) <= 0:
            blocked.append(Blocked(item.instance_id, "group"))
            continue
        best = best_of(True, item)
        if best is None and (twice is None or item.instance_id in twice):
            best = best_of(False, item)
        if best is None:
            if not later:
                blocked.append(Blocked(item.instance_id, "room"))
            continue
        _here, key, host = best
        if not later:
            moves.append((item.instance_id, host))
            budget[item.group_id] -= 1
        room = free[host]
        if room is not None:
            free[host] = room - item.vcpus
            rooms = by_room[stays_on[host]]
            del rooms[bisect.bisect_left(rooms, (key, host))]
            bisect.insort(rooms, (room - item.vcpus, host))
        pair = (host, item.group_id)
        added[pair] = added.get(pair, 0) + 1
        placed_on.setdefault(item.group_id, set()).add(host)
    return moves, blocked


def _limited_ahead(
    members: Iterable[Member], rules: Mapping[str, GroupRule], ahead: Mapping[str, int] | None
) -> dict[str, int]:
    """``ahead`` with the members of groups with a per-host limit among
    ``members``: per group, the fewest vcpus of one."""
    smallest = dict(ahead or {})
    for m in members:
        rule = rules.get(m.group_id)
        if rule is not None and rule.host_limit() is not None:
            smallest[m.group_id] = min(smallest.get(m.group_id, m.vcpus), m.vcpus)
    return smallest


def _ahead_by_size(
    ahead: Mapping[str, int], rules: Mapping[str, GroupRule]
) -> list[tuple[int, dict[str, int | None], int]]:
    """``ahead``'s groups with their per-host limits, per smallest vcpus of
    a member (ascending), with the lowest of those limits: a target's room
    closes only the groups whose smallest member fits in it before a
    placement and not after, so :func:`_slots_closed` reads those few
    sizes, not every group."""
    by_size: dict[int, dict[str, int | None]] = {}
    for group_id, smallest in ahead.items():
        rule = rules.get(group_id)
        by_size.setdefault(smallest, {})[group_id] = rule.host_limit() if rule is not None else None
    return [
        (size, groups, min((n for n in groups.values() if n is not None), default=1 << 30))
        for size, groups in sorted(by_size.items())
    ]


def _slots_closed(
    target: Target,
    room: int,
    item: Member,
    sizes: Sequence[tuple[int, Mapping[str, int | None], int]],
    added: Mapping[str, int],
    peak: int,
) -> int:
    """How many of the ``ahead`` groups (``sizes``: :func:`_ahead_by_size`)
    ``target`` could take a member of now, and could not once ``item`` is
    placed there (its own group's limit aside: that closes every target
    alike). ``added``: the members per group placed on ``target`` before.
    Each size's groups count but those already at their limit there (only
    groups with members there can be) and ``item``'s own group when it
    would reach its limit. ``peak``: the most members of one group on
    ``target`` (none of a size's groups is at its limit while that and
    the most placed there in this call stay below the lowest limit)."""
    closed = 0
    members = target.members
    for smallest, groups, lowest in sizes:
        if smallest > room:
            break
        if room - item.vcpus >= smallest:
            continue
        closed += len(groups)
        if peak + max(added.values(), default=0) >= lowest:
            closed -= _at_limit(members, added, groups, item.group_id)
        limit = groups.get(item.group_id)
        if limit is not None:
            here = members.get(item.group_id, 0) + added.get(item.group_id, 0)
            if here + 1 >= limit:
                closed -= 1
    return closed


def _at_limit(
    members: Mapping[str, int],
    added: Mapping[str, int],
    groups: Mapping[str, int | None],
    own: str,
) -> int:
    """How many of ``groups`` but ``own`` are at their per-host limit on a
    target holding ``members`` plus ``added`` (only a group with members
    there can be)."""
    full = 0
    for group_id, here in members.items():
        limit = groups.get(group_id)
        if limit is not None and group_id != own and here + added.get(group_id, 0) >= limit:
            full += 1
    for group_id, here in added.items():
        limit = groups.get(group_id)
        if limit is not None and group_id != own and group_id not in members and here >= limit:
            full += 1
    return full


def completion_order(
    waiting: Iterable[Member],
    *,
    host_of: Mapping[str, str],
    moved: Container[str],
    behind: Container[str] = (),
    work: Mapping[str, float] | None = None,
) -> list[Member]:
    """The order in which waiting members take the room there is: those that
    moved once already (they may only go where they stay), then those of the
    host with the fewest vcpus left to move (it empties, is maintained and
    takes instances for good soonest), the largest first on each host.

    The members of the hosts in ``behind`` (opened ahead of their room:
    :func:`hosts_beyond_room`) come after every other, those of the groups
    with the most ``work`` left first: what room is left over goes to the
    longest chains' members, which would hold those hosts' drains longest."""
    on: dict[str, list[Member]] = {}
    for m in waiting:
        host = host_of[m.instance_id]
        found = on.get(host)
        if found is None:
            on[host] = [m]
        else:
            found.append(m)
    left = {host: sum(m.vcpus for m in members) for host, members in on.items()}
    return completion_order_by_host(on, left, moved=moved, behind=behind, work=work)


def completion_order_by_host(
    on: Mapping[str, Sequence[Member]],
    left: Mapping[str, int],
    *,
    moved: Container[str],
    behind: Container[str] = (),
    work: Mapping[str, float] | None = None,
) -> list[Member]:
    """:func:`completion_order` of the members ``on`` each host (in any
    order; the lists are not changed), ``left`` the vcpus each host has
    left to move: its members' sum, or more when the caller left some out
    of ``on`` (a host keeps the place all its members give it, and those
    given keep their order). The hosts are sorted, and each host's
    members apart (a placement orders every draining host's members, and
    a sort of them all compared a tuple of seven per pair). The hosts
    ``behind`` are one or two of the draining hosts: only their members
    are sorted by the whole key."""
    first: list[Member] = []
    then: list[Member] = []
    late: list[tuple[tuple[float, bool, int, str, int, str], Member]] = []
    work = work or {}
    for host in sorted(on, key=lambda h: (left[h], h)):
        members = on[host]
        if host in behind:
            vcpus = left[host]
            late.extend(
                (
                    (
                        -work.get(m.group_id, 0.0),
                        m.instance_id not in moved,
                        vcpus,
                        host,
                        -m.vcpus,
                        m.instance_id,
                    ),
                    m,
                )
                for m in members
            )
            continue
        for m in sorted(members, key=_largest_first) if len(members) > 1 else members:
            (then if m.instance_id not in moved else first).append(m)
    first.extend(then)
    if late:
        late.sort(key=_KEY)
        first.extend(map(_MEMBER, late))
    return first


_KEY = itemgetter(0)
_MEMBER = itemgetter(1)


def _largest_first(m: Member) -> tuple[int, str]:
    return (-m.vcpus, m.instance_id)


def left_over_room(
    order: Sequence[Member],
    *,
    host_of: Mapping[str, str],
    behind: Container[str],
    budgets: Mapping[str, int],
    room: int,
) -> list[Member]:
    """``order`` with only the members of the hosts ``behind`` that the
    ``room`` left over (vcpus where instances stay beyond what the other
    draining hosts' members need) takes: each in turn while its group may
    lose one more and it fits in what they left. The others' members keep
    the room they need, counted rather than placed (:func:`assign_moves`'
    ``reserve`` places them, which groups with a per-host limit need)."""
    budget = dict(budgets)
    kept: list[Member] = []
    for m in order:
        if host_of[m.instance_id] in behind:
            if m.vcpus > room:
                continue
            room -= m.vcpus  # its room is kept, even while its group waits
            if budget.get(m.group_id, 0) <= 0:
                continue
            budget[m.group_id] -= 1
        kept.append(m)
    return kept


def hosts_beyond_room(left: Mapping[str, int], room: int) -> set[str]:
    """The hosts whose members do not fit in ``room`` vcpus once the hosts
    with fewer vcpus ``left`` to move took theirs (in
    :func:`completion_order`'s order of hosts): none while the room covers
    every host, the host opened ahead of its room
    (:func:`host_to_open_ahead`) otherwise."""
    beyond: set[str] = set()
    if sum(left.values()) <= room:
        return beyond  # the room covers every host: nothing to sort
    for host, vcpus in sorted(left.items(), key=lambda item: (item[1], item[0])):
        room -= vcpus
        if room < 0:
            beyond.add(host)
    return beyond


@attrs.frozen
class HostLoad:
    """A host that still has to be maintained, with what runs on it."""

    host: str
    members: tuple[Member, ...]
    position: int = 0
    #: The groups of its members, worked out once (a load is kept between
    #: decisions, and each decision ranks up to 128 of them by their groups).
    groups: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    @groups.default
    def _groups_of_members(self) -> frozenset[str]:
        return frozenset([m.group_id for m in self.members])

    @property
    def vcpus(self) -> int:
        return sum(m.vcpus for m in self.members)


def hosts_to_open(
    candidates: Sequence[HostLoad],
    *,
    draining: Sequence[HostLoad],
    targets: Sequence[Target],
    idle_groups: Mapping[str, float],
    slots: int,
    rules: Mapping[str, GroupRule] | None = None,
    feasible: Callable[[Sequence[str]], bool] | None = None,
    last: Container[str] = (),
    wait: Callable[[HostLoad], float] | None = None,
) -> list[str]:
    """Which pending hosts to start draining now (at most ``slots``).

    An empty host is always worth opening. Otherwise a host is opened when it
    gives work to a group that may lose a member now but has nothing to move
    (``idle_groups``, weighted by how much work the group still has), and only
    while everything left on the draining hosts, this one included, still fits
    on the targets that remain: a host opened is a target lost. The host
    feeding the idle group with the most work left comes first, then the one
    feeding the most idle work (greedy set cover): the longest chain sets the
    makespan, and ranked by the idle work alone a host holding members of
    many short chains went before its hosts (the reference scenario of
    benchmarks/makespan.py ended 109 s over its bound, 2 s with this order).
    The hosts in ``last`` come after every other host, in the same order
    among themselves: the constrained workflow names the hosts that hold
    instances parked there by a first wave (:mod:`fenix_core.second_moves`),
    which give the least room back for the room they take.

    ``wait``, when given, says how long a host opened now would wait for its
    groups' slots before it is empty (:func:`opening_wait`); a host's work
    left of an idle group counts that much less: a host out of service
    while its members wait for groups busy elsewhere holds room and a place
    among the hosts out that another host, whose members can leave at once,
    would use (seed 3 of benchmarks/makespan.py's default family: 1.213 x
    the bound without it, 1.156 with it).

    The greedy ranking is kept in a heap and a host's score is recomputed only
    when a group it feeds is covered (scores only fall), and the capacity
    totals of :func:`fits_all` are kept as running sums, so that rejecting a
    host costs O(1) instead of a pass over every host and target; once those
    totals cannot take the lightest candidate left, none is looked at again.
    """
    if slots <= 0:
        return []
    idle = dict(idle_groups)
    loads = list(candidates)
    groups = [load.groups for load in loads]

    waits: dict[int, float] = {}

    def longest(k: int) -> float:
        """The most work left of an idle group the host feeds."""
        if not loads[k].members:
            return math.inf
        return max((idle.get(g, 0.0) for g in groups[k]), default=0.0)

    # The hosts whose entry in the heap is ranked without their wait, not
    # worked out yet: a wait is at least 0, so such an entry ranks no later
    # than the host's true rank, and it is ranked again when it comes up
    # (a wait simulates each member's turn in its groups' slots, and most
    # of the candidates ranked never come up).
    rough: set[int] = set()

    def score(k: int) -> tuple[float, float]:
        """The most work left of an idle group the host feeds, less its wait
        (``wait``; not worked out yet: the host is put in ``rough``), and
        the idle work it feeds."""
        if not loads[k].members:
            return (math.inf, math.inf)
        fed = [idle.get(g, 0.0) for g in groups[k]]
        top = max(fed, default=0.0)
        if wait is not None and top > 0:
            found = waits.get(k)
            if found is None:
                rough.add(k)
                return (top, sum(fed))
            top -= found
        rough.discard(k)
        return (top, sum(fed))

    def key(k: int) -> tuple[bool, float, float, int, int, str, int]:
        return (*_opening_rank(loads[k], score(k), last), k)

    heap = [key(k) for k in range(len(loads))]
    heapq.heapify(heap)
    current = {entry[-1]: entry for entry in heap}
    feeds: dict[str, list[int]] = {}
    for k, gs in enumerate(groups):
        for g in gs:
            if g in idle:
                feeds.setdefault(g, []).append(k)
    remaining = {t.host: t for t in targets}
    room = _Room(remaining.values(), rules or {})
    need_members: list[Member] = [m for h in draining for m in h.members]
    room.need(need_members)
    # The candidates by their vCPUs, lightest first: once the room left
    # cannot take the lightest one still ranked, every other is turned down
    # on its totals too (``_Room.may_fit``), and the ranking stops there
    # instead of re-ranking and rejecting them one by one.
    by_load = sorted((load.vcpus, k) for k, load in enumerate(loads) if load.members)
    empty = [k for k, load in enumerate(loads) if not load.members]
    lightest = 0

    def none_fits() -> bool:
        nonlocal lightest
        while lightest < len(by_load) and by_load[lightest][1] not in current:
            lightest += 1
        return (
            lightest < len(by_load)
            and room.short_of(by_load[lightest][0])
            and not any(k in current for k in empty)
        )

    opened: list[str] = []
    if none_fits():
        return opened
    while heap and len(opened) < slots:
        entry = heapq.heappop(heap)
        k = entry[-1]
        if current.get(k) != entry:
            continue  # re-ranked since: a newer entry is in the heap
        if k in rough and wait is not None:  # ranked without its wait: again with it
            waits[k] = wait(loads[k])
            current[k] = fresh = key(k)
            heapq.heappush(heap, fresh)
            continue
        del current[k]
        load = loads[k]
        if longest(k) <= 0:
            if entry[0] or not last:
                break  # feeds no idle group, nor does any host after it
            continue  # a host of ``last`` after it still may
        if load.members:
            if not room.may_fit(load):
                continue
            others = [t for name, t in remaining.items() if name != load.host]
            if not fits_all([*need_members, *load.members], others, rules):
                continue
            if feasible is not None and not feasible([*opened, load.host]):
                continue  # it could go now, but the hosts after it could not
        dropped = remaining.pop(load.host, None)
        if dropped is not None:
            room.drop(dropped)
        opened.append(load.host)
        need_members.extend(load.members)
        room.need(load.members)
        if none_fits():
            break
        for group in groups[k]:
            if idle.pop(group, None) is None:
                continue
            for other in feeds.get(group, ()):
                if other in current:
                    current[other] = fresh = key(other)
                    heapq.heappush(heap, fresh)
    return opened


def group_slots(
    rule: GroupRule, busy: Iterable[float], queued: int, *, move_seconds: float
) -> list[float]:
    """When each of a group's ``max_impacted`` slots is next free, in
    seconds from now, as a heap (soonest first): a slot held by a member
    moving or in its recovery_time (``busy``: when each is over; the latest
    ``max_impacted`` of them when more) frees then, the others now; then
    each of the ``queued`` members (left on the hosts already open, which
    go first) takes the soonest slot for a move and the recovery_time."""
    limit = max(1, rule.max_impacted)
    held = sorted(busy)[-limit:]
    slots = [0.0] * (limit - len(held)) + held
    heapq.heapify(slots)
    pace = move_seconds + rule.recovery_time
    for _ in range(queued):
        heapq.heapreplace(slots, slots[0] + pace)
    return slots


def opening_wait(
    load: HostLoad,
    slots: Callable[[str], Sequence[float]],
    rules: Callable[[str], GroupRule],
    *,
    move_seconds: float,
) -> float:
    """Seconds until a host opened now could be empty at its groups' pace,
    at the earliest: per group, its members on the host each take the
    soonest of the group's slots (``slots``: :func:`group_slots`) for a
    move and the recovery_time; the last one's move ends (the longest over
    its groups, one move at least). Room is not counted: it is what the
    opening decision checks."""
    count: Counter[str] = Counter(m.group_id for m in load.members)
    longest = move_seconds if count else 0.0
    for group_id, members in count.items():
        heap = list(slots(group_id))
        pace = move_seconds + rules(group_id).recovery_time
        start = 0.0
        for _ in range(members):
            start = heap[0]
            heapq.heapreplace(heap, start + pace)
        longest = max(longest, start + move_seconds)
    return longest


def _opening_rank(
    load: HostLoad, score: tuple[float, float], last: Container[str]
) -> tuple[bool, float, float, int, int, str]:
    """A candidate's rank in :func:`hosts_to_open` (smallest first): the
    hosts of ``last`` after the others, then by ``score`` (the most work
    left of an idle group it feeds, and the idle work it feeds) highest
    first, then the fewest members, its position and name."""
    longest, total = score
    return (load.host in last, -longest, -total, len(load.members), load.position, load.host)


def host_to_open_ahead(
    candidates: Sequence[HostLoad],
    *,
    idle_groups: Mapping[str, float],
    room: int,
    last: Container[str] = (),
    scores: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[HostLoad, Member] | None:
    """The host to open ahead of its room, and the member it is opened for:
    when no host can be opened whole (:func:`hosts_to_open` finds none)
    while ``room`` vcpus where instances stay are left over once every
    draining host's members are counted, the candidate :func:`hosts_to_open`
    would rank first, if its smallest member of the idle group with the most
    work left that it feeds fits in that room. None otherwise (the first
    candidate only: another would take the room its chain needs next).

    Opened, its members of the longest chains leave as their groups and
    that room allow (:func:`completion_order`'s ``behind``), its others
    once room comes back; the hosts draining before it keep the room they
    need (:func:`left_over_room`, or :func:`assign_moves`'s ``reserve``
    where a group has a per-host limit). Hosts then drain in about one
    round of each group instead of waiting, once open, for the rounds of
    groups busy elsewhere: a host's drain is mostly the wait for a few
    members of the longest chains, while the room it needs whole comes back
    only as hosts are maintained (see docs/constraints.md).

    ``scores``: each candidate's (most, sum) of the ``idle_groups`` weights
    of its ``groups``, as the caller keeps them between decisions, instead
    of working them out here from every candidate's groups; a candidate
    without one feeds no idle group and is passed over. Trusted as given:
    any other mapping ranks otherwise, with no error."""
    best: tuple[tuple[bool, float, float, int, int, str], HostLoad] | None = None
    if scores is not None:
        score_of = scores.get
        for load in candidates:
            score = score_of(load.host)
            if score is None:
                continue
            rank = _opening_rank(load, score, last)
            if best is None or rank < best[0]:
                best = (rank, load)
    else:
        weight_of = idle_groups.get  # one lookup per group (up to 128 hosts' groups)
        for load in candidates:
            fed = [w for g in load.groups if (w := weight_of(g)) is not None]
            if not fed:
                continue
            rank = _opening_rank(load, (max(fed), sum(fed)), last)
            if best is None or rank < best[0]:
                best = (rank, load)
    if best is None:
        return None
    load = best[1]
    longest = -best[0][1]
    member = min(
        (m for m in load.members if idle_groups.get(m.group_id) == longest),
        key=lambda m: (m.vcpus, m.instance_id),
    )
    return (load, member) if member.vcpus <= room else None


class _Room:
    """The totals :func:`fits_all` checks first (vcpus free, and per group
    with a per-host limit the places left below it), as running sums over
    the targets left, so that a candidate host is checked in O(its groups)."""

    def __init__(self, targets: Iterable[Target], rules: Mapping[str, GroupRule]) -> None:
        self.rules = rules
        self.targets = {t.host: t for t in targets}
        self.free = 0
        self.unknown = 0
        for t in self.targets.values():
            if t.free is None:
                self.unknown += 1
            else:
                self.free += max(0, t.free)
        self.vcpus = 0
        self.count: dict[str, int] = {}
        self.limits: dict[str, int] = {}
        self.places: dict[str, int] = {}  # per limited group, over the targets left

    def _limit(self, group_id: str) -> int | None:
        rule = self.rules.get(group_id)
        return rule.host_limit() if rule is not None else None

    def _places(self, group_id: str, limit: int) -> int:
        found = self.places.get(group_id)
        if found is None:
            found = self.places[group_id] = sum(
                max(0, limit - t.members.get(group_id, 0)) for t in self.targets.values()
            )
        return found

    def need(self, members: Iterable[Member]) -> None:
        for m in members:
            self.vcpus += m.vcpus
            self.count[m.group_id] = self.count.get(m.group_id, 0) + 1
            limit = self._limit(m.group_id)
            if limit is not None:
                self.limits[m.group_id] = limit

    def drop(self, target: Target) -> None:
        del self.targets[target.host]
        if target.free is None:
            self.unknown -= 1
        else:
            self.free -= max(0, target.free)
        for group_id, places in self.places.items():
            limit = self._limit(group_id)
            assert limit is not None  # only limited groups are counted
            self.places[group_id] = places - max(0, limit - target.members.get(group_id, 0))

    def short_of(self, vcpus: int) -> bool:
        """Whether :meth:`may_fit` turns down on its totals any host of at
        least ``vcpus`` (its own room, if a target, only lowers what is free)."""
        return not self.unknown and self.free < self.vcpus + vcpus

    def may_fit(self, load: HostLoad) -> bool:
        """False when :func:`fits_all` of everything needed plus ``load``'s
        members on the targets left but ``load``'s own host is sure to fail
        on its totals (True: it may fit; :func:`fits_all` decides)."""
        own = self.targets.get(load.host)
        unknown = self.unknown - (1 if own is not None and own.free is None else 0)
        if not unknown:
            free = self.free - (max(0, own.free) if own is not None and own.free is not None else 0)
            if free < self.vcpus + load.vcpus:
                return False
        extra: dict[str, int] = {}
        for m in load.members:
            extra[m.group_id] = extra.get(m.group_id, 0) + 1
        for group_id in {*extra, *self.limits}:
            limit = self._limit(group_id)
            if limit is None:
                continue
            places = self._places(group_id, limit)
            if own is not None:
                places -= max(0, limit - own.members.get(group_id, 0))
            if places < self.count.get(group_id, 0) + extra.get(group_id, 0):
                return False
        return True


def fits_all(
    members: Sequence[Member],
    targets: Iterable[Target],
    rules: Mapping[str, GroupRule] | None = None,
) -> bool:
    """Whether the targets can take every member: enough vcpus in total, and
    for each group with a per-host limit, enough hosts below that limit.

    Totals first (cheap), then a greedy placement of every member, largest
    first, as :func:`assign_moves` would do it, unless the totals settle
    that too: with no per-host limit, a member is refused only when every
    target has less room than it, which the room to spare rules out
    (:func:`_room_to_spare`).
    """
    rules = rules or {}
    need = sum(m.vcpus for m in members)
    unknown = False
    free = 0
    target_list = list(targets)
    for t in target_list:
        if t.free is None:
            unknown = True
        else:
            free += max(0, t.free)
    if not unknown and free < need:
        return False
    per_group: dict[str, int] = {}
    for m in members:
        per_group[m.group_id] = per_group.get(m.group_id, 0) + 1
    limited = False
    for group_id, count in per_group.items():
        rule = rules.get(group_id)
        limit = rule.host_limit() if rule is not None else None
        if limit is None:
            continue
        limited = True
        room = sum(max(0, limit - t.members.get(group_id, 0)) for t in target_list)
        if room < count:
            return False
    if not limited and not unknown and members and _room_to_spare(members, need, target_list):
        return True
    # The totals fit; a greedy placement (largest first) settles fragmentation
    # and limits that interact.
    order = sorted(members, key=lambda m: (-m.vcpus, m.instance_id))
    return not assign_moves(order, dict(per_group), target_list, rules)[1]


def _room_to_spare(members: Sequence[Member], need: int, targets: Sequence[Target]) -> bool:
    """Whether a greedy placement of ``members`` (``need`` vcpus) with no
    per-host limit cannot run short on ``targets`` (every room known),
    whatever target it picks each time: a member of ``v`` vcpus is refused
    only when each target has at most ``v - 1`` left, so at most ``(v - 1)``
    times the targets that had room, which is at least what was free less
    what the members before it took (less than ``need - v``). With at least
    ``(largest - 1)`` per target with room to spare over ``need``, none is.
    A target named twice counts once, as the placement counts it."""
    free = {t.host: t.free for t in targets}
    room = 0
    hosts = 0
    for left in free.values():
        if left is not None and left > 0:
            room += left
            hosts += 1
    return hosts > 0 and room - need >= hosts * (max(m.vcpus for m in members) - 1)


def infeasible_groups(
    members_by_group: Mapping[str, int],
    rules: Mapping[str, GroupRule],
    usable_hosts: int,
) -> list[str]:
    """Groups whose per-host limit cannot hold while one host is out of service.

    With ``usable_hosts`` compute hosts (in the session or not) and one of
    them in maintenance, a group with a per-host limit L holds at most
    L * (usable_hosts - 1) members.
    """
    bad: list[str] = []
    for group_id, count in sorted(members_by_group.items()):
        rule = rules.get(group_id)
        limit = rule.host_limit() if rule is not None else None
        if limit is not None and count > limit * max(0, usable_hosts - 1):
            bad.append(group_id)
    return bad


@attrs.frozen
class LowerBound:
    """A makespan no schedule can beat, and what sets it."""

    seconds: float
    capacity_bound: float
    group_bound: float
    critical_group: str | None
    #: When the group chains start (see makespan_lower_bound).
    first_final_move_at: float = 0.0


def makespan_lower_bound(
    *,
    host_work: Sequence[float],
    max_parallel_hosts: int,
    members_by_group: Mapping[str, int],
    rules: Mapping[str, GroupRule],
    move_seconds: float,
    first_final_move_at: float = 0.0,
    capacity_floor: float = 0.0,
) -> LowerBound:
    """A lower bound on the makespan of maintaining every host once.

    * capacity: the hosts' work spread perfectly over the largest number of
      hosts that can be out of service together (and never less than the
      longest single host's work), or ``capacity_floor`` when larger (the
      same bound counted host by host, :func:`fenix_core.opening_bound.opening_bound`:
      whole rounds of work after the first move);
    * groups: each member has to make one final move, to a host where it
      stays (every host is maintained), at most ``max_impacted`` at a time
      with ``recovery_time`` between a move's end and the next impact; the
      host of the last member to move still has its own work to do after it.
      No final move starts before ``first_final_move_at`` (when the first
      target where instances stay can exist:
      :func:`fenix_core.second_moves.first_final_move_at` counts one move
      before the first host's work, :func:`first_maintained_at` that host's
      drain at its groups' pace; docs/constraints.md argues both); moves before it
      land on hosts that are maintained later, and those members still owe
      their final move.
    """
    work = sorted(host_work)
    parallel = max(1, max_parallel_hosts)
    capacity_bound = max(sum(work) / parallel, work[-1] if work else 0.0, capacity_floor)
    shortest = work[0] if work else 0.0
    group_bound = 0.0
    critical: str | None = None
    for group_id, count in members_by_group.items():
        if count <= 0:
            continue
        rule = rules.get(group_id, GroupRule(group_id))
        chain = first_final_move_at + group_chain_seconds(count, rule, move_seconds) + shortest
        if chain > group_bound:
            group_bound, critical = chain, group_id
    return LowerBound(
        max(capacity_bound, group_bound),
        capacity_bound,
        group_bound,
        critical,
        first_final_move_at,
    )


def group_chain_seconds(count: int, rule: GroupRule, move_seconds: float) -> float:
    """The least time from the first to the end of the last of ``count``
    moves of the group's members: ``max_impacted`` at a time, a member
    impacted from its move's start until ``recovery_time`` after its end."""
    if count <= 0:
        return 0.0
    rounds = -(-count // max(1, rule.max_impacted))
    return rounds * move_seconds + (rounds - 1) * rule.recovery_time


def drain_seconds(
    members_by_group: Mapping[str, int],
    rules: Mapping[str, GroupRule],
    *,
    instances: int,
    move_seconds: float,
) -> float:
    """The least time from the start of a session until a host holding
    ``instances`` instances, ``members_by_group`` of them in groups, can be
    empty: each leaves by a move of at least ``move_seconds``, and a group's
    moves off it run at most ``max_impacted`` at a time with
    ``recovery_time`` after each (its other members' moves only take more
    of its slots)."""
    if instances <= 0:
        return 0.0
    return max(
        move_seconds,
        max(
            (
                group_chain_seconds(count, rules.get(g, GroupRule(g)), move_seconds)
                for g, count in members_by_group.items()
            ),
            default=0.0,
        ),
    )


def first_maintained_at(
    hosts: Sequence[tuple[float, Mapping[str, int], int]],
    rules: Mapping[str, GroupRule],
    *,
    move_seconds: float,
) -> float:
    """The earliest time a host of the session can be maintained, for the
    group chains of :func:`makespan_lower_bound` (``first_final_move_at``)
    when no host outside the session can take an instance for good.

    ``hosts``: per host, its work (seconds), its members per group and its
    instances. A host's work starts once it is empty (:func:`drain_seconds`
    after the start at the earliest), so the first maintenance is at least
    the least of drain plus work. Before it, no host where an instance stays
    exists: every final move starts after it. Tighter than one move plus
    work when every host holds more members of some group than it lets move
    at once (:func:`fenix_core.second_moves.first_final_move_at` counts one
    move).
    """
    return min(
        (
            work + drain_seconds(members, rules, instances=count, move_seconds=move_seconds)
            for work, members, count in hosts
        ),
        default=0.0,
    )


def max_hosts_out(capacities: Sequence[int], load: int) -> int:
    """The most hosts that can be empty at once while ``load`` vcpus still fit
    on the others (largest hosts stay in service)."""
    if load <= 0:
        return len(capacities)
    ordered = sorted(capacities, reverse=True)
    total = 0
    for index, capacity in enumerate(ordered):
        total += capacity
        if total >= load:
            return len(ordered) - index - 1
    return 0


def drain_sequence(
    loads: Sequence[HostLoad],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    *,
    first: Sequence[str] = (),
    together: bool = False,
    then: Sequence[str] = (),
    verdicts: MutableMapping[Hashable, HostLoad | None] | None = None,
) -> tuple[list[str], HostLoad | None]:
    """A dry run of maintaining ``loads`` one host at a time: can every host be
    emptied in turn, its members placed on the other hosts (capacity, group
    limits) in the rounds the waves move them in (:func:`_emptied_in_rounds`),
    each emptied host then taking instances itself?

    Returns the order found and, if it gets stuck, the first host that could
    not be emptied. ``targets`` are every host that may receive instances,
    the hosts of ``loads`` included (with their own members counted). Greedy:
    a None answer means "found an order", a host means "found none this way",
    which the constrained workflow treats as infeasible before touching any
    host rather than finding out half-way. ``first`` forces the order of the
    first hosts (to ask "may this host go now and the rest still follow?").
    ``together``: the hosts of ``first`` drain at the same time (the hosts
    draining now and those opened with them), in whichever order they empty
    (``first``'s order is not forced then), before any other. Each of them is
    emptied onto the hosts outside ``first`` where its members fit there, as
    the waves place them on the room there is now; only when they do not fit
    there do they wait for the hosts of ``first`` emptied before it, and none
    lands on one not emptied yet. Emptied one after the other onto every host
    instead, a later host's members landed on an earlier one in the dry run
    while the waves filled the other hosts, and the session got stuck
    half-way.

    ``then`` (with ``together``): the hosts emptied right after those of
    ``first``, in this order, before the greedy choice goes on. Without it,
    where the greedy order gets stuck after the hosts of ``first`` and a
    group has a per-host limit, a few other orders are tried
    (:func:`_another_order`) before answering stuck.

    ``verdicts`` (with ``together``): what the run of the hosts after those
    of ``first`` found, keyed by everything it reads (the hosts' room,
    members and kinds, the hosts left and the rules): a run that empties
    ``first``'s hosts into a state met before returns its answer without
    running the rest again (the order then stops at ``first``'s hosts).
    The constrained workflow's check of the waves' moves asks from states
    that differ only in where a few of the draining hosts' members go, and
    most of them leave the same state once those hosts are emptied.
    """
    free: dict[str, int | None] = {t.host: t.free for t in targets}
    stays: dict[str, bool] = {t.host: t.stays for t in targets}
    limited_groups = {g for g, rule in rules.items() if rule.host_limit() is not None}
    # The limited groups' members per host; a group with none there is left
    # out (a target's members are read with a default of 0).
    counts: dict[str, dict[str, int]] = {
        t.host: {g: n for g, n in t.members.items() if n and g in limited_groups} for t in targets
    }
    pending = sorted(loads, key=lambda h: (h.vcpus, h.position, h.host))
    where: dict[str, list[Member]] = {h.host: list(h.members) for h in pending}
    # The limited groups' members on the hosts left, per group and vcpus.
    sizes: dict[str, Counter[int]] = defaultdict(Counter)
    for h in pending if limited_groups else ():
        for m in h.members:
            if m.group_id in limited_groups:
                sizes[m.group_id][m.vcpus] += 1
    left_hosts = {h.host for h in pending}
    order: list[str] = []
    forced = list(then) if together else list(first)
    draining = frozenset(first) if together else frozenset()
    rest: Hashable = None  # the key of the state after the hosts of first
    while pending:
        if verdicts is not None and draining and rest is None and draining.issubset(order):
            rest = _rest_key(pending, where, free, stays, counts, rules)
            if rest in verdicts:
                return order, verdicts[rest]
        candidates = pending
        closed: frozenset[str] = frozenset()
        if draining and not draining.issubset(order):
            # Whichever of them empties first: the lightest, as before.
            candidates = [h for h in pending if h.host in draining]
            closed = draining
        elif forced:
            name = forced.pop(0)
            candidates = [h for h in pending if h.host == name]
        for load in candidates:
            ahead = _smallest_beside(sizes, where[load.host]) if limited_groups else None
            emptied = partial(
                _emptied_in_rounds,
                load.host,
                where[load.host],
                free,
                stays,
                counts,
                rules,
                ahead,
                rounds=bool(limited_groups),
            )
            placed = emptied(closed=closed)
            if placed is None and closed:
                # No room elsewhere: its members wait for those of the hosts
                # draining with it that were emptied, as the waves' do.
                placed = emptied(closed=closed - set(order))
            if placed is None:
                continue
            for member, host in placed:
                room = free[host]
                if room is not None:
                    free[host] = room - member.vcpus
                if member.group_id in limited_groups:
                    counts[host][member.group_id] = counts[host].get(member.group_id, 0) + 1
                if host in where:
                    where[host].append(member)
            members = where[load.host]
            room = free[load.host]
            if room is not None:
                free[load.host] = room + sum(m.vcpus for m in members)
            for member in members:
                if member.group_id in limited_groups:
                    on = counts[load.host]
                    on[member.group_id] = on.get(member.group_id, 0) - 1
            where[load.host] = []
            stays[load.host] = True
            order.append(load.host)
            pending.remove(load)
            left_hosts.discard(load.host)
            for member, host in placed if limited_groups else ():
                if host not in left_hosts and member.group_id in limited_groups:
                    sizes[member.group_id][member.vcpus] -= 1
            break
        else:
            stuck = candidates[0] if candidates else pending[0]
            found = HostLoad(stuck.host, tuple(where[stuck.host]), stuck.position)
            if together and limited_groups and not then:
                other = _another_order(loads, targets, rules, first, order)
                if other is not None:
                    order, found = other, None
            if verdicts is not None and rest is not None:
                _remember(verdicts, rest, found)
            return order, found
    if verdicts is not None and rest is not None:
        _remember(verdicts, rest, None)
    return order, None


#: How many verdicts :func:`drain_sequence` keeps in its ``verdicts`` (the
#: oldest goes first): the states of the last few draining sets are what
#: the checks meet again.
VERDICTS_KEPT = 64


def _remember(
    verdicts: MutableMapping[Hashable, HostLoad | None], key: Hashable, found: HostLoad | None
) -> None:
    while len(verdicts) >= VERDICTS_KEPT:
        del verdicts[next(iter(verdicts))]
    verdicts[key] = found


def _rest_key(
    pending: Sequence[HostLoad],
    where: Mapping[str, Sequence[Member]],
    free: Mapping[str, int | None],
    stays: Mapping[str, bool],
    counts: Mapping[str, Mapping[str, int]],
    rules: Mapping[str, GroupRule],
) -> Hashable:
    """Everything :func:`drain_sequence` reads from a point on, as one value:
    the hosts left in their order with their members, each host's room,
    kind and limited groups' members (a group with none there left out),
    and the rules."""
    return (
        tuple((h.host, h.position, tuple(where[h.host])) for h in pending),
        tuple(
            (host, room, stays[host], tuple(sorted((g, n) for g, n in counts[host].items() if n)))
            for host, room in free.items()
        ),
        tuple(sorted(rules.items())),
    )


def _smallest_beside(
    sizes: Mapping[str, Counter[int]], members: Sequence[Member]
) -> dict[str, int]:
    """Per group of ``sizes`` (its members' vcpus on some hosts, ``members``
    among them), the fewest vcpus of one of its members that are not
    ``members``: :func:`_limited_ahead` of the others, without reading them."""
    own: Counter[tuple[str, int]] = Counter((m.group_id, m.vcpus) for m in members)
    smallest: dict[str, int] = {}
    for group_id, counted in sizes.items():
        left = [v for v, n in counted.items() if n > own[(group_id, v)]]
        if left:
            smallest[group_id] = min(left)
    return smallest


def _emptied_in_rounds(
    host: str,
    members: Sequence[Member],
    free: Mapping[str, int | None],
    stays: Mapping[str, bool],
    counts: Mapping[str, Mapping[str, int]],
    rules: Mapping[str, GroupRule],
    ahead: Mapping[str, int] | None,
    *,
    rounds: bool,
    closed: Collection[str] = (),
) -> list[tuple[Member, str]] | None:
    """Where ``host``'s members go when it is emptied alone, as the waves
    move them: in rounds of each group's ``max_impacted`` (the others wait
    for the next round), each round placed by :func:`assign_moves` on the
    other targets as the rounds before left them. ``counts`` holds only the
    limited groups' members, as the waves' targets count them: a round does
    not see where an earlier one put a group without a per-host limit.
    ``rounds`` False (no group has a per-host limit): one round, every
    member at once; where each goes then decides room alone, and each round
    costs a pass over every target. ``closed``: hosts that take no member
    (draining with ``host``). None if a member finds no room."""
    left = sorted(members, key=lambda m: (-m.vcpus, m.instance_id))
    if not rounds:
        budgets = {m.group_id: len(left) for m in left}
    else:
        budgets = {
            m.group_id: max(1, rules[m.group_id].max_impacted if m.group_id in rules else 1)
            for m in left
        }
    others = {
        name: Target(name, room, stays[name], counts[name])
        for name, room in free.items()
        if name != host and name not in closed
    }
    placed: list[tuple[Member, str]] = []
    while left:
        moves, blocked = assign_moves(left, budgets, list(others.values()), rules, ahead=ahead)
        if not moves or any(b.reason == "room" for b in blocked):
            return None
        by_id = {m.instance_id: m for m in left}
        for instance_id, name in moves:
            member = by_id[instance_id]
            placed.append((member, name))
            was = others[name]
            room = None if was.free is None else was.free - member.vcpus
            mine = was.members
            rule = rules.get(member.group_id)
            if rule is not None and rule.host_limit() is not None:
                mine = {**mine, member.group_id: mine.get(member.group_id, 0) + 1}
            others[name] = Target(name, room, was.stays, mine)
        waiting = {b.instance_id for b in blocked}
        left = [m for m in left if m.instance_id in waiting]
    return placed


def drains_by_count(
    loads: Sequence[HostLoad],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    *,
    first: Sequence[str] = (),
    together: bool = False,
) -> bool | None:
    """:func:`drain_sequence`'s verdict (True: every host of ``loads`` can be
    emptied in turn) found by counting, where counting is exact: every member
    takes one vCPU, no group of ``rules`` has a per-host limit, every target's
    room is known and not negative, and each host of ``loads`` (and of
    ``first``) is a target once. Then a host's members fit on the other
    targets exactly when their room adds up to its members, whichever targets
    the greedy placement picks; and the room of all targets together never
    changes (a member takes a unit where it lands, its host gives it back once
    emptied), nor does a host's members plus its own room (an arrival moves a
    unit from one to the other). So a host can be emptied, at any point of
    any order, exactly when the total room is at least its members plus its
    room. O(hosts and targets) instead of a placement of every member on every
    target per host. ``together`` (as :func:`drain_sequence`): a host of
    ``first`` takes none of the members of another not emptied yet, so one
    of them may be emptied when the total room less the room of those not
    emptied yet (its own included: none of them took anything) holds its
    members; the hosts after them are counted as before. None: counting is
    not exact here (run ``drain_sequence``).
    """
    free: dict[str, int] = {}
    for t in targets:
        if t.free is None or t.free < 0 or t.host in free:
            return None
        free[t.host] = t.free
    if any(rule.host_limit() is not None for rule in rules.values()):
        return None
    hosts = {load.host for load in loads}
    if len(hosts) != len(loads) or not hosts <= free.keys():
        return None
    if len(set(first)) != len(first) or not hosts.issuperset(first):
        return None
    if any(m.vcpus != 1 for load in loads for m in load.members):
        return None
    total = sum(free.values())
    if together and first:
        # Emptying one of them only opens room to the others: any order
        # found by taking whichever may go is as good as another.
        members = {load.host: len(load.members) for load in loads}
        left = {host: members[host] for host in first}
        closed = sum(free[host] for host in left)
        while left:
            host = next((h for h, n in left.items() if total >= n + closed), None)
            if host is None:
                return False
            closed -= free[host]
            del left[host]
        loads = [load for load in loads if load.host not in first]
    return all(total >= len(load.members) + free[load.host] for load in loads)


def drains_together(
    loads: Sequence[HostLoad],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    first: Sequence[str],
    *,
    verdicts: MutableMapping[Hashable, HostLoad | None] | None = None,
) -> bool:
    """Whether the hosts of ``first``, draining together, and then the other
    hosts of ``loads`` can all be emptied (:func:`drain_sequence` with
    ``together``): by counting where that is exact
    (:func:`drains_by_count`), else by the dry run (``verdicts``: as
    :func:`drain_sequence`'s)."""
    counted = drains_by_count(loads, targets, rules, first=first, together=True)
    if counted is not None:
        return counted
    found = drain_sequence(loads, targets, rules, first=first, together=True, verdicts=verdicts)
    return found[1] is None


#: How many other orders :func:`drain_sequence` tries when the greedy one
#: gets stuck (each a dry run over every host left).
OTHER_ORDERS_TRIED = 8


def _another_order(
    loads: Sequence[HostLoad],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    first: Sequence[str],
    stuck_order: Sequence[str],
) -> list[str] | None:
    """An order that empties every host, the hosts of ``first`` draining
    together first, where the greedy one got stuck after ``stuck_order``:
    each host it emptied after ``first``'s, from the earliest, is replaced
    in turn by each other host left then (the greedy choice going on after
    it), up to :data:`OTHER_ORDERS_TRIED` dry runs; None if none of them
    does. The greedy order is not stable along its own plan: a move it
    planned makes the host it lands on heavier, that host then comes later
    in the lightest-first order, and the order found from the state the
    move leaves can get stuck where the plan did not (tests/
    constrained_layouts.py, ONCE_DEAD_ENDS,
    greedy-order-lost-by-the-plans-own-move)."""
    ahead = set(first)
    after = [h for h in stuck_order if h not in ahead]
    hosts = [h.host for h in sorted(loads, key=lambda h: (h.vcpus, h.position, h.host))]
    tried = 0
    for depth, chosen in enumerate(after):
        before = after[:depth]
        # The hosts the greedy choice tried before ``chosen`` there could
        # not be emptied then: only those after it are new.
        for host in hosts[hosts.index(chosen) + 1 :]:
            if host in ahead or host in before:
                continue
            if tried == OTHER_ORDERS_TRIED:
                return None
            tried += 1
            order, stuck = drain_sequence(
                loads, targets, rules, first=first, together=True, then=[*before, host]
            )
            if stuck is None:
                return order
    return None


def drains_after(
    moves: Sequence[tuple[Member, str]],
    draining: Sequence[HostLoad],
    pending: Sequence[HostLoad],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    *,
    leaving: Mapping[str, Sequence[Member]] | None = None,
    verdicts: MutableMapping[Hashable, HostLoad | None] | None = None,
) -> bool:
    """Whether the hosts of ``draining``, draining together, then those of
    ``pending`` can all be emptied (:func:`drains_together`) once ``moves``
    are under way: each a member of a draining host, with its target.

    ``targets`` are every host that may receive instances, the draining and
    pending hosts included, as they are now (room and members counting the
    moves in flight on both ends); ``leaving``: per draining host, its
    members in flight (no longer in its load). A move takes its room and a
    place of its group on its target; a member parked on a pending host
    leaves it again with the rest; a draining host gets back the room and
    the places of what left it once it is emptied (the dry run counts
    neither on it then). ``verdicts``: as :func:`drain_sequence`'s."""
    source = {m.instance_id: d.host for d in draining for m in d.members}
    limited = [g for g, rule in rules.items() if rule.host_limit() is not None]
    room: Counter[str] = Counter()
    places: dict[str, Counter[str]] = defaultdict(Counter)
    for host, members in (leaving or {}).items():
        for m in members:
            room[host] += m.vcpus
            places[host][m.group_id] -= 1
    gone: set[str] = set()
    parked: dict[str, list[Member]] = {}
    for member, host in moves:
        origin = source[member.instance_id]
        gone.add(member.instance_id)
        room[origin] += member.vcpus
        room[host] -= member.vcpus
        places[origin][member.group_id] -= 1
        places[host][member.group_id] += 1
        parked.setdefault(host, []).append(member)
    after = [
        t
        if t.host not in room and t.host not in places
        else Target(
            t.host,
            None if t.free is None else t.free + room[t.host],
            t.stays,
            {g: t.members.get(g, 0) + places[t.host][g] for g in limited},
        )
        for t in targets
    ]
    loads = [
        HostLoad(d.host, tuple(m for m in d.members if m.instance_id not in gone), d.position)
        for d in draining
    ]
    for load in pending:
        extra = parked.get(load.host)
        loads.append(
            load if extra is None else HostLoad(load.host, (*load.members, *extra), load.position)
        )
    return drains_together(loads, after, rules, [d.host for d in draining], verdicts=verdicts)


def takes_a_place(
    moves: Sequence[tuple[Member, str]],
    targets: Sequence[Target],
    rules: Mapping[str, GroupRule],
    still: Mapping[tuple[str, int], int],
) -> bool:
    """Whether the last of ``moves`` takes, on its target, a place that a
    member still to move of a group with a per-host limit could take
    before it: room for that member's vcpus there and, below its group's
    limit, a place for its group (the moves before it counted on their
    targets). ``still``: how many members of each (group, vcpus) are left
    to move, ``moves``' members among them. A move that takes no such
    place leaves every limited member the hosts it had; only the others
    need :func:`drains_after` (the constrained workflow's check of the
    waves' moves)."""
    *before, (member, host) = moves
    target = next((t for t in targets if t.host == host), None)
    if target is None or target.free is None:
        return False
    room = target.free
    added: Counter[str] = Counter()
    left = Counter(still)
    for m, h in before:
        left[(m.group_id, m.vcpus)] -= 1
        if h == host:
            room -= m.vcpus
            added[m.group_id] += 1
    left[(member.group_id, member.vcpus)] -= 1
    for (group_id, vcpus), count in left.items():
        rule = rules.get(group_id)
        limit = rule.host_limit() if rule is not None else None
        if count <= 0 or limit is None or room < vcpus:
            continue
        here = target.members.get(group_id, 0) + added[group_id]
        if here >= limit:
            continue  # no place for it before the move either
        if room - member.vcpus < vcpus or (group_id == member.group_id and here + 1 >= limit):
            return True
    return False


def capacity_shortfall(
    hosts: Iterable[Host],
    instances: Iterable[Instance],
    retiring: Iterable[str],
    constraints: ConstraintSet,
) -> str | None:
    """Why the compute hosts that stay cannot hold every instance once
    ``retiring`` are gone; None if they can (or a host's capacity is unknown).

    Pure. ``hosts``' ``enabled`` means in service (a host about to be enabled
    counts as in service): instances of retired hosts go only there, what runs
    on a host out of service stays where it is. Totals first; then a real
    placement of each instance of a retired host (largest first, as the
    workflows would place them) on the free vcpus of each host that stays,
    keeping the anti-affinity and per-host limits of its group.
    """
    retired = set(retiring)
    if not retired:
        return None
    computes = {h.name: h for h in hosts if h.type == "compute"}
    used: Counter[str] = Counter()
    groups_on: dict[str, Counter[str]] = defaultdict(Counter)
    moving: list[Member] = []
    rules: dict[str, GroupRule] = {}
    for inst in instances:
        if inst.host not in computes:
            continue
        # Group ids are per project: the key tells two projects' groups apart.
        key = constraints.group_key_of(inst.instance_id, inst.project_id)
        rules[key] = GroupRule.of(constraints.group_by_key(key))
        used[inst.host] += inst.vcpus
        groups_on[inst.host][key] += 1
        if inst.host in retired:
            moving.append(Member(inst.instance_id, inst.project_id, key, inst.vcpus))
    targets: list[Target] = []
    capacity = 0
    for name, host in computes.items():
        here = used[name]
        if name in retired:
            continue
        if not host.enabled:
            capacity += here  # what runs there stays there; nothing is added
            continue
        if host.vcpus <= 0:
            return None  # a host of unknown capacity: cannot tell
        capacity += max(host.vcpus, here)
        targets.append(Target(name, host.vcpus - here, True, groups_on[name]))
    gone = ", ".join(sorted(retired))
    load = sum(used.values())
    if load > capacity:
        return (
            f"retiring {gone} leaves {capacity} vcpus on the other compute hosts "
            f"for {load} vcpus of instances"
        )
    ordered = sorted(moving, key=lambda m: (-m.vcpus, m.instance_id))
    budgets = Counter(m.group_id for m in moving)
    _moves, blocked = assign_moves(ordered, budgets, targets, rules)
    if not blocked:
        return None
    member = next(m for m in moving if m.instance_id == blocked[0].instance_id)
    largest = max((t.free or 0 for t in targets), default=0)
    if largest < member.vcpus:
        why = f"the most free on one host that stays is {max(0, largest)} vcpus"
    else:
        rule = rules[member.group_id]
        why = (
            f"the hosts with room already hold {rule.host_limit()} member(s) of its group "
            f"{rule.group_id}, the most it allows on one host"
        )
    return (
        f"retiring {gone} leaves no host with room for instance {member.instance_id} "
        f"({member.vcpus} vcpus): {why}"
    )
