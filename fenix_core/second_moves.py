"""When an instance may move to a host it will have to leave again (pure).

An instance on a host under maintenance moves at least once. It moves twice
when its first move lands on a host that is itself maintained later in the
session. The constrained workflow allows that only to the instances of the
*first drained hosts*: the hosts it opens while nothing where instances stay
(a host already maintained, one coming back from maintenance, or one outside
the session) can take a host's instances (:func:`first_wave_order` picks
them: the empty hosts, else the host that forces the fewest second moves;
the last of them may be *partial*, only some of its instances moving twice:
:class:`FirstWave`).
Every later host is opened only when its instances fit where they stay,
counting the hosts in maintenance as the room they give back
(:func:`opening_targets`), and its instances move only there: each moves
once. Such a second move never shortens an instance group's chain of moves
(the group still owes one final move per member); what it buys is the first
maintained host, which then takes instances for good. The hosts where the
first wave parked instances open after every other (``last`` of
:func:`fenix_core.planner.hosts_to_open`): nearly full, each takes about a
whole maintained host's room for the one it gives back, while the waves grow
only by what the lighter hosts leave.

An instance never moves a third time, nor a second time unless it was on a
first drained host (:func:`may_move_twice`), unless waiting cannot make room
(nothing maintained, moving or recovering): then anything that moves the
session on. Each move onto a queued host says why in its operation's
``moves_again`` (:func:`why_again`), which the plan shows.

:func:`moves_lower_bound` and :func:`first_final_move_at` say what no
schedule can beat, for the benchmarks and the plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from .opening_bound import opening_bound, parked_vcpus
from .planner import GroupRule, HostLoad, Target, group_chain_seconds, hosts_to_open, max_hosts_out

__all__ = [
    "FIRST_WAVE_SHARE",
    "FIRST_WAVE_SHARES",
    "MOVE_SECONDS",
    "OPENING_PACE",
    "FirstWave",
    "FirstWaveSize",
    "MovesBound",
    "drain_wait",
    "first_final_move_at",
    "first_wave",
    "first_wave_order",
    "first_wave_room",
    "first_wave_size",
    "may_move_twice",
    "moves_lower_bound",
    "opening_targets",
    "why_again",
]


def may_move_twice(*, moved_before: bool, first_drained: bool, waiting_makes_room: bool) -> bool:
    """Whether an instance waiting to leave may go to a host still queued.

    Only an instance of a first drained host (:func:`first_wave_order`) that
    has not moved yet; any other waits for room where it stays, unless waiting
    cannot make any (no host is being maintained, no move or recovery_time is
    under way): then anything that moves the session on.
    """
    return not waiting_makes_room or (first_drained and not moved_before)


def why_again(*, moved_before: bool, first_drained: bool, wave: str | None = None) -> str:
    """Why a move lands on a host the instance will leave again (said in the
    plan); ``wave``: why the first wave has its size (:attr:`FirstWaveSize.why`)."""
    if moved_before:
        return (
            "no host where it stays has room and waiting would not make any "
            "(nothing being maintained, no move under way): it moves a third time"
        )
    if first_drained:
        return (
            "its host is among the first drained and no host where it stays "
            "(maintained, or outside the session) has room: it moves again when "
            "its new host is maintained" + (f" ({wave})" if wave else "")
        )
    return (
        "no host where it stays has room and waiting would not make any "
        "(nothing being maintained, no move under way): it moves again when its "
        "new host is maintained"
    )


def opening_targets(targets: Iterable[Target]) -> list[Target]:
    """What a host opened after the first wave must fit on: the targets where
    instances stay, since its instances move only there. (Counting the room
    the hosts in maintenance give back as well opens hosts whose instances
    then wait, holding their groups busy: measured slower.)"""
    return [t for t in targets if t.stays]


#: Seconds one move is expected to take (:func:`drain_wait`).
MOVE_SECONDS = 30.0
#: The second moves a first wave may add to the fewest possible
#: (:func:`moves_lower_bound`), as a share of the session's instances: the
#: price in moves of a faster start (:func:`first_wave_room`), when the hosts
#: open fast enough for the longest group chain with it (:func:`first_wave_size`).
FIRST_WAVE_SHARE = 0.05
#: The shares :func:`first_wave_size` weighs, smallest first: the last is the
#: most a first wave may add (issue 21 allows 10% of moves over their bound).
FIRST_WAVE_SHARES = (FIRST_WAVE_SHARE, 0.075, 0.10)
#: How much later than :func:`fenix_core.opening_bound.opening_bound` the
#: waves open the session's hosts: the bound counts a host's drain as one
#: move, while its members wait for their groups' max_impacted_members and
#: recovery_time (measured about twice the bound's pace on the random family
#: of ``benchmarks/makespan.py``). A first wave is wide enough when the hosts
#: open by this pace within the longest group chain.
OPENING_PACE = 2.0


@attrs.frozen
class FirstWaveSize:
    """How many second moves the first wave may add, and why: ``share`` of
    the instances (:func:`first_wave_room`), chosen because hosts open within
    ``opening`` seconds at best with that many instances parked on hosts still
    queued, against the longest group chain's ``chain`` seconds."""

    share: float
    opening: float
    chain: float

    @property
    def why(self) -> str:
        """The trade-off, as the plan says it."""
        return (
            f"a first wave of {self.share:.1%} of the instances moving twice: hosts open "
            f"within {self.opening:.0f} s at best with them, against "
            f"{self.chain:.0f} s for the longest group chain"
        )


