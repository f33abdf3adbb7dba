"""The kept walks of the targets' hosts (:class:`_Walk`), the fleet's
targets of a dry run (:class:`_FleetTargets`) and what the draining hosts
take (:class:`_DrainingTaken`): caches of this process, kept with the counts
and patched from the hosts whose capacity changed.

What the draining hosts take, less the moves from them and towards them, is
kept from the capacity's change log and the instances' (``_DrainingTaken``);
so are the fleet's targets of the dry run of a host opened ahead
(``_FleetTargets``), and the walk an instance's window takes (``_Walk``)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import (
    Collection,
)
from typing import Protocol, TypeGuard

from ... import planner
from ...contract import (
    HostView,
    InstanceView,
    SessionContext,
)
from ...states import (
    HostState,
    InstanceState,
)
from . import windows
from .state import (
    _target_state,
)


class _TargetMaker(Protocol):
    """What builds a host's target for the planner (``reads._Step.target``)."""

    def target(self, view: HostView, stays: bool) -> planner.Target: ...


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
        kept = windows.TARGET_WINDOW + windows._WALK_SLACK
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
        kept = windows.TARGET_WINDOW + windows._WALK_SLACK
        if len(keys) > kept:
            for _minus, name in keys[kept:]:
                del free_of[name], stays_of[name]
            del keys[kept:]
            self.complete = False
        return self.complete or len(keys) > windows.TARGET_WINDOW


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
    """The targets of :func:`~.targeting._fleet_targets` (no group
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
    def read(
        cls, ctx: SessionContext, step: _TargetMaker, retiring: frozenset[str]
    ) -> _FleetTargets:
        found = cls(ctx.capacity.change_mark(), retiring)
        for view in ctx.hosts:
            found.rank[view.name] = len(found.slots)
            found.slots.append(found._target(step, view))
        return found

    def brought_up_to_date(
        self, ctx: SessionContext, step: _TargetMaker, retiring: frozenset[str]
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

    def _target(self, step: _TargetMaker, view: HostView | None) -> planner.Target | None:
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
