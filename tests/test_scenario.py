"""Scenario files: what they describe, and errors that name the bad field."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from fenix_core.errors import InvalidInput
from fenix_core.sim.scenario import load_scenario, load_scenario_file
from fenix_core.sim.simulation import Simulation

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"

BASE = """
hosts:
  - name: ctl-0
    type: controller
  - {name: "cmp-{i}", count: 3, vcpus: 16}
instances:
  - {id: "vm-{i}", count: 4, project: web, hosts: [cmp-0, cmp-1], vcpus: 2}
"""


def test_sample_scenarios_load() -> None:
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        scenario = load_scenario_file(path)
        assert scenario.hosts, path
        assert scenario.instances, path


def test_generators_expand_names_and_spread_instances_round_robin() -> None:
    scenario = load_scenario(BASE)
    assert [h.name for h in scenario.hosts] == ["ctl-0", "cmp-0", "cmp-1", "cmp-2"]
    assert [h.vcpus for h in scenario.hosts] == [8, 16, 16, 16]
    assert [(i.id, i.host) for i in scenario.instances] == [
        ("vm-0", "cmp-0"),
        ("vm-1", "cmp-1"),
        ("vm-2", "cmp-0"),
        ("vm-3", "cmp-1"),
    ]
    # Each generator spreads its own instances from the first host of its list.
    more = load_scenario(
        BASE + "  - {id: 'db-{i}', count: 2, first: 7, project: db, hosts: [cmp-2, cmp-0]}\n"
    )
    assert [(i.id, i.host) for i in more.instances][4:] == [("db-7", "cmp-2"), ("db-8", "cmp-0")]


def test_action_duration_by_label_then_host_type_then_default() -> None:
    scenario = load_scenario(
        BASE.replace("vcpus: 16}", "vcpus: 16, labels: {gen: old}}")
        + dedent("""
        actions:
          - plugin: upgrade
            seconds: 100
            by_host_type: {controller: 300}
            by_label: {"gen=old": 200}
        """)
    )
    action = scenario.actions[0]
    assert action.seconds_on(scenario.host("cmp-1")) == 200
    assert action.seconds_on(scenario.host("ctl-0")) == 300
    assert action.type == "host"


def test_a_label_may_name_several_domains() -> None:
    """A host in two aggregates: a list of values, each a domain of the key;
    ``by_label`` matches any of them."""
    scenario = load_scenario(
        BASE.replace("vcpus: 16}", "vcpus: 16, labels: {aggregate: [gpu, ssd], row: 3}}")
        + "actions:\n  - {plugin: upgrade, seconds: 100, by_label: {aggregate=ssd: 50}}\n"
    )
    assert scenario.host("cmp-1").labels == {"aggregate": ("gpu", "ssd"), "row": "3"}
    assert scenario.actions[0].seconds_on(scenario.host("cmp-1")) == 50
    assert scenario.actions[0].seconds_on(scenario.host("ctl-0")) == 100


def test_instances_may_run_on_a_controller() -> None:
    """A Kubernetes control-plane node's pods: held by the scenario, and
    moved to another controller when their host is maintained."""
    text = BASE.replace(
        "  - name: ctl-0\n    type: controller\n",
        "  - {name: ctl-0, type: controller}\n  - {name: ctl-1, type: controller}\n",
    )
    scenario = load_scenario(text + "  - {id: dns-0, project: ops, host: ctl-0}\n")
    assert scenario.instances[-1].host == "ctl-0"
    with Simulation(scenario) as sim:
        result = sim.run()
        moves = [e.host for e in sim.cloud.events if e.kind == "migration_done"]
    assert result.view.state == "MAINTENANCE_DONE", result.view.reason
    assert moves[0] == "ctl-1"


def test_without_faults_keeps_behaviour_but_answers_at_once() -> None:
    scenario = load_scenario_file(SCENARIOS / "faults.yaml")
    assert scenario.faults.failed_migrations
    assert scenario.faults.hosts_stay_down
    calm = scenario.without_faults(answer_at_once=True)
    assert not calm.faults.failed_migrations
    assert not calm.faults.hosts_stay_down
    assert [m.delay for m in calm.managers] == [0.0] * len(calm.managers)
    assert [m.action for m in calm.managers] == [m.action for m in scenario.managers]


def test_simulation_applies_manager_delays_and_faults() -> None:
    scenario = load_scenario_file(SCENARIOS / "faults.yaml")
    with Simulation(scenario) as sim:
        result = sim.run()
    assert result.view.state == "MAINTENANCE_FAILED"
    down = scenario.faults.hosts_stay_down[0]
    assert result.view.host(down).state == "FAILED"
    assert result.migrations_failed == scenario.faults.failed_migrations[0].times
    # The engine retried the failed migration, so every instance left its host.
    assert result.migrations_done >= len(scenario.instances)


BAD = [
    pytest.param(
        BASE.replace("vcpus: 16}", 'vcpus: "lots"}'),
        "hosts[1].vcpus",
        "valid integer",
        id="vcpus-type",
    ),
    pytest.param(
        BASE + "  - {id: vm-9, project: web, host: cmp-7}\n",
        "instances[1].host",
        "no host 'cmp-7'",
        id="unknown-host",
    ),
    pytest.param(
        BASE.replace('"cmp-{i}"', "cmp"), "hosts[1].name", "{i}", id="generator-without-pattern"
    ),
    pytest.param(BASE + "colour: blue\n", "colour", "unknown field", id="unknown-top-field"),
    pytest.param(
        BASE + "  - {id: vm-9, first: 2, project: web, host: cmp-0}\n",
        "instances[1].first",
        "only with count",
        id="first-without-count",
    ),
    pytest.param(
        BASE.replace("vcpus: 16}", "vcpus: 16, labels: {rack: {row: 1}}}"),
        "hosts[1].labels.rack",
        "expected a value",
        id="label-value",
    ),
    pytest.param(
        BASE.replace("vcpus: 16}", "vcpus: 16, labels: {rack: [r1, [r2]]}}"),
        "hosts[1].labels.rack",
        "expected a value",
        id="label-list-value",
    ),
    pytest.param(
        BASE.replace("type: controller", "type: storage"),
        "hosts[0].type",
        "'compute' or 'controller'",
        id="host-type",
    ),
    pytest.param(
        BASE + "groups:\n  - {id: g1, project: web, max_impacted_members: 0}\n",
        "groups[0].max_impacted_members",
        "between 1",
        id="group-limit",
    ),
    pytest.param(
        BASE.replace("vcpus: 2}", "vcpus: 2, group: nowhere}"),
        "instances[0].group",
        "no group 'nowhere'",
        id="unknown-group",
    ),
    pytest.param(
        BASE.replace("vcpus: 2}", "vcpus: 2, group: g1}") + "groups:\n  - {id: g1, project: db}\n",
        "instances[0].group",
        "belongs to project 'db'",
        id="group-of-another-project",
    ),
    pytest.param(
        BASE.replace("vcpus: 2}", "vcpus: 2, constraints: {migration_type: TELEPORT}}"),
        "instances[0].constraints.migration_type",
        "must be one of",
        id="instance-constraint",
    ),
    pytest.param(
        BASE + "managers:\n  web: {nack: [PLEASE_DONT]}\n",
        "managers.web.nack[0]",
        "must be one of",
        id="manager-nack-state",
    ),
    pytest.param(
        BASE + "managers:\n  web: {delay: -5}\n",
        "managers.web.delay",
        "greater than or equal to 0",
        id="manager-delay",
    ),
    pytest.param(
        BASE + "actions:\n  - {plugin: upgrade, by_label: {old: 10}}\n",
        "actions[0].by_label.old",
        "key=value",
        id="label-without-value",
    ),
    pytest.param(
        BASE + "faults:\n  failed_migrations:\n    - {instance: vm-77}\n",
        "faults.failed_migrations[0].instance",
        "no instance 'vm-77'",
        id="fault-unknown-instance",
    ),
    pytest.param(
        BASE + "session:\n  reply_policy: shrug\n",
        "session.reply_policy",
        "must be one of",
        id="session-request-field",
    ),
    pytest.param(
        BASE + "session:\n  max_parallel_hosts: 0\n",
        "session.max_parallel_hosts",
        "greater than or equal to 1",
        id="parallel-hosts",
    ),
    pytest.param(BASE + "  - [unclosed\n", "scenario", "not valid YAML at line", id="yaml-syntax"),
    pytest.param("- just\n- a list\n", "scenario", "expected an object", id="not-a-mapping"),
    pytest.param("instances: []\n", "hosts", "required", id="no-hosts"),
]


@pytest.mark.parametrize(("text", "field", "message"), BAD)
def test_malformed_scenarios_name_the_field(text: str, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_scenario(text)
    assert caught.value.field == field
    assert message in caught.value.reason
    assert str(caught.value).startswith(f"{field}: ")


def test_constrained_moves_each_instance_at_most_twice() -> None:
    # vm-0 and vm-1 used to move three times: cmp-0 -> cmp-1 (nothing
    # maintained yet) -> cmp-5 when cmp-1 opened -> a maintained host. Having
    # moved once, an instance now waits for room where it stays.
    from fenix_core.testing import migrations_per_instance

    scenario = load_scenario(
        dedent("""
        hosts:
          - {name: "cmp-{i}", count: 6, vcpus: 8}
        groups:
          - {id: g0, project: p0, max_impacted_members: 1}
        instances:
          - {id: vm-0, project: p0, host: cmp-0, group: g0}
          - {id: vm-1, project: p0, host: cmp-0}
          - {id: vm-2, project: p0, host: cmp-1, group: g0}
          - {id: vm-3, project: p0, host: cmp-1, group: g0}
          - {id: vm-4, project: p0, host: cmp-5, group: g0}
        actions:
          - {plugin: upgrade, seconds: 600}
        session: {workflow: constrained}
        """)
    )
    with Simulation(scenario) as sim:
        assert sim.run().view.state == "MAINTENANCE_DONE"
        assert max(migrations_per_instance(sim.cloud).values()) <= 2