def first_wave_size(
    loads: Sequence[int],
    capacities: Sequence[int],
    *,
    instance_vcpus: Sequence[int],
    forced: int,
    chain: float,
    work: float,
    move_seconds: float,
    stay_room: int = 0,
    shares: Sequence[float] = FIRST_WAVE_SHARES,
) -> FirstWaveSize:
    """The smallest of ``shares`` whose second moves open the session's hosts
    fast enough for its longest group chain, else the largest.

    ``loads`` and ``capacities`` are the vcpus used and held by each host of
    the session, ``instance_vcpus`` those of each of its instances,
    ``forced`` the second moves in the bound (:class:`MovesBound`), ``chain``
    the longest group chain (:func:`fenix_core.planner.makespan_lower_bound`),
    ``work`` a host's expected work and ``stay_room`` the free vcpus outside
    the session. A share's moves keep that many of the largest instances on
    hosts still queued (:func:`fenix_core.opening_bound.parked_vcpus`), the
    room by which hosts open beyond what maintained hosts give back; it is
    enough when :func:`fenix_core.opening_bound.opening_bound` with them,
    at :data:`OPENING_PACE`, is within the chain. A wave any wider costs
    moves and buys nothing (the chain sets the makespan); one narrower has
    the chain wait for its members' hosts to open (on a full cloud with no
    spare host, 1.5 x the bound at 5%).
    """
    if not shares:
        raise ValueError("shares: none to choose from")
    out = max_hosts_out(capacities, sum(loads))
    size = None
    for share in sorted(shares):
        parked = parked_vcpus(instance_vcpus, forced + int(share * len(instance_vcpus)))
        opening = opening_bound(
            loads,
            capacities,
            max_out=out,
            work=work,
            move_seconds=move_seconds,
            parked=parked,
            stay_room=stay_room,
        )
        size = FirstWaveSize(share, opening, chain)
        if OPENING_PACE * opening <= chain:
            break
    assert size is not None
    return size


