"""When an instance may move to a host it will have to leave again (pure).

An instance on a host under maintenance moves at least once. It moves twice
when its first move lands on a host that is itself maintained later in the
session: the constrained workflow sends it there only when no host where it
stays (already maintained, or outside the session) has room for it, because
targets where instances stay always come first
(:func:`fenix_core.planner.assign_moves`). Such a second move never shortens
an instance group's chain of moves (the group still owes one final move per
member, and the second move is one more impact and recovery_time); what it
buys is capacity: the host it empties is maintained sooner and then takes
instances for good. So the waves open hosts onto queued hosts when nothing
where instances stay has room.

An instance never moves a third time (:func:`may_move_twice`): having moved
once, it waits for room where it stays, unless waiting cannot make any. Each
move onto a queued host says why in its operation's ``moves_again``
(:func:`why_again`), which the plan shows.

:func:`moves_lower_bound` and :func:`first_final_move_at` say what no
schedule can beat, for the benchmarks and the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

__all__ = [
    "MovesBound",
    "first_final_move_at",
    "may_move_twice",
    "moves_lower_bound",
    "why_again",
]


def may_move_twice(*, moved_before: bool, waiting_makes_room: bool) -> bool:
    """Whether an instance waiting to leave may go to a host still queued.

    Never a third time: an instance that moved once in this session waits for
    room where it stays, unless waiting cannot make any (no host is being
    maintained, no move or recovery_time is under way): then anything that
    moves the session on.
    """
    return not moved_before or not waiting_makes_room


def why_again(moved_before: bool) -> str:
    """Why a move lands on a host the instance will leave again (said in the plan)."""
    if moved_before:
        return (
            "no host where it stays has room and waiting would not make any "
            "(nothing being maintained, no move under way): it moves a third time"
        )
    return (
        "no host where it stays (maintained, or outside the session) has room "
        "now: it moves again when its new host is maintained"
    )


@attrs.frozen
class MovesBound:
    """At least this many moves: ``once`` instances on hosts of the session
    each move at least once, and ``forced`` of them move twice because no host
    where they stay has room for the first host emptied."""

    once: int
    forced: int

    @property
    def moves(self) -> int:
        return self.once + self.forced


def moves_lower_bound(
    host_instances: Iterable[Sequence[int]], *, stay_room: int | None
) -> MovesBound:
    """The fewest moves that maintain every host of ``host_instances`` (the
    vcpus of each instance, per host).

    Each instance moves at least once. The first host maintained has to be
    emptied before any host of the session is a target where instances stay,
    so its instances that do not fit in ``stay_room`` (free vcpus on hosts not
    in the session; None: unknown, taken as unlimited) move twice. The first
    host can be any: the bound takes the one that forces the fewest (an empty
    host forces none). Counting only the first host keeps it a lower bound.
    """
    hosts = [sorted(vcpus) for vcpus in host_instances]
    once = sum(len(h) for h in hosts)
    if not hosts or stay_room is None:
        return MovesBound(once, 0)
    forced = min(_left_over(h, stay_room) for h in hosts)
    return MovesBound(once, forced)


def _left_over(vcpus_ascending: Sequence[int], room: int) -> int:
    """How many of a host's instances cannot fit in ``room`` vcpus at best
    (the smallest first fit the most)."""
    fitted = 0
    for vcpus in vcpus_ascending:
        if vcpus > room:
            break
        room -= vcpus
        fitted += 1
    return len(vcpus_ascending) - fitted


def first_final_move_at(
    host_work: Sequence[tuple[float, bool]], *, stay_room: bool, move_seconds: float
) -> float:
    """The earliest time an instance can make its final move.

    ``host_work`` is each session host's maintenance time and whether it
    runs instances. With room on a host not in the session (``stay_room``),
    at once; else only once the first host of the session is maintained: an
    empty host after its work, one with instances after one move and its work.
    """
    if stay_room or not host_work:
        return 0.0
    return min(work + (move_seconds if busy else 0.0) for work, busy in host_work)
