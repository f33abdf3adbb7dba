"""How wide the constrained workflow's first wave is (issue 21): the pure
choice of fenix_core.second_moves.first_wave_size, and a layout of
benchmarks/makespan.py's random family that a fixed 5% first wave left at
1.5 x its makespan bound."""

from __future__ import annotations

import pytest
from family_layouts import family_layout_ratios

from fenix_core.controls import ACTION_SECONDS, Controls, expected_host_seconds
from fenix_core.opening_bound import opening_bound, parked_vcpus
from fenix_core.second_moves import (
    FIRST_WAVE_SHARE,
    FIRST_WAVE_SHARES,
    OPENING_PACE,
    first_wave_size,
    moves_lower_bound,
    why_again,
)

#: A full cloud with no spare host, as the family's worst layouts: 70 hosts of
#: 40 vcpus, each holding 20 instances of 1 and 2 vcpus (30 vcpus).
HOSTS = [[1, 2] * 10 for _ in range(70)]
LOADS = [sum(h) for h in HOSTS]
CAPACITIES = [40] * len(HOSTS)
VCPUS = [v for h in HOSTS for v in h]
FORCED = moves_lower_bound(HOSTS, stay_room=0).forced


def _opening(share: float) -> float:
    parked = parked_vcpus(VCPUS, FORCED + int(share * len(VCPUS)))
    return opening_bound(
        LOADS, CAPACITIES, max_out=17, work=600, move_seconds=30, parked=parked, stay_room=0
    )


def _size(chain: float) -> float:
    return first_wave_size(
        LOADS,
        CAPACITIES,
        instance_vcpus=VCPUS,
        forced=FORCED,
        chain=chain,
        work=600,
        move_seconds=30,
    ).share


def test_the_layout_opens_faster_with_more_of_its_instances_parked() -> None:
    # What the choice below weighs: each share parks more vcpus, and hosts
    # open sooner (the bound the choice is made on).
    openings = [_opening(share) for share in FIRST_WAVE_SHARES]
    assert openings == sorted(openings, reverse=True)
    assert openings[0] > openings[-1]


def test_first_wave_stays_at_five_percent_when_the_chain_is_long() -> None:
    # The reference scenario's case: its chain (12,336 s) is more than twice
    # the time hosts need to open with 5% of second moves.
    assert OPENING_PACE * _opening(FIRST_WAVE_SHARE) <= 12_336
    assert _size(12_336) == FIRST_WAVE_SHARE


def test_first_wave_widens_to_the_smallest_share_that_keeps_pace_with_the_chain() -> None:
    middle = FIRST_WAVE_SHARES[1]
    chain = OPENING_PACE * _opening(middle)
    assert OPENING_PACE * _opening(FIRST_WAVE_SHARE) > chain
    assert _size(chain) == middle
    # A chain a second shorter needs the widest wave.
    assert _size(chain - 1) == FIRST_WAVE_SHARES[-1]
    # Shorter still: no share keeps pace; the widest is the most allowed.
    assert _size(600) == FIRST_WAVE_SHARES[-1]


def test_first_wave_size_says_its_trade_off() -> None:
    size = first_wave_size(
        LOADS,
        CAPACITIES,
        instance_vcpus=VCPUS,
        forced=FORCED,
        chain=5_640,
        work=600,
        move_seconds=30,
    )
    assert size.chain == 5_640
    assert size.opening == _opening(size.share)
    assert f"{size.share:.1%}" in size.why
    assert "5640 s" in size.why
    # The plan says it with each move of a first drained host's instances.
    said = why_again(moved_before=False, first_drained=True, wave=size.why)
    assert said.endswith(f"({size.why})")
    with pytest.raises(ValueError, match="shares"):
        first_wave_size(
            LOADS, CAPACITIES, instance_vcpus=VCPUS, forced=0, chain=1, work=1,
            move_seconds=1, shares=(),
        )  # fmt: skip


def test_expected_host_seconds_is_the_declared_duration_else_the_plans_assumption() -> None:
    assert expected_host_seconds(Controls(host_seconds=1800), 3) == 1800
    assert expected_host_seconds(Controls(), 2) == 2 * ACTION_SECONDS
    assert expected_host_seconds(Controls(), 0) == ACTION_SECONDS


@pytest.mark.no_cover
@pytest.mark.slow
def test_a_full_family_layout_comes_within_1_15_of_its_makespan_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 14 of the random family (37 full hosts, no spare, 30 groups): a
    first wave of 5% of the instances and hosts opened for the groups with
    most idle work left its longest chain waiting for hosts, 1.504 x the
    bound. Within issue 21's targets: 1.15 x the makespan bound, 1.10 x the
    moves bound, at most two moves of an instance."""
    span, moves, most = family_layout_ratios(monkeypatch, max_hosts=200, seed=14)
    assert span <= 1.15
    assert moves <= 1.10
    assert most <= 2


@pytest.mark.no_cover
@pytest.mark.slow
def test_hosts_holding_parked_instances_open_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 1 of the random family (44 full hosts, 2 empty, 40 groups): the
    first wave parks 80 instances on 15 hosts still queued, which then weigh
    about 40 vcpus of 40. Opened like the others, as soon as they fed an idle
    group (their parked instances made them feed more groups), each took a
    whole maintained host's room for the one it gave back, while the hosts
    out could grow only by the room the maintained hosts gave: 4,309 s,
    1.187 x the bound. Opened after the others, 1.044."""
    span, moves, most = family_layout_ratios(monkeypatch, max_hosts=200, seed=1)
    assert span <= 1.10
    assert moves <= 1.10
    assert most <= 2
