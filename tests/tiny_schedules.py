"""The moves of one instant of a tiny cloud in integer time, shared by the
exhaustive schedule searches that check the lower bounds
(tests/test_opening_bound.py, tests/test_makespan_bound_exhaustive.py).

An instance is ``(host, None)`` when placed and ``(source, (target, time
left))`` in flight; a host's state is :data:`QUEUED`, :data:`MAINTAINED`, or
its work left (> 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

QUEUED, MAINTAINED = -1, -2

Where = tuple[tuple[int, tuple[int, int] | None], ...]


def subsets(items: list[int]) -> list[tuple[int, ...]]:
    return [c for r in range(len(items) + 1) for c in itertools.combinations(items, r)]


def instant(
    where: Where, status: tuple[int, ...], vcpus: Sequence[int]
) -> tuple[list[int], list[int], list[int], list[list[int | None]]]:
    """What an instant may do: each host's vcpus taken (arrivals on their
    way counted), the idle instances, the hosts that may start their work
    (queued, nothing on them, leaving or arriving), and per idle instance
    its choices (stay: None, or any other host not in work)."""
    hosts = len(status)
    used = [0] * hosts
    busy = [False] * hosts
    for i, (h, flight) in enumerate(where):
        used[h] += vcpus[i]
        busy[h] = True
        if flight is not None:
            used[flight[0]] += vcpus[i]
            busy[flight[0]] = True
    idle = [i for i, (_, flight) in enumerate(where) if flight is None]
    startable = [h for h in range(hosts) if status[h] == QUEUED and not busy[h]]
    choices: list[list[int | None]] = [
        [None, *(d for d in range(hosts) if d != where[i][0] and status[d] < 0)] for i in idle
    ]
    return used, idle, startable, choices


def fits(
    used: Sequence[int],
    capacities: Sequence[int],
    idle: Sequence[int],
    pick: Sequence[int | None],
    starting: Sequence[int],
    vcpus: Sequence[int],
) -> bool:
    """Whether the moves picked land on hosts with room that do not start
    their work now."""
    room = list(used)
    for i, d in zip(idle, pick, strict=True):
        if d is None:
            continue
        room[d] += vcpus[i]
        if d in starting or room[d] > capacities[d]:
            return False
    return True


def advance(
    where: Where,
    status: tuple[int, ...],
    idle: Sequence[int],
    pick: Sequence[int | None],
    starting: Sequence[int],
    *,
    work: int,
    move: int,
) -> tuple[Where, tuple[int, ...]]:
    """The instances and hosts one time unit after the actions chosen."""
    now = list(where)
    for i, d in zip(idle, pick, strict=True):
        if d is not None:
            now[i] = (now[i][0], (d, move))
    after: list[tuple[int, tuple[int, int] | None]] = []
    for h, flight in now:
        if flight is not None:
            target, left = flight
            after.append((target, None) if left <= 1 else (h, (target, left - 1)))
        else:
            after.append((h, None))
    states = []
    for h, s in enumerate(status):
        if h in starting:
            s = work
        if s > 0:
            s -= 1
            if s == 0:
                s = MAINTAINED
        states.append(s)
    return tuple(after), tuple(states)
