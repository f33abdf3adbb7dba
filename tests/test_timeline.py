"""Timelines measure what happened: group impacts as the constrained workflow
counts them, whether or not the workflow kept the limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fenix_core.sim.scenario import load_scenario, load_scenario_file
from fenix_core.sim.simulation import Simulation
from fenix_core.testing.invariants import constraint_violations

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"

TWO_ON_ONE_HOST = """
hosts:
  - {name: "cmp-{i}", count: 3, vcpus: 16}
groups:
  - {id: pair, project: app, max_impacted_members: 1, recovery_time: 30}
instances:
  - {id: "app-{i}", count: 2, project: app, host: cmp-0, vcpus: 2, group: pair}
actions:
  - {plugin: upgrade, seconds: 600}
migrations: {live_seconds: 40}
session: {workflow: %s}
"""


def test_rolling_moves_both_members_at_once_and_the_timeline_shows_it() -> None:
    with Simulation(load_scenario(TWO_ON_ONE_HOST % "rolling")) as sim:
        result = sim.run()
        operations = sim.engine.list_operations(result.view.session_id)
    (pair,) = [g for g in result.timeline.groups if g.group_id == "pair"]
    assert pair.limit == 1
    assert pair.peak == 2  # the rolling workflow does not read constraints
    # Impact ends recovery_time after the last move ended.
    moves = [op for op in operations if op.kind == "move"]
    assert {op.instance_id for op in moves} == {"app-0", "app-1"}
    assert {(op.source, op.status) for op in moves} == {("cmp-0", "done")}
    last = max(op.finished_at for op in moves if op.finished_at)
    assert pair.steps[-1] == (last + timedelta(seconds=30), 0)


def test_constrained_keeps_the_limit_and_agrees_with_the_rule_checker() -> None:
    with Simulation(load_scenario(TWO_ON_ONE_HOST % "constrained")) as sim:
        result = sim.run()
        assert constraint_violations(sim.cloud, sim.engine.constraints()) == []
    (pair,) = [g for g in result.timeline.groups if g.group_id == "pair"]
    assert pair.peak == 1


def test_sample_constrained_scenario_runs_in_parallel_waves_within_limits() -> None:
    scenario = load_scenario_file(SCENARIOS / "constrained.yaml")
    with Simulation(scenario) as sim:
        result = sim.run()
        assert (
            constraint_violations(
                sim.cloud,
                sim.engine.constraints(),
                max_parallel_hosts=scenario.session.request.max_parallel_hosts,
            )
            == []
        )
    waves = result.timeline.waves()
    assert len(waves) < len(scenario.hosts)
    for group in result.timeline.groups:
        assert group.limit is not None
        assert 1 <= group.peak <= group.limit
