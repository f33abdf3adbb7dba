"""The constrained workflow on the contract (fenix_core.workflows.constrained),
driven on a FakeContext by tests/constrained_driver.py, which checks the
groups' rules after every step. Today's constrained workflow
(tests/test_constrained.py, test_scenario.py) is the spec."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from constrained_driver import ConstrainedDriver, cluster, group, member, run, told
from constrained_layouts import (
    ANTI_AFFINE_MEMBER_ON_THE_FULLEST_HOST,
    ANTI_AFFINE_PAIR_LEFT_ONE_HOST,
    CHECKED_ON_EVERY_HOST,
    MANY_PENDING_DEAD_ENDS,
    ONCE_DEAD_ENDS,
)
from contract_driver import LoggingContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fenix_core import ActionSpec, SessionRequest
from fenix_core.constraints import ConstraintSet
from fenix_core.contract import Move, Watch
from fenix_core.states import HostState, InstanceState, SessionState
from fenix_core.workflows import ConstrainedState, RollingState

UPGRADE = (ActionSpec("upgrade", "host"),)


def request(**kwargs: Any) -> SessionRequest:
    return SessionRequest(workflow="constrained", actions=UPGRADE, **kwargs)


def maintained(ctx: LoggingContext) -> list[str]:
    return sorted(h.name for h in ctx.hosts.in_state(HostState.MAINTAINED))


def doctor_vnf(**kwargs: Any) -> LoggingContext:
    """The OPNFV Doctor VNF: an active/standby pair (anti-affinity, one
    impacted at a time, 120 s recovery) and a non-HA group of four (two at a
    time, 30 s recovery)."""
    layout = {
        "cmp-0": [("ha-active", "vnf", 2), ("nonha-0", "vnf", 1)],
        "cmp-1": [("ha-standby", "vnf", 2), ("nonha-1", "vnf", 1)],
        "cmp-2": [("nonha-2", "vnf", 1)],
        "cmp-3": [("nonha-3", "vnf", 1)],
    }
    return cluster(
        layout,
        managed=("vnf",),
        groups=[
            group("ha", "vnf", anti_affinity_group=True, max_impacted_members=1, recovery_time=120),
            group("nonha", "vnf", max_impacted_members=2, recovery_time=30),
        ],
        members=[member("ha-active", "vnf", "ha"), member("ha-standby", "vnf", "ha")]
        + [member(f"nonha-{n}", "vnf", "nonha") for n in range(4)],
        **kwargs,
    )


def test_doctor_vnf_runs_in_parallel_within_its_constraints() -> None:
    ctx = doctor_vnf(request=request())
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert maintained(ctx) == [f"cmp-{n}" for n in range(4)]
    assert driver.peak_out >= 2  # several hosts out of service together
    assert sorted(driver.host_actions) == [f"cmp-{n}" for n in range(4)]
    placements = {ctx.instances.get("ha-active").host, ctx.instances.get("ha-standby").host}  # type: ignore[union-attr]
    assert len(placements) == 2


def test_doctor_vnf_manager_hears_the_etsi_sequence() -> None:
    ctx = doctor_vnf(request=request())
    driver = run(ctx)
    states = told(ctx, "vnf")
    assert states[0] == "MAINTENANCE"
    assert "PLANNED_MAINTENANCE" in states
    moves = sum(driver.moves_of.values())
    assert states.count("INSTANCE_ACTION_DONE") == moves
    assert "ADMIN_ACTION_DONE" in states
    assert states[-1] == "MAINTENANCE_COMPLETE"
    planned = [
        ids for p, asked in ctx.asked for s, ids in asked.items() if s == "PLANNED_MAINTENANCE"
    ]
    asked = Counter(i for ids in planned for i in ids)
    assert set(asked) == {"ha-active", "ha-standby"} | {f"nonha-{n}" for n in range(4)}
    assert asked == driver.moves_of  # asked once per host it had to leave
    # Instances with constraints: one per question (Doctor's VNFM, Tacker).
    assert [len(ids) for ids in planned] == [1] * len(planned)
    # ADMIN_ACTION_DONE names what the project was asked about in that round.
    done = [ids for p, s, ids in ctx.told if s == "ADMIN_ACTION_DONE"]
    assert sorted(i for ids in done for i in ids) == sorted(i for ids in planned for i in ids)


def test_the_question_proposes_an_action_per_instance_and_lists_the_allowed_ones() -> None:
    ctx = doctor_vnf(request=request())
    run(ctx)
    planned = [q for q in ctx.questions if q[1] == "PLANNED_MAINTENANCE"]
    assert planned
    for _project, _state, allowed, metadata in planned:
        assert "LIVE_MIGRATE" in allowed
        assert metadata is not None
        assert set(metadata["proposed_actions"].values()) <= set(allowed)


def test_a_project_without_instance_constraints_is_asked_per_wave() -> None:
    layout = {"cmp-0": [("vm-0", "p", 1), ("vm-1", "p", 1)], "cmp-1": [], "cmp-2": []}
    ctx = cluster(
        layout, managed=("p",), groups=[group("g", "p", max_impacted_members=2)], request=request()
    )
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    asked = [ids for p, a in ctx.asked for s, ids in a.items() if s == "PLANNED_MAINTENANCE"]
    assert sorted(asked[0]) == ["vm-0", "vm-1"]


def test_unconstrained_instances_follow_the_project_default_one_at_a_time() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}-{k}", "p", 1) for k in range(2)] for h in range(4)}
    ctx = cluster(layout, request=request())
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert driver.peak_moving == 1


def test_default_group_rules_are_configurable() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}-{k}", "p", 1) for k in range(2)] for h in range(4)}
    ctx = cluster(layout, request=request(default_group_constraints={"max_impacted_members": 3}))
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert driver.peak_moving == 3


def test_max_parallel_hosts_caps_hosts_out_of_service() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}", f"p{h}", 1)] for h in range(6)}
    ctx = cluster(layout, request=request(max_parallel_hosts=2))
    driver = run(ctx)  # the driver checks the cap after every step
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert driver.peak_out == 2


def test_anti_affinity_group_with_no_spare_host_fails_before_touching_any_host() -> None:
    layout = {f"cmp-{h}": [(f"db-{h}", "unmanaged", 1)] for h in range(3)}
    ctx = cluster(
        layout,
        groups=[group("db", "unmanaged", anti_affinity_group=True)],
        members=[member(f"db-{h}", "unmanaged", "db") for h in range(3)],
        request=request(),
    )
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert "group db" in (ctx.session.reason or "")
    assert not [op for _, op in ctx.submitted if type(op).__name__ != "ListHosts"]
    assert not ctx.notified


def test_anti_affinity_group_with_no_spare_host_asks_its_manager_to_scale_in() -> None:
    layout = {f"cmp-{h}": [(f"db-{h}", "dbp", 1)] for h in range(3)}
    ctx = cluster(
        layout,
        managed=("dbp",),
        groups=[group("db", "dbp", anti_affinity_group=True)],
        members=[member(f"db-{h}", "dbp", "db") for h in range(3)],
        request=request(),
    )
    run(ctx, scale_in={"dbp": ["db-2"]})
    scale_in = [q for q in ctx.questions if q[1] == "SCALE_IN"]
    assert scale_in
    assert "group db" in (scale_in[0][3] or {})["reason"]
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason


def test_constraints_changed_mid_session_apply_from_the_next_decision() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}-{k}", "app", 1) for k in range(2)] for h in range(6)}
    members = [member(f"vm-{h}-{k}", "app", "web") for h in range(6) for k in range(2)]
    ctx = cluster(
        layout,
        managed=("app",),
        groups=[group("web", "app", max_impacted_members=4)],
        members=members,
        request=request(),
    )
    tight = ConstraintSet.of(
        [group("web", "app", max_impacted_members=1, recovery_time=60)], members
    )

    def moving(c: LoggingContext) -> bool:
        return bool(c.instances.in_state(InstanceState.IN_ACTION))

    def tighten(c: LoggingContext) -> None:
        c.constraint_set = tight

    driver = ConstrainedDriver(ctx, when=[(moving, tighten)])
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert ctx.constraint_set is tight  # and the driver checked the new rules since


def test_lead_time_holds_the_move_and_the_waves_wake_up_for_it() -> None:
    layout = {"cmp-0": [("vm-0", "app", 1)], "cmp-1": [], "cmp-2": [("vm-2", "app", 1)]}
    ctx = cluster(
        layout,
        managed=("app",),
        groups=[group("g", "app", max_impacted_members=2)],
        members=[member(i, "app", "g", lead_time=900) for i in ("vm-0", "vm-2")],
        request=request(),
    )
    asked_at: dict[str, Any] = {}
    moved_at: dict[str, Any] = {}

    class Watching(ConstrainedDriver):
        def _step(self) -> None:
            seen = len(self.ctx.asked)
            super()._step()
            for _p, asked in self.ctx.asked[seen:]:
                for ids in asked.values():
                    for iid in ids:
                        asked_at.setdefault(iid, self.ctx.now)

        def _check_submitted(self, op: Any) -> None:
            super()._check_submitted(op)
            if isinstance(op, Move | Watch):
                moved_at.setdefault(op.instance_id, self.ctx.now)

    Watching(ctx).run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    for iid in ("vm-0", "vm-2"):
        assert moved_at[iid] - asked_at[iid] >= timedelta(seconds=900)


@pytest.mark.parametrize(
    ("rules", "live_migratable", "expected"),
    [
        ({}, True, "LIVE_MIGRATE"),
        ({}, False, "MIGRATE"),
        ({"migration_type": "MIGRATE"}, True, "MIGRATE"),
        ({"max_interruption_time": 10}, False, "OWN_ACTION"),
        ({"max_interruption_time": 120}, False, "MIGRATE"),
        ({"migration_type": "OWN_ACTION"}, True, "OWN_ACTION"),
    ],
)
def test_instance_constraints_choose_how_it_moves(
    rules: dict[str, Any], live_migratable: bool, expected: str
) -> None:
    ctx = cluster(
        {"cmp-0": [("vm", "app", 1)], "cmp-1": []},
        managed=("app",),
        groups=[group("g", "app")],
        members=[member("vm", "app", "g", **rules)],
        live={"vm": live_migratable},
        request=request(),
    )
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert ctx.instances.get("vm").action == expected  # type: ignore[union-attr]
    kinds = [type(op).__name__ for _, op in ctx.submitted if isinstance(op, Move | Watch)]
    assert kinds[0] == ("Watch" if expected == "OWN_ACTION" else "Move")


def test_controllers_go_first_one_at_a_time_then_computes_in_waves() -> None:
    layout = {"ctl-0": [], "ctl-1": []} | {f"cmp-{h}": [(f"vm-{h}", f"p{h}", 1)] for h in range(4)}
    ctx = cluster(layout, types={"ctl-0": "controller", "ctl-1": "controller"}, request=request())
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    order = [h for h, s in ctx.notified if s == "IN_MAINTENANCE"]
    assert order[:2] == ["ctl-0", "ctl-1"]
    events = [(h, s) for h, s in ctx.notified]
    assert events.index(("ctl-0", "MAINTENANCE_COMPLETE")) < events.index(
        ("ctl-1", "IN_MAINTENANCE")
    )
    first_compute = min(events.index((f"cmp-{h}", "IN_MAINTENANCE")) for h in range(4))
    assert events.index(("ctl-1", "MAINTENANCE_COMPLETE")) < first_compute
    assert driver.peak_out >= 2  # the computes overlapped


def test_a_controller_with_instances_is_drained_alone_the_rolling_way() -> None:
    layout = {
        "ctl-0": [("svc", "ops", 1)],
        "ctl-1": [],
        "cmp-0": [("vm-0", "p", 1)],
        "cmp-1": [],
    }
    types = {"ctl-0": "controller", "ctl-1": "controller"}
    ctx = cluster(layout, types=types, vcpus=4, managed=("ops",), request=request())
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert maintained(ctx) == ["cmp-0", "cmp-1", "ctl-0", "ctl-1"]
    # The empty controller first, then the one drained alone (its project
    # asked the rolling way), then the computes.
    assert [h for h, s in ctx.notified if s == "IN_MAINTENANCE"][:2] == ["ctl-1", "ctl-0"]
    assert "PREPARE_MAINTENANCE" in told(ctx, "ops") or "PLANNED_MAINTENANCE" in told(ctx, "ops")


# --------------------------------------------------------------------------- around the waves


def test_a_window_closed_holds_the_hosts_it_covers() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}", f"p{h}", 1)] for h in range(4)}
    ctx = cluster(layout, request=request(), closed={"cmp-2": "window closed"})
    driver = ConstrainedDriver(ctx, openings=["cmp-2"])
    driver.run()  # the driver refuses host work while the window is closed
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert maintained(ctx) == [f"cmp-{h}" for h in range(4)]


def test_a_pause_starts_no_host_and_no_move_until_resumed() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}-{k}", "p", 1) for k in range(2)] for h in range(3)}
    ctx = cluster(layout, request=request())

    def out(c: LoggingContext) -> bool:
        return any(h.state == HostState.DRAINING for h in c.hosts)

    def pause(c: LoggingContext) -> None:
        c.paused = "by the admin"

    submitted_while_paused: list[Any] = []

    class Pausing(ConstrainedDriver):
        def _check_submitted(self, op: Any) -> None:
            if self.ctx.paused is not None and isinstance(op, Move | Watch):
                submitted_while_paused.append(op)
            super()._check_submitted(op)

    driver = Pausing(ctx, when=[(out, pause)])
    driver.run()
    assert driver.resumed_at
    assert submitted_while_paused == []
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason


def test_a_failed_move_is_retried_then_fails_the_session_and_hosts_are_enabled_again() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}", "p", 1)] for h in range(3)}
    ctx = cluster(layout, request=request(max_migration_retries=1))
    driver = run(ctx, fail_moves={"vm-0": 5})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert "vm-0" in (ctx.session.reason or "")
    assert "2 attempt(s)" in (ctx.session.reason or "")
    driver.finish()
    # Every host this session disabled is enabled again (none was skipped).
    assert [h.name for h in ctx.hosts if not h.enabled] == []
    assert not ctx.projects.awaiting()


def test_a_failed_move_retried_once_completes() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}", "p", 1)] for h in range(3)}
    ctx = cluster(layout, request=request(max_migration_retries=2))
    run(ctx, fail_moves={"vm-1": 1})
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason


def test_retry_after_a_failure_starts_over_and_completes() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}", "p", 1)] for h in range(3)}
    ctx = cluster(layout, request=request(max_migration_retries=0))
    driver = run(ctx, fail_moves={"vm-1": 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    driver.retry()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert maintained(ctx) == ["cmp-0", "cmp-1", "cmp-2"]


def test_a_host_action_that_fails_fails_the_session_naming_it() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}", "p", 1)] for h in range(3)}
    ctx = cluster(layout, request=request())
    driver = run(ctx, fail_ops={("RunAction", "cmp-1"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert "upgrade" in (ctx.session.reason or "")
    assert "cmp-1" in (ctx.session.reason or "")
    driver.finish()
    assert ctx.hosts.get("cmp-1").state == HostState.FAILED  # type: ignore[union-attr]
    assert [h.name for h in ctx.hosts if not h.enabled] == []


def test_stuck_host_work_escalated_skip_host_goes_on_without_it() -> None:
    from fenix_core.model import Controls

    layout = {f"cmp-{h}": [(f"vm-{h}", "p", 1)] for h in range(3)}
    controls = Controls.from_dict({"escalation": {"action": "skip_host"}})
    ctx = cluster(layout, request=request(controls=controls))
    run(ctx, stuck={("RunAction", "cmp-1"): 1})
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert ctx.hosts.get("cmp-1").state == HostState.SKIPPED  # type: ignore[union-attr]
    assert maintained(ctx) == ["cmp-0", "cmp-2"]


def test_a_project_silent_past_its_deadline_gets_the_default_or_fails_the_session() -> None:
    layout = {"cmp-0": [("vm-0", "p", 1)], "cmp-1": [], "cmp-2": []}

    def silent_on_planned(project: str, state: str, ids: tuple[str, ...]) -> Any:
        return None if state == "PLANNED_MAINTENANCE" else (f"ACK_{state}", {})

    ctx = cluster(layout, managed=("p",), request=request(reply_policy="default"))
    run(ctx, answer=silent_on_planned)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert ctx.projects.get("p").state in (
        "DEFAULT_PLANNED_MAINTENANCE",
        "ACK_MAINTENANCE_COMPLETE",
    )  # type: ignore[union-attr]

    ctx = cluster(layout, managed=("p",), request=request(reply_policy="fail"))
    driver = run(ctx, answer=silent_on_planned)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert "did not answer PLANNED_MAINTENANCE" in (ctx.session.reason or "")
    driver.finish()
    assert [h.name for h in ctx.hosts if not h.enabled] == []


def test_the_admin_skips_a_draining_host_and_the_waves_go_on() -> None:
    layout = {f"cmp-{h}": [(f"vm-{h}-{k}", "p", 1) for k in range(2)] for h in range(3)}
    ctx = cluster(layout, managed=("p",), request=request())
    run(ctx, admin_skips={"cmp-1": HostState.DRAINING})
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert ctx.hosts.get("cmp-1").state == HostState.SKIPPED  # type: ignore[union-attr]
    assert maintained(ctx) == ["cmp-0", "cmp-2"]


def test_a_refused_target_is_not_asked_for_again() -> None:
    layout = {"cmp-0": [("vm-0", "p", 1)], "cmp-1": [], "cmp-2": []}
    ctx = cluster(layout, request=request())
    driver = run(ctx, refuse_first=frozenset({"vm-0"}))
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    first, second = driver.moves[0], driver.moves[1]
    assert first[0] == second[0] == "vm-0"
    assert first[1] is not None
    assert first[1] in second[2]


# --------------------------------------------------------------------------- state


def largest_state(n_hosts: int) -> int:
    layout = {
        f"cmp-{k:04d}": [(f"vm-{k:04d}-{j}", f"p{k % 3}", 1) for j in range(2)]
        if k % 15 == 0
        else []
        for k in range(n_hosts)
    }
    ctx = cluster(
        layout,
        managed=("p0", "p1"),
        groups=[group("g", "p0", max_impacted_members=2, recovery_time=60)],
        members=[member(f"vm-{k:04d}-0", "p0", "g") for k in range(0, n_hosts, 45)],
        request=request(max_migration_retries=2),
    )
    largest = 0

    class Measuring(ConstrainedDriver):
        def _step(self) -> None:
            nonlocal largest
            super()._step()
            for kind in (ConstrainedState, RollingState):
                comp = self.ctx.components.get(kind)
                if comp is not None:
                    largest = max(largest, len(json.dumps(comp.to_json())))

    Measuring(ctx, fail_moves={"vm-0000-1": 1}).run(limit=200_000)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    return largest


@pytest.mark.no_cover
def test_the_workflow_state_is_the_same_size_at_30_and_300_hosts() -> None:
    small, large = largest_state(30), largest_state(300)
    # Host names are longer by nothing here; a list growing with hosts would
    # make it grow tenfold. Bounded: same size class.
    assert large <= small + 64, (small, large)


# --------------------------------------------------------------------------- properties


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    """tests/test_constrained.py's random clusters."""
    hosts = draw(st.integers(min_value=2, max_value=6))
    capacity = draw(st.integers(min_value=4, max_value=8))
    groups = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "max_impacted_members": st.integers(1, 3),
                    "recovery_time": st.sampled_from([0, 30, 120]),
                    "anti_affinity_group": st.booleans(),
                    "max_instances_per_host": st.integers(0, 2),
                }
            ),
            min_size=0,
            max_size=3,
        )
    )
    layout: dict[str, list[tuple[str, str, int]]] = {}
    membership: dict[str, int | None] = {}
    n = 0
    for h in range(hosts):
        used = 0
        items = []
        for _ in range(draw(st.integers(0, 3))):
            size = draw(st.integers(1, 2))
            if used + size > capacity:
                break
            used += size
            iid = f"vm-{n}"
            n += 1
            choice = draw(st.integers(-1, len(groups) - 1)) if groups else -1
            membership[iid] = choice if choice >= 0 else None
            project = f"p{choice % 2}" if choice >= 0 else draw(st.sampled_from(["p0", "p1"]))
            items.append((iid, project, size))
        layout[f"cmp-{h}"] = items
    managed = draw(st.sampled_from([(), ("p0",), ("p0", "p1")]))
    cap = draw(st.sampled_from([None, 1, 2]))
    return {
        "layout": layout,
        "capacity": capacity,
        "groups": groups,
        "membership": membership,
        "managed": managed,
        "cap": cap,
    }


