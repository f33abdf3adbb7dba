"""The plan's preview: per-host times, hosts out at once, moves, projects asked,
and the makespan against its lower bound with what limits it."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime, timedelta
from textwrap import dedent
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from fenix_core.cli.plan_display import print_plan
from fenix_core.sim.preview import Ask, build_preview, hosts_out_steps
from fenix_core.sim.scenario import load_scenario
from fenix_core.sim.simulation import plan
from fenix_core.sim.timeline import HostLane, Timeline

START = datetime(2026, 1, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=80, deadline=None, derandomize=True)


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else START + timedelta(seconds=seconds)


def _timeline(spans: list[tuple[float | None, float | None, float | None]]) -> Timeline:
    hosts = tuple(
        HostLane(f"h{i}", "compute", "MAINTAINED", _at(d), _at(m), _at(e))
        for i, (d, m, e) in enumerate(spans)
    )
    end = max((h.end for h in hosts if h.end), default=START)
    return Timeline("s", "constrained", "MAINTENANCE_DONE", None, START, end, hosts, ())


def test_hosts_out_steps_count_from_the_drain_to_the_end() -> None:
    timeline = _timeline([(0, 60, 600), (None, 100, 700), (600, 660, 1200), (None, None, None)])
    # h2 starts as h0 ends: handed over, never three at once
    assert hosts_out_steps(timeline) == [(0.0, 1), (100.0, 2), (700.0, 1), (1200.0, 0)]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 50)),
        min_size=1,
        max_size=12,
    )
)
def test_hosts_out_steps_agree_with_counting_at_every_instant(
    raw: list[tuple[int, int, int]],
) -> None:
    spans = [(float(a), float(a + b), float(a + b + c)) for a, b, c in raw]
    steps = hosts_out_steps(_timeline(spans))
    assert all(later[1] != earlier[1] for earlier, later in itertools.pairwise(steps))
    for probe in range(160):
        t = probe + 0.5
        expected = sum(1 for a, _, e in spans if a <= t < e)
        held = [count for when, count in steps if when <= t]
        assert (held[-1] if held else 0) == expected, t


SCENARIO = """
name: preview
hosts:
  - {name: "cmp-{i}", count: 6, vcpus: 16}
groups:
  - {id: db, project: db, anti_affinity_group: true, max_impacted_members: 1, recovery_time: 300}
instances:
  - {id: "db-{i}", count: 4, project: db, host: "cmp-{i}", vcpus: 2, group: db}
  - {id: "web-{i}", count: 2, project: web, host: "cmp-{i}", vcpus: 2}
managers:
  db: {}
actions:
  - {plugin: upgrade, seconds: 60}
migrations: {seconds: 30, live_seconds: 20}
session:
  workflow: constrained
"""


def _preview(text: str) -> dict[str, Any]:
    data = plan(load_scenario(dedent(text))).to_dict()
    preview = data["preview"]
    assert isinstance(preview, dict)
    return data


def test_a_long_recovery_makes_the_group_chain_the_limit() -> None:
    data = _preview(SCENARIO)
    bound = data["preview"]["lower_bound"]
    # No host outside the session: each member's final move waits for a first
    # maintained host (the empty cmp-4 after its 60 s of work), then 4 db
    # members one at a time, 300 s apart: 4 x 20 + 3 x 300, + 60 s of host work
    assert bound["first_maintained_seconds"] == 60
    assert bound["group_chain_seconds"] == 60 + 4 * 20 + 3 * 300 + 60
    assert bound["limited_by"] == "group chain"
    assert bound["critical_group"] == {
        "group_id": "db",
        "members": 4,
        "max_impacted_members": 1,
        "recovery_time": 300.0,
    }
    assert bound["seconds"] == bound["group_chain_seconds"]
    assert bound["makespan_seconds"] == data["estimated_makespan_seconds"]
    assert bound["makespan_seconds"] >= bound["seconds"]
    assert bound["ratio"] == round(bound["makespan_seconds"] / bound["seconds"], 4)


def test_a_short_recovery_and_a_cap_make_capacity_the_limit() -> None:
    text = SCENARIO.replace("recovery_time: 300", "recovery_time: 0").replace(
        "workflow: constrained", "workflow: constrained\n  max_parallel_hosts: 1"
    )
    bound = _preview(text)["preview"]["lower_bound"]
    assert bound["limited_by"] == "capacity"
    assert bound["hosts_out_at_once"] == 1
    assert bound["hosts_out_capped_by"] == ["max_parallel_hosts"]
    assert bound["capacity_seconds"] == 6 * 60
    # the chain: from the first maintained host (60 s), 4 moves, host work
    assert bound["group_chain_seconds"] == 60 + 4 * 20 + 60


#: Every host holds two members of a group that moves one at a time with
#: 100 s of recovery, and no host outside the session has room.
PAIRS = """
name: pairs
hosts:
  - {name: "cmp-{i}", count: 3, vcpus: 16}