def first_wave_order(
    candidates: Iterable[HostLoad],
    *,
    stay_room: int | None,
    rules: Mapping[str, GroupRule] | None = None,
    move_seconds: float = MOVE_SECONDS,
    behind: Mapping[str, int] | None = None,
    first: HostLoad | None = None,
) -> list[HostLoad]:
    """The hosts worth draining first, when nothing where instances stay can
    take any host's instances, best first: the empty hosts (they force no
    second move), then the hosts whose instances fit least in ``stay_room``
    (free vcpus where instances stay; None: unknown, taken as unlimited)
    force the fewest second moves, then, with ``rules``, those that can be
    emptied soonest (:func:`drain_wait`, behind the members per group of
    ``behind``: those of the wave's hosts chosen before), the lightest
    first.

    ``first``: the wave's first host with instances, when chosen. A host
    whose members would leave before its own (fewer vcpus left to move:
    :func:`fenix_core.planner.completion_order`) ranks after the others:
    they would take its groups' slots first and delay the first maintained
    host, which every group's final moves wait for."""

    def before_first(load: HostLoad) -> bool:
        return first is not None and (load.vcpus, load.host) < (first.vcpus, first.host)

    def forced(load: HostLoad) -> int:
        if stay_room is None:
            return 0
        return _left_over(sorted(m.vcpus for m in load.members), stay_room)

    def wait(load: HostLoad) -> float:
        if rules is None:
            return 0.0
        return drain_wait(load, rules, move_seconds=move_seconds, behind=behind)

    return sorted(
        candidates,
        key=lambda h: (
            bool(h.members),
            forced(h),
            before_first(h),
            wait(h),
            len(h.members),
            h.vcpus,
            h.position,
            h.host,
        ),
    )


def drain_wait(
    load: HostLoad,
    rules: Mapping[str, GroupRule],
    *,
    move_seconds: float = MOVE_SECONDS,
    behind: Mapping[str, int] | None = None,
) -> float:
    """The seconds a host's drain waits at least for its groups' rounds: for
    each group, its members on the host beyond one round (max_impacted at
    once), a move and its recovery_time per round more; the longest. A
    first drained host holding many members of a long chain spends the
    chain's rounds on second moves and comes back later (seed 28 of the
    random family: five members of its one-at-a-time chain on the first
    host, 216 s of its drain, the chain's start as late).

    ``behind``: per group, members that take its slots first (those of the
    hosts the first wave opened before this one, which leave with it): the
    host's members then start in the rounds after theirs."""
    count: dict[str, int] = {}
    for m in load.members:
        count[m.group_id] = count.get(m.group_id, 0) + 1
    longest = 0.0
    for group_id, n in count.items():
        rule = rules.get(group_id)
        if rule is None:
            continue
        if not behind:
            # Its chain of moves off the host, less the one move every drain has.
            longest = max(longest, group_chain_seconds(n, rule, move_seconds) - move_seconds)
            continue
        # The host's last member is the group's (before + n)-th move: it
        # starts that many whole rounds of max_impacted in.
        before = behind.get(group_id, 0)
        rounds = (before + n - 1) // max(1, rule.max_impacted)
        longest = max(longest, rounds * (move_seconds + rule.recovery_time))
    return longest


def first_wave_room(instances: int, *, one_host: int = 0, share: float = FIRST_WAVE_SHARE) -> int:
    """How many second moves the first wave may add, beyond those of its
    first host when no host is empty (which no schedule avoids), for a
    session of ``instances``: ``share`` of them, and at least ``one_host``
    (the instances of the next host of the wave), so that on a small cloud,
    where one host is more than the share, the first wave still has a second
    host.

    Each host more in the first wave sends its instances to hosts still
    queued, and each of them moves twice; in exchange the session starts
    with that many more hosts maintained, the room they give back is where
    every later instance moves once, and the waves grow from it. Later hosts
    only move instances where they stay, so on a full cloud with no spare
    host the waves grow by the free room of each maintained host: a larger
    first wave is the one place where a second move buys time."""
    return max(int(share * instances), one_host)


@attrs.frozen
class FirstWave:
    """The first drained hosts (:func:`first_wave`): ``hosts`` in the order
    opened; ``partial``, the last of them when only ``twice`` of its
    instances may move twice (the others wait for room where they stay),
    else None."""

    hosts: tuple[str, ...]
    partial: str | None = None
    twice: int = 0


