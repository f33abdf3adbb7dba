"""Plug-in resolution and the workflow / action contracts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import fill

from fenix_core import ActionSpec, Engine, SessionRequest, hookimpl
from fenix_core.contract import SessionContext, Workflow
from fenix_core.errors import Conflict, FenixError, PluginError
from fenix_core.testing import SimClock, SimulatedCloud, TimedAction
from fenix_core.workflows.v2.rolling import RollingWorkflow

LAYOUT = {"cmp-0": [("vm-1", "p1", 2)], "cmp-1": []}


class Careful(RollingWorkflow):
    """The rolling workflow under another name, counting how it is started."""

    name = "careful"
    starts = 0

    def start(self, ctx: SessionContext) -> None:
        type(self).starts += 1
        super().start(ctx)


class CarefulPlugin:
    @hookimpl
    def fenix_workflows(self) -> Mapping[str, type[Workflow]]:
        return {"careful": Careful}


def test_two_cloud_drivers_are_an_error_not_a_silent_choice(fenix_clock: SimClock) -> None:
    with pytest.raises(PluginError) as info:
        Engine(clock=fenix_clock, plugins=[SimulatedCloud(), SimulatedCloud()])
    assert "more than one plug-in provides a cloud driver" in str(info.value)


def test_a_plugin_workflow_is_started_once_and_runs(
    fenix_cloud: SimulatedCloud, fenix_engine_factory
) -> None:
    fill(fenix_cloud, LAYOUT)
    Careful.starts = 0
    engine = fenix_engine_factory(CarefulPlugin())
    view = engine.run_until_done(engine.create_session(SessionRequest(workflow="careful")))
    assert view.state == "MAINTENANCE_DONE"
    assert view.workflow == "careful"
    assert Careful.starts == 1


def test_a_session_whose_workflow_is_missing_waits_for_an_engine_that_has_it(
    tmp_path: Path, fenix_clock: SimClock
) -> None:
    cloud = SimulatedCloud()
    fill(cloud, LAYOUT)
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    with Engine(url, clock=fenix_clock, plugins=[cloud, CarefulPlugin()]) as first:
        careful = first.create_session(SessionRequest(hosts=["cmp-1"], workflow="careful"))
    with Engine(url, clock=fenix_clock, plugins=[cloud]) as second:
        # Another session on this engine is not held up by the one it cannot run.
        other = second.create_session(SessionRequest(hosts=["cmp-0"]))
        assert second.run_until_done(other).state == "MAINTENANCE_DONE"
        with pytest.raises(FenixError) as info:
            second.run_until_done(careful)
        assert "uses a workflow that no plug-in of this engine provides" in str(info.value)
        assert second.get_session(careful).state == "MAINTENANCE"
        assert second.next_wake() is None
    with Engine(url, clock=fenix_clock, plugins=[cloud, CarefulPlugin()]) as third:
        assert third.run_until_done(careful).state == "MAINTENANCE_DONE"


def test_a_rejected_update_leaves_nothing_loaded(fenix_cloud, fenix_engine_factory) -> None:
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    sid = engine.create_session(SessionRequest())
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    with pytest.raises(Conflict):
        engine.update_session(sid, retry=True)
    assert sid not in engine.held_sessions()
    engine.delete_session(sid)


def test_timed_action_with_a_state_file_knows_runs_started_elsewhere(
    tmp_path: Path, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    fill(fenix_cloud, LAYOUT)
    state = tmp_path / "upgrade.json"
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    first_action = TimedAction("upgrade", 600, state_path=state)
    with Engine(url, clock=fenix_clock, plugins=[fenix_cloud, first_action]) as first:
        sid = first.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
        first.run_until_idle()  # the empty host's upgrade has started
    assert first_action.hosts == ["cmp-1"]
    # "Another process": a new action object on the same file, a new engine.
    second_action = TimedAction("upgrade", 600, state_path=state)
    assert second_action.runs == first_action.runs
    with Engine(url, clock=fenix_clock, plugins=[fenix_cloud, second_action]) as second:
        view = second.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert second_action.hosts == ["cmp-1", "cmp-0"]  # cmp-1 did not run twice


def test_timed_action_without_a_state_file_says_why_it_cannot_resume(
    tmp_path: Path, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    fill(fenix_cloud, LAYOUT)
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    with Engine(url, clock=fenix_clock, plugins=[fenix_cloud, TimedAction("upgrade", 600)]) as e:
        sid = e.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
        e.run_until_idle()
    with Engine(url, clock=fenix_clock, plugins=[fenix_cloud, TimedAction("upgrade", 600)]) as e:
        view = e.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert "was not started by this TimedAction (another process? give it a state_path)" in (
        view.reason or ""
    )


class HalfDone(Workflow):
    name = "half-done"

    def advance(self) -> None:
        """No start(): the engine could never begin a session with it."""


class NotAWorkflow:
    name = "nope"


@pytest.mark.parametrize(
    ("provided", "message"),
    [
        (HalfDone, "workflow does not implement start"),
        (NotAWorkflow, "a workflow must be a subclass of Workflow"),
    ],
)
def test_unusable_workflow_plugins_are_refused_when_the_engine_starts(
    fenix_clock: SimClock, provided: type, message: str
) -> None:
    class Provider:
        @hookimpl
        def fenix_workflows(self) -> Mapping[str, type]:
            return {provided.name: provided}

    with pytest.raises(PluginError) as info:
        Engine(clock=fenix_clock, plugins=[SimulatedCloud(), Provider()])
    assert message in str(info.value)


class MisspeltHook:
    """``fenix_workflow`` for ``fenix_workflows``: pluggy would never call it."""

    @hookimpl
    def fenix_workflow(self) -> Mapping[str, type[Workflow]]:
        return {"careful": Careful}


def test_a_misspelt_hook_fails_when_the_engine_starts(fenix_clock: SimClock) -> None:
    with pytest.raises(PluginError) as info:
        Engine(clock=fenix_clock, plugins=[SimulatedCloud(), MisspeltHook()])
    assert info.value.plugin == "MisspeltHook"
    assert "'fenix_workflow'" in str(info.value)
    assert "fenix_workflows" in str(info.value)  # the hooks it could have meant


def test_a_hook_with_a_wrong_argument_fails_when_the_engine_starts(
    fenix_clock: SimClock,
) -> None:
    class WrongArgument:
        @hookimpl
        def fenix_actions(self, clok: object) -> list[object]:
            return []

    with pytest.raises(PluginError) as info:
        Engine(clock=fenix_clock, plugins=[SimulatedCloud(), WrongArgument()])
    assert info.value.plugin == "WrongArgument"
    assert "clok" in str(info.value)
