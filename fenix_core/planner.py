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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

__all__ = [
    "DrainCandidate",
    "Movable",
    "Slot",
    "choose_host_to_drain",
    "choose_target",
    "plan_placement",
]


@attrs.frozen
class Movable:
    """An instance that has to leave its host."""

    instance_id: str
    project_id: str
    vcpus: int


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
    best: tuple[bool, int, int, str] | None = None
    best_host: str | None = None
    for slot in slots:
        slot_free = free[slot.host] if free is not None and slot.host in free else slot.free
        if not _fits(slot_free, item.vcpus):
            continue
        project_load = (load or {}).get(slot.host, slot.project_load)
        key = (
            not slot.stays,
            project_load.get(item.project_id, 0),
            slot_free if slot_free is not None else 1 << 30,
            slot.host,
        )
        if best is None or key < best:
            best, best_host = key, slot.host
    return best_host


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
    candidates: Sequence[DrainCandidate],
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
