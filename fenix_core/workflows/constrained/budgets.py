"""The groups' budgets: the instances in recovery_time (:class:`_Recovery`),
the members impacted now (:class:`_Impacted`), how many more of each group may
be (:class:`_Budgets`), and the controls' admission of one pass's hosts
(:class:`_Admission`).

The instances in recovery_time are kept per group with a heap of when each
recovery ends (``_Recovery``, read from the instances' ``impacted_until``:
not stored in the waves' state); the groups' budgets are worked out once
per pass, per group when asked, and read the recoveries' counts as kept,
not copied."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import (
    Callable,
    Iterator,
    Mapping,
)
from datetime import datetime
from typing import Any

from ... import planner
from ...contract import (
    HostView,
    SessionContext,
)


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

    def __init__(
        self,
        rule: Callable[[str], planner.GroupRule],
        todo: Mapping[str, int],
        impacted: Mapping[str, int],
    ) -> None:
        self._rule = rule  # the step's (its rules kept with the counts)
        self._todo = todo  # the counts' work left, changed in place only
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
