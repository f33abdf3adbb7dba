"""Reply deadlines and reply policies of the v2 rolling workflow, on the
contract driver: today's expectations (tests/test_rolling.py: a silent
manager fails at its deadline; reply_policy default acts for it; late
replies are refused) hold without an engine."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import attrs
from contract_driver import Driver, LoggingContext, start_time
from test_rolling_v2 import fleet

from fenix_core import SessionRequest
from fenix_core.states import InstanceState, SessionState
from fenix_core.workflows import RollingWorkflow

LAYOUT = {"c1": 4, "c2": 4, "c3": 4}
VMS = {"a": ("pa", "c1", 1), "b": ("pb", "c2", 1)}


def silent_on(project: str, *states: str):  # type: ignore[no-untyped-def]
    def answer(p: str, state: str, ids: tuple[str, ...]) -> tuple[str, Mapping[str, str]] | None:
        if p == project and (not states or state in states):
            return None
        return f"ACK_{state}", {}

    return answer


def drive(ctx: LoggingContext, **kwargs: object) -> Driver:
    driver = Driver(ctx, RollingWorkflow(), **kwargs)  # type: ignore[arg-type]
    driver.run()
    return driver


def test_silent_manager_fails_at_its_deadline() -> None:
    ctx = fleet(LAYOUT, VMS, request=SessionRequest(reply_windows={"MAINTENANCE": 120}))
    driver = drive(ctx, answer=silent_on("pb", "MAINTENANCE"))
    deadline = start_time() + timedelta(seconds=120)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == f"project pb did not answer MAINTENANCE by {deadline.isoformat()}"
    assert ctx.now == deadline
    assert driver.moves == []
    assert ctx.projects.awaiting_count() == 0


def test_reply_policy_default_acts_for_a_silent_manager() -> None:
    ctx = fleet(LAYOUT, VMS, request=SessionRequest(reply_policy="default"))
    driver = drive(ctx, answer=silent_on("pa"))
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert next(s for p, s in ctx.log if p == "pa") == "MAINTENANCE"
    # Its instance was moved by default (live), once: a spare host exists.
    assert [m for m in driver.moves if m[0] == "a"] == [("a", "c3", frozenset())]
    assert ctx.instances.get("a").action == "LIVE_MIGRATE"  # type: ignore[union-attr]
    assert ctx.projects.get("pa").state == "DEFAULT_MAINTENANCE_COMPLETE"  # type: ignore[union-attr]


def test_late_replies_after_the_workflow_acted_by_default_are_refused() -> None:
    ctx = fleet(LAYOUT, VMS, request=SessionRequest(reply_policy="default"))
    driver = drive(ctx, delays={"pa": 900})  # the default window is 600 s
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    asked = [s for p, s in ctx.log if p == "pa" and "ACTION_DONE" not in s]
    # c3 is empty and maintained first: c1 is PLANNED.
    assert asked == ["MAINTENANCE", "PLANNED_MAINTENANCE", "MAINTENANCE_COMPLETE"]
    # Each arrived after its deadline (the last one after the session ended).
    assert driver.late == [("pa", s) for s in asked[:2]]
    assert [payload[:2] for _, _, payload in driver.later] == [("pa", asked[2])]


def test_a_project_asked_again_has_a_deadline_of_its_own() -> None:
    # pa answers each question after 500 s of a 600 s window; it is asked
    # PLANNED_MAINTENANCE for c1 and for c2, the second time before the
    # first deadline would have passed: every answer is in time.
    windows = dict.fromkeys(("MAINTENANCE", "PLANNED_MAINTENANCE", "MAINTENANCE_COMPLETE"), 600)
    ctx = fleet(
        {"c1": 4, "c2": 4, "c3": 4},
        {"a": ("pa", "c1", 1), "b": ("pa", "c2", 1)},
        request=SessionRequest(reply_windows=windows),
    )
    driver = drive(ctx, delays={"pa": 500})
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert driver.late == []
    assert [s for p, s in ctx.log if p == "pa" and s.endswith("_MAINTENANCE")] == [
        "PLANNED_MAINTENANCE",
        "PLANNED_MAINTENANCE",
    ]
    assert not any(n.startswith("reply_deadline:") for n in ctx.timers)


def test_nack_under_the_default_policy_still_moves_and_the_deadline_goes() -> None:
    def nack(p: str, state: str, ids: tuple[str, ...]) -> tuple[str, Mapping[str, str]]:
        return (f"NACK_{state}" if state.endswith("PREPARE_MAINTENANCE") else f"ACK_{state}"), {}

    ctx = fleet(LAYOUT, VMS, request=SessionRequest(reply_policy="default"))
    drive(ctx, answer=nack)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert ctx.instances.get("a").state == InstanceState.DONE  # type: ignore[union-attr]
    assert not any(n.startswith("reply_deadline:") for n in ctx.timers)


def test_questions_carry_the_request_metadata() -> None:
    ctx = fleet(LAYOUT, VMS, request=SessionRequest(metadata={"ticket": "CHG-1"}))
    drive(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert ctx.questions
    assert all(meta == {"ticket": "CHG-1"} for _, _, _, meta in ctx.questions)


def test_drain_questions_list_the_cloud_drivers_actions_and_defaults_keep_to_them() -> None:
    # A cloud that can only evict (Kubernetes) or re-create: never a live migration.
    ctx = fleet(LAYOUT, VMS, request=SessionRequest(reply_policy="default"))
    ctx._session = attrs.evolve(ctx.session, allowed_actions=("EVICT", "OWN_ACTION"))
    driver = drive(ctx, answer=silent_on("pa"))
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    drains = [q for q in ctx.questions if q[1] in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")]
    assert drains
    assert all(allowed == ("EVICT", "OWN_ACTION") for _, _, allowed, _ in drains)
    # pa was silent: its instance got the default, the driver's first move.
    assert ctx.instances.get("a").action == "EVICT"  # type: ignore[union-attr]
    assert {m[0] for m in driver.moves} == {"a", "b"}