def cluster_of(spec: dict[str, Any]) -> LoggingContext:
    """The contract driver's context for a layout of :func:`clusters` (or of
    tests/constrained_layouts.py)."""
    projects = {iid: p for items in spec["layout"].values() for iid, p, _ in items}
    return cluster(
        spec["layout"],
        vcpus=spec["capacity"],
        managed=spec["managed"],
        groups=[
            group(f"g{index}", f"p{index % 2}", **rules)
            for index, rules in enumerate(spec["groups"])
        ],
        members=[
            member(iid, projects[iid], f"g{index}")
            for iid, index in spec["membership"].items()
            if index is not None
        ],
        request=request(max_parallel_hosts=spec["cap"]),
    )


def check_cluster_v2(spec: dict[str, Any]) -> None:
    """The session ends DONE, or FAILED before touching a host; the driver
    checked every group rule and the capacity after each step."""
    ctx = cluster_of(spec)
    driver = run(ctx)
    touched = [op for _, op in ctx.submitted if type(op).__name__ in ("DisableHost", "Move")]
    if ctx.session.state == SessionState.MAINTENANCE_FAILED:
        assert ctx.session.reason
        assert not touched, ctx.session.reason
        assert not ctx.notified
    else:
        assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
        assert maintained(ctx) == sorted(spec["layout"])
        assert Counter(h for h, s in ctx.notified if s == "IN_MAINTENANCE") == Counter(
            dict.fromkeys(spec["layout"], 1)
        )
    hosts = len(spec["layout"])
    assert all(count <= hosts for count in driver.moves_of.values())


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(clusters())
@example(ANTI_AFFINE_PAIR_LEFT_ONE_HOST)
@example(ANTI_AFFINE_MEMBER_ON_THE_FULLEST_HOST)
def test_random_clusters_never_break_a_rule_and_always_end(spec: dict[str, Any]) -> None:
    check_cluster_v2(spec)


