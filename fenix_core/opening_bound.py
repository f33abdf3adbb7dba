"""How fast hosts can be opened, and the makespan no schedule can beat for it (pure).

The capacity side of the makespan lower bound, counted host by host rather
than as work spread evenly, with or without a budget of second moves.

A host is *started* when its work begins (it is empty then) and *maintained*
when its work ends. For any schedule, at any time ``t``:

1. the hosts in work are empty, so the load fits on the others: at most
   ``P`` (:func:`fenix_core.planner.max_hosts_out`) are in work at once;
2. a host with instances starts at ``move_seconds`` at the earliest (they
   leave first), or at its *release* when ``releases`` says when each host
   can be empty at the earliest (its instances leaving at their groups'
   pace: :func:`fenix_core.planner.drain_seconds`). The ``i``-th host to
   start begins no earlier than the ``i``-th smallest release: the ``i``
   hosts started by then each began at or after its own release;
3. every instance of a started host has left it. Those that sit on a host
   not yet maintained must move again: they are at most the schedule's
   extra moves (its moves beyond one per instance), so their vcpus are at
   most ``parked``, the vcpus of that many of the largest instances. The
   others sit where they stay: on a host outside the session (at most
   ``stay_room`` free vcpus) or on a maintained one, which was maintained
   before their last move started, so by ``t - move_seconds``. Hence the
   load of the started hosts, at least that of as many of the lightest
   hosts, is at most ``stay_room + parked`` plus the capacity of the hosts
   maintained by ``t - move_seconds``, at most that of as many of the
   largest hosts;
4. (``hand_off``) when the load does not fit on ``H - P - 1`` hosts of the
   session (the largest) and the free vcpus outside it: if hosts are
   numbered in the order they start, host ``j + P`` starts at least
   ``work + move_seconds`` after host ``j``. Suppose it starts at ``s``
   earlier than that and take ``t0 = s - move_seconds``. Hosts ``j`` to
   ``j + P`` all start by ``s``; those started by ``t0`` are still in work
   then (they started no earlier than host ``j`` and work at least
   ``work``), so empty, and nothing is on its way to them (a disabled host
   takes nothing); those starting in ``(t0, s]`` have every instance's
   last move off them under way by ``t0`` (a move lasts ``move_seconds``
   and the host is empty when it starts), and nothing is on its way to
   them either (it would land after ``t0`` and have to leave again before
   the host starts, another move of at least ``move_seconds``). So at
   ``t0`` every instance is on, or on its way to, one of the other
   ``H - P - 1`` hosts or outside the session: the load fits there, which
   it does not. So a host's successor in its lane empties only once the
   host is maintained: one move (the last one off it) after.

With every host's work at least ``work``, a host maintained by ``t`` was
started by ``t - work``. The greedy schedule of *counts* that starts, at each
instant, as many hosts as 1-4 allow given its own past starts at least as
many hosts by every time as any schedule does (by induction over time: each
limit only grows with the hosts started before ``t``), so the time its last
host is maintained is a lower bound. Without a budget (``parked=None``) rule
3 is void, and the bound is the ``P`` machines' bound of identical jobs
(``ceil(hosts / P)`` rounds of work after the first move), tighter than the
work spread evenly over ``P`` hosts; with rule 4, ``ceil(hosts / P)``
rounds of work and a move each. With a budget, it says what no
schedule with at most that many extra moves can beat: on a full cloud with
no spare host, hosts open only as fast as maintained hosts give room, and
that, not the capacity, is what limits a schedule that moves each instance
once (see docs/performance.md).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

__all__ = ["opening_bound", "parked_vcpus"]


def parked_vcpus(instance_vcpus: Sequence[int], extra_moves: int) -> int:
    """The most vcpus that ``extra_moves`` moves beyond one per instance can
    keep on hosts not yet maintained: those of as many of the largest
    instances (each such instance moves at least twice)."""
    if extra_moves < 0:
        raise ValueError(f"extra_moves: {extra_moves} is negative")
    return sum(sorted(instance_vcpus, reverse=True)[:extra_moves])


def opening_bound(
    loads: Sequence[int],
    capacities: Sequence[int],
    *,
    max_out: int,
    work: float,
    move_seconds: float,
    parked: int | None = None,
    stay_room: int = 0,
    hand_off: bool = False,
    releases: Sequence[float] | None = None,
) -> float:
    """The earliest time every host of ``loads`` can be maintained.

    ``loads`` are the vcpus of the instances on each host of the session,
    ``capacities`` their vcpus, ``max_out`` the most hosts in work at once,
    ``work`` the least work of a host (seconds), ``parked`` the most vcpus
    kept on hosts not yet maintained (None: no limit; see
    :func:`parked_vcpus`) and ``stay_room`` the free vcpus outside the
    session. ``math.inf`` when no schedule within ``parked`` exists (no host
    can ever start). ``hand_off``: apply rule 4 as well (off by default:
    :func:`fenix_core.second_moves.first_wave_size` weighs the bound without
    it, at the pace it was measured against). ``releases``: per host, the
    earliest it can be empty (rule 2; None: one move for a host with
    instances, 0 for an empty one).
    """
    if len(loads) != len(capacities):
        raise ValueError(f"loads: {len(loads)} hosts, capacities: {len(capacities)}")
    if releases is None:
        releases = [move_seconds if v > 0 else 0.0 for v in loads]
    if len(releases) != len(loads):
        raise ValueError(f"loads: {len(loads)} hosts, releases: {len(releases)}")
    if work <= 0 or move_seconds < 0:
        raise ValueError(f"work must be > 0 and move_seconds >= 0: {work}, {move_seconds}")
    hosts = len(loads)
    if hosts == 0:
        return 0.0
    out = max(1, max_out)
    lightest = _prefix(sorted(loads))  # lightest[k]: load of the k lightest hosts
    largest = _prefix(sorted(capacities, reverse=True))
    released = sorted(releases)
    # Rule 4 holds when the load does not fit on all but ``out + 1`` hosts.
    # Its limit is rule 1's with the hosts maintained a move earlier.
    handed = hand_off and sum(loads) > largest[max(0, hosts - out - 1)] + stay_room
    lag = move_seconds if handed else 0.0

    def may_start(maintained: int) -> int:
        """Rule 3: the most hosts started with ``maintained`` hosts to stay on."""
        if parked is None:
            return hosts
        room = largest[maintained] + parked + stay_room
        return bisect.bisect_right(lightest, room) - 1

    starts: list[float] = []  # the greedy's start times, in order

    def done_by(t: float) -> int:
        return bisect.bisect_right(starts, t - work + 1e-9)

    t = 0.0
    while len(starts) < hosts:
        allowed = min(
            hosts,
            done_by(t - lag) + out,
            may_start(done_by(t - move_seconds)),
            bisect.bisect_right(released, t + 1e-9),
        )
        while len(starts) < allowed:
            starts.append(t)
        if len(starts) == hosts:
            break
        # The next instant a limit can grow: a host maintained (rule 1; a
        # move later with rule 4), one maintained a move ago (rule 3), or
        # the next host released (rule 2).
        # ``starts`` is in time order: the first start past each is found by
        # bisection (a pass over every start made the bound quadratic).
        later = [
            starts[k] + delay
            for delay in (work + lag, work + move_seconds)
            if (k := bisect.bisect_right(starts, t + 1e-9 - delay)) < len(starts)
        ]
        if (k := bisect.bisect_right(released, t + 1e-9)) < hosts:
            later.append(released[k])
        if not later:
            return math.inf
        t = min(later)
    return starts[-1] + work


def _prefix(values: Sequence[int]) -> list[int]:
    sums = [0]
    for v in values:
        sums.append(sums[-1] + v)
    return sums
