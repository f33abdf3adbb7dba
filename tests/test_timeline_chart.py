"""The timeline picture stays readable at hundreds of hosts: drawn by wave."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fenix_core.sim.timeline import HostLane, Timeline
from fenix_core.sim.timeline_chart import (
    BUNDLED_LANES,
    MAX_HOST_LANES,
    bundle_hosts,
    render_timeline,
)

pytest.importorskip("matplotlib")

START = datetime(2026, 1, 1, tzinfo=UTC)


def _timeline(hosts: int, per_wave: int) -> Timeline:
    """``hosts`` hosts maintained ``per_wave`` at a time, 10 min each after a
    1 min drain."""
    lanes = []
    for index in range(hosts):
        wave = index // per_wave
        drain = START + timedelta(seconds=660 * wave)
        lanes.append(
            HostLane(
                name=f"cmp-{index:03d}",
                type="compute",
                state="MAINTAINED",
                drain_start=drain,
                maintenance_start=drain + timedelta(seconds=60),
                end=drain + timedelta(seconds=660),
            )
        )
    end = max(h.end for h in lanes if h.end is not None)
    return Timeline("s", "constrained", "MAINTENANCE_DONE", None, START, end, tuple(lanes), ())


def _ticks(svg: str) -> int:
    return len(re.findall(r'<g id="ytick_\d+">', svg))


@pytest.mark.parametrize(
    ("per_wave", "first_label"),
    [(20, "wave 1 (1/4): 5 hosts"), (1, "waves 1-5: 5 hosts"), (200, "wave 1 (1/40): 5 hosts")],
)
def test_two_hundred_hosts_are_drawn_by_wave_in_few_lanes(
    tmp_path: Path, per_wave: int, first_label: str
) -> None:
    timeline = _timeline(200, per_wave=per_wave)
    bundles = bundle_hosts(timeline)
    assert len(bundles) <= BUNDLED_LANES
    assert sorted(h.name for _, hosts in bundles for h in hosts) == [h.name for h in timeline.hosts]
    assert bundles[0][0] == first_label
    svg = render_timeline(timeline, tmp_path / "big.svg").read_text()
    assert 'id="host-' not in svg
    lanes = [int(n) for n in re.findall(r'id="lane-(\d+)"', svg)]
    assert lanes == list(range(1, len(bundles) + 1))
    assert 'id="hosts-out"' in svg
    assert _ticks(svg) == len(bundles) + 1  # and the hosts-out lane
    assert f"hosts out at once (peak {min(per_wave, 200)})" in svg
    assert render_timeline(timeline, tmp_path / "big.png").stat().st_size > 0


def test_up_to_the_limit_each_host_has_its_lane(tmp_path: Path) -> None:
    timeline = _timeline(MAX_HOST_LANES, per_wave=6)
    svg = render_timeline(timeline, tmp_path / "small.svg").read_text()
    assert len(re.findall(r'id="host-cmp-\d+"', svg)) == MAX_HOST_LANES
    assert 'id="lane-' not in svg
    assert _ticks(svg) == MAX_HOST_LANES