@pytest.mark.parametrize("spec", ONCE_DEAD_ENDS.values(), ids=ONCE_DEAD_ENDS.keys())
def test_dead_ends_once_found_end_done(spec: dict[str, Any]) -> None:
    check_cluster_v2(spec)


@pytest.mark.parametrize("spec", CHECKED_ON_EVERY_HOST.values(), ids=CHECKED_ON_EVERY_HOST.keys())
def test_the_waves_moves_are_checked_on_every_host(spec: dict[str, Any]) -> None:
    check_cluster_v2(spec)


@pytest.mark.parametrize("spec", MANY_PENDING_DEAD_ENDS.values(), ids=MANY_PENDING_DEAD_ENDS.keys())
def test_the_waves_moves_are_checked_with_many_hosts_pending(spec: dict[str, Any]) -> None:
    check_cluster_v2(spec)


@pytest.mark.no_cover
def test_the_verdicts_kept_change_no_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """The move check keeps the dry run's verdicts per state (in the
    process only): a run that keeps none, as a worker that just started,
    sends the same operations in the same order."""
    from fenix_core import planner

    spec = MANY_PENDING_DEAD_ENDS["anti-affine-room-taken-by-a-small-member-and-13-full-hosts"]

    def operations() -> list[str]:
        ctx = cluster_of(spec)
        run(ctx)
        assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
        return [repr(op) for _, op in ctx.submitted]

    kept = operations()
    real = planner.drain_sequence
    runs: list[bool] = []

    def forgetting(*args: Any, **kwargs: Any) -> Any:
        runs.append(kwargs.pop("verdicts", None) is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(planner, "drain_sequence", forgetting)
    assert operations() == kept
    assert any(runs), "the move check passed its verdicts"


def test_moves_are_checked_while_the_dry_run_covers_the_hosts_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dry run of a move reads every draining and pending host: it runs
    from the first host opened while at most DRY_RUN_HOSTS hosts are
    pending, as the opening's dry run."""
    from fenix_core import planner
    from fenix_core.workflows import constrained

    pending_at_checks: list[int] = []
    real = planner.drains_after

    def counted(placed: Any, draining: Any, loads: Any, *args: Any, **kwargs: Any) -> bool:
        pending_at_checks.append(len(loads))
        return bool(real(placed, draining, loads, *args, **kwargs))

    monkeypatch.setattr(planner, "drains_after", counted)
    hosts = 20
    layout = {f"cmp-{n}": [(f"vm-{n}-{k}", "p0", 1) for k in range(3)] for n in range(hosts - 1)}
    layout[f"cmp-{hosts - 1}"] = []

    def checked_with(dry_run_hosts: int) -> list[int]:
        monkeypatch.setattr(constrained.windows, "DRY_RUN_HOSTS", dry_run_hosts)
        pending_at_checks.clear()
        ctx = cluster(
            layout,
            vcpus=4,
            groups=[group("g0", "p0", max_impacted_members=2, max_instances_per_host=3)],
            members=[member(iid, "p0", "g0") for items in layout.values() for iid, _, _ in items],
        )
        run(ctx)
        assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
        return list(pending_at_checks)

    assert max(checked_with(200)) >= hosts - 3  # from the first hosts opened
    few = checked_with(6)
    assert few, "the last hosts' moves are checked"
    assert max(few) <= 6
