"""``controls.escalation`` "wait_and_notify" under Engine (issue 18): work
past its deadline is followed on with a new deadline, the admin is told each
time, and the workflow never sees it end (today's engine: SessionControls.stuck
and test_lifecycle_controls.py's thirty-day wait)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, fill

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import Clock, SimClock
from fenix_core.hookspecs import Action, ActionContext, hookimpl
from fenix_core.model import OperationStatus
from fenix_core.testing import SimulatedCloud
from fenix_core.workflows.rolling import RollingWorkflow

DAY = 86400


class Firmware:
    """A host action that takes ``days`` and says to look again in an hour."""

    def __init__(self, days: float) -> None:
        self.name = "firmware"
        self.seconds = days * DAY
        self.polls = 0
        self.starts = 0
        self.started: dict[str, datetime] = {}

    @hookimpl
    def fenix_actions(self, clock: Clock) -> list[Action]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        self.starts += 1
        self.started.setdefault(context.key, context.now)
        return self.poll(context)

    def poll(self, context: ActionContext) -> OperationStatus:
        self.polls += 1
        if context.now >= self.started[context.key] + timedelta(seconds=self.seconds):
            return OperationStatus.done(context.host)
        return OperationStatus.running(retry_after=3600, detail="flashing")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    made: list[tuple[Engine, Recorder]] = []

    def go(policy: str | None, days: float = 3.5) -> tuple[Any, Recorder, Firmware, timedelta]:
        clock = SimClock()
        cloud = SimulatedCloud(clock=clock)
        fill(cloud, {"cmp-0": [], "cmp-1": []})
        firmware = Firmware(days)
        engine = Engine(
            f"sqlite:///{tmp_path / 'fenix.db'}",
            clock=clock,
            plugins=[cloud, firmware],
            workflows={"rolling": RollingWorkflow},
        )
        recorder = Recorder(engine)  # type: ignore[arg-type]
        made.append((engine, recorder))
        sid = engine.create_session(
            SessionRequest(
                hosts=["cmp-0"],
                actions=[ActionSpec("firmware", "host")],
                timeouts={"action": DAY},
                controls={"escalation": {"action": policy} if policy else {}},
            )
        )
        start = clock.now()
        view = engine.run_until_done(sid)
        return view, recorder, firmware, clock.now() - start

    yield go
    for engine, recorder in made:
        recorder.close()
        engine.close()


def stuck_notices(recorder: Recorder) -> list[str]:
    return [
        str(p["reason"])
        for p in recorder.of("maintenance_session")
        if "is stuck" in str(p.get("reason"))
    ]


def test_wait_and_notify_renews_the_deadline_and_tells_the_admin_each_time(run: Any) -> None:
    view, recorder, firmware, waited = run("wait_and_notify")
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.host("cmp-0").state == "MAINTAINED"
    assert timedelta(days=3.5) <= waited <= timedelta(days=3.5, hours=2)
    notices = stuck_notices(recorder)
    assert len(notices) == 3  # a day, two days, three days: then it is done
    assert notices[0] == (
        f"action 'firmware' on cmp-0 is stuck: timed out after {DAY} s (flashing); still waiting"
    )
    assert firmware.starts == 1  # followed on, never started again
    assert firmware.polls <= 3.5 * 24 + 6  # about one poll an hour, as the plug-in asked


@pytest.mark.parametrize("policy", [None, "fail"])
def test_without_wait_and_notify_the_deadline_ends_the_work(run: Any, policy: str | None) -> None:
    view, recorder, _firmware, waited = run(policy)
    assert view.state == "MAINTENANCE_FAILED"
    assert "firmware" in str(view.reason)
    assert waited < timedelta(days=1, hours=2)
    assert not any(n.endswith("still waiting") for n in stuck_notices(recorder))


def test_work_that_ends_before_its_deadline_is_not_stuck(run: Any) -> None:
    view, recorder, _firmware, _ = run("wait_and_notify", days=0.5)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert stuck_notices(recorder) == []