groups:
  - {id: db, project: db, max_impacted_members: 1, recovery_time: 100}
instances:
  - {id: "db-a{i}", count: 3, project: db, host: "cmp-{i}", vcpus: 2, group: db}
  - {id: "db-b{i}", count: 3, project: db, host: "cmp-{i}", vcpus: 2, group: db}
managers:
  db: {}
actions:
  - {plugin: upgrade, seconds: 60}
migrations: {seconds: 30, live_seconds: 20}
session:
  workflow: constrained
"""


def test_the_first_hosts_drain_at_its_groups_pace_delays_the_chain() -> None:
    data = _preview(PAIRS)
    bound = data["preview"]["lower_bound"]
    # The first host maintained empties its two db members one at a time
    # (20 + 100 + 20 s), then works 60 s: no member stays anywhere before.
    assert bound["first_maintained_seconds"] == 2 * 20 + 100 + 60
    # 6 members one at a time from then on, and the last one's host works
    assert bound["group_chain_seconds"] == 200 + 6 * 20 + 5 * 100 + 60
    assert bound["seconds"] == bound["group_chain_seconds"]
    # counting one move for the first drain would say 80 s, not the limit
    assert bound["limited_by"] == "first drain"
    assert bound["critical_group"]["members"] == 6
    assert bound["makespan_seconds"] >= bound["seconds"]


def test_room_outside_the_session_lets_final_moves_start_at_once() -> None:
    text = PAIRS.replace("count: 3, vcpus: 16", "count: 4, vcpus: 16").replace(
        "workflow: constrained", "workflow: constrained\n  hosts: [cmp-0, cmp-1, cmp-2]"
    )
    data = _preview(text)
    bound = data["preview"]["lower_bound"]
    # cmp-3 is empty and not maintained: a member may stay there from the start
    assert bound["first_maintained_seconds"] is None
    assert bound["group_chain_seconds"] == 6 * 20 + 5 * 100 + 60
    assert bound["limited_by"] == "group chain"
    assert bound["makespan_seconds"] >= bound["seconds"]


def test_a_full_host_outside_the_session_is_no_room() -> None:
    text = PAIRS.replace("count: 3, vcpus: 16", "count: 4, vcpus: 16").replace(
        "workflow: constrained", "workflow: constrained\n  hosts: [cmp-0, cmp-1, cmp-2]"
    )
    text = text.replace(
        "managers:", '  - {id: "big", project: other, host: cmp-3, vcpus: 15}\nmanagers:'
    )
    bound = _preview(text)["preview"]["lower_bound"]
    # 1 vcpu free on cmp-3 takes no 2-vcpu member
    assert bound["first_maintained_seconds"] == 200
    assert bound["limited_by"] == "first drain"


def test_the_plan_says_the_first_drain_in_words() -> None:
    written = io.StringIO()
    print_plan(Console(file=written, width=400), "pairs", _preview(PAIRS))
    text = written.getvalue()
    assert "limited by the group chain of db (6 members, 1 at a time, 100 s recovery)" in text
    assert (
        "final moves start only once a first host is maintained (0:03:20 at the earliest)" in text
    )
    assert "no host empties sooner" in text


def test_rolling_is_serial_and_has_no_group_chain() -> None:
    bound = _preview(SCENARIO.replace("constrained", "rolling"))["preview"]["lower_bound"]
    assert bound["hosts_out_at_once"] == 1
    assert bound["hosts_out_capped_by"] == ["workflow"]
    assert bound["group_chain_seconds"] == 0
    assert bound["critical_group"] is None
    assert bound["capacity_seconds"] == 6 * 60


def test_controls_left_out_of_the_bound_are_named() -> None:
    text = SCENARIO.replace(
        "workflow: constrained",
        "workflow: constrained\n  controls: {max_hosts_per_hour: 30, settle_seconds: 10}",
    )
    assert _preview(text)["preview"]["lower_bound"]["not_in_bound"] == [
        "controls.max_hosts_per_hour",
        "controls.settle_seconds",
    ]


def test_hosts_moves_and_projects_agree_with_the_run() -> None:
    data = _preview(SCENARIO)
    preview = data["preview"]
    hosts = {h["name"]: h for h in preview["hosts"]}
    assert set(hosts) == {f"cmp-{i}" for i in range(6)}
    waves = {h: w["index"] for w in data["waves"] for h in w["hosts"]}
    for name, host in hosts.items():
        assert host["wave"] == waves[name]
        assert host["start"] <= host["maintenance_start"] < host["end"]
    peak = preview["concurrency"]["max_hosts_out"]
    assert peak == max(count for _, count in preview["concurrency"]["hosts_out"])
    assert 1 <= peak <= 6
    moves = preview["moves"]
    assert moves["bound"] == 6  # every instance sits on a maintained host
    assert moves["total"] == sum(moves["per_instance"].values())
    assert moves["total"] >= moves["bound"]
    assert set(moves["per_instance"]) == {f"db-{i}" for i in range(4)} | {"web-0", "web-1"}
    assert moves["moved_twice_or_more"] == sum(1 for n in moves["per_instance"].values() if n > 1)
    # only db has a manager: it is asked, web is not
    projects = {p["project"]: p for p in preview["projects"]}
    assert set(projects) == {"db"}
    asked = {a["state"]: a for a in projects["db"]["asked"]}
    assert asked["MAINTENANCE"]["first"] == 0
    assert asked["PLANNED_MAINTENANCE"]["instances"] == 4
    assert 0 < asked["MAINTENANCE_COMPLETE"]["first"] <= data["estimated_makespan_seconds"]


def test_asks_are_summed_per_project_and_state() -> None:
    timeline = _timeline([(0, 10, 100)])
    scenario = load_scenario("hosts: [{name: h0}]\n")
    asks = [
        Ask(START + timedelta(seconds=50), "p", "PLANNED_MAINTENANCE", ("a",)),
        Ask(START, "p", "MAINTENANCE", ("a", "b")),
        Ask(START + timedelta(seconds=20), "p", "PLANNED_MAINTENANCE", ("b", "a")),
        Ask(START + timedelta(seconds=5), "q", "MAINTENANCE"),
    ]
    projects = build_preview(scenario, timeline, {}, asks)["projects"]
    assert projects == [
        {
            "project": "p",
            "first": 0.0,
            "asked": [
                {
                    "state": "MAINTENANCE",
                    "first": 0.0,
                    "last": 0.0,
                    "notifications": 1,
                    "instances": 2,
                },
                {
                    "state": "PLANNED_MAINTENANCE",
                    "first": 20.0,
                    "last": 50.0,
                    "notifications": 2,
                    "instances": 2,
                },
            ],
        },
        {
            "project": "q",
            "first": 5.0,
            "asked": [
                {
                    "state": "MAINTENANCE",
                    "first": 5.0,
                    "last": 5.0,
                    "notifications": 1,
                    "instances": 0,
                }
            ],
        },
    ]