def first_wave(
    candidates: Sequence[HostLoad],
    *,
    targets: Sequence[Target],
    idle_groups: Mapping[str, float],
    slots: int,
    instances: int,
    rules: Mapping[str, GroupRule] | None = None,
    feasible: Callable[[Sequence[str]], bool] | None = None,
    share: float = FIRST_WAVE_SHARE,
) -> FirstWave:
    """The first drained hosts, opened while nothing where instances stay can
    take any host's instances and nothing is out of service: in
    :func:`first_wave_order`, the hosts left ranked again after each one
    chosen, behind its members (they leave together, and those of a group
    take its slots in turn: the second host of seed 3 of the default random
    family drained for 271 s where its own rounds take 30, its groups' slots
    taken by the first host's members), each while everything opened before it still
    fits on the targets left (:func:`fenix_core.planner.hosts_to_open`, any
    target: their instances may land on hosts still queued), at most
    ``slots``, and the second moves they add beyond the bound within
    :func:`first_wave_room` of the session's ``instances`` at ``share``
    (:func:`first_wave_size`). The hosts with instances among them are the
    ones whose instances may move twice.

    The first host whose instances exceed the room left opens too when some
    is left (``partial``): only that many of its instances (``twice``) move
    twice, the others wait for room where they stay. Skipping it left the
    room unused (on a 17-host full cloud, 14 of 34 second moves) and the
    wave a host short; with it the default family's worst layouts end
    earlier (benchmarks/makespan.py) at the same moves budget."""
    stay_room = sum(t.free or 0 for t in targets if t.stays)
    order = first_wave_order(candidates, stay_room=stay_room, rules=rules)
    # Those that cost second moves beyond the bound: every loaded host but
    # the first when no host is empty.
    costly = [load for load in order[1:] if load.members]
    room = first_wave_room(instances, one_host=len(costly[0].members) if costly else 0, share=share)
    chosen: list[str] = []
    taken: list[HostLoad] = []
    extra = 0
    partial: str | None = None
    twice = 0
    ranked = 0  # hosts chosen when the hosts left were last ranked
    for index, load in enumerate(order):
        if len(chosen) >= slots:
            break
        if len(taken) > ranked and rules is not None:
            # The hosts left, re-ranked behind the wave's hosts chosen so far:
            # their members leave at the same time and take their groups'
            # slots first.
            ranked = len(taken)
            behind = Counter(m.group_id for h in taken for m in h.members)
            order[index:] = first_wave_order(
                order[index:],
                stay_room=stay_room,
                rules=rules,
                behind=behind,
                first=next((h for h in taken if h.members), None),
            )
            load = order[index]
        # The first host's second moves, when no host is empty, are in the
        # bound (moves_lower_bound); the others are extra. The first host
        # is the first one opened: where the ranking's first cannot go (the
        # dry run refuses it), the next that can is, else a wave asked for
        # again half-way, nothing in flight, opened nothing (tests/
        # constrained_layouts.py, first-wave-again-charged-its-first-hosts-
        # second-moves).
        cost = len(load.members) if chosen else 0
        short = extra + cost > room
        if short and (extra >= room or not chosen):
            # No room left (a partial host took the last of it), or the
            # host would be the wave's only one: its instances that may not
            # move twice would wait for room where they stay that no other
            # host of the wave is maintained to give.
            continue
        more = hosts_to_open(
            [load],
            draining=taken,
            targets=[t for t in targets if t.host not in chosen],
            idle_groups=idle_groups,
            slots=1,
            rules=rules,
            feasible=_after(chosen, feasible),
        )
        if not more:
            continue
        chosen.append(load.host)
        taken.append(load)
        if short:
            partial, twice = load.host, room - extra
            extra = room
        else:
            extra += cost
    return FirstWave(tuple(chosen), partial, twice)


def _after(
    opened: Sequence[str], feasible: Callable[[Sequence[str]], bool] | None
) -> Callable[[Sequence[str]], bool] | None:
    """``feasible`` asked about hosts opened after ``opened``."""
    if feasible is None:
        return None
    first = tuple(opened)
    return lambda more: feasible([*first, *more])


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
