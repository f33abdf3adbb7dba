"""A session whose workflow no plug-in of this engine provides (docs/plugins.md,
"Registering plug-ins"): the stepper lets it go once, unwritten, releases its
lease and never claims or loads it again while the engine lives; the other
sessions go on."""

from __future__ import annotations

from datetime import datetime

from test_stepper import T0, FakeLeases, FakePoller, FakeRunner, FakeStore, Stored

from fenix_core.clock import SimClock
from fenix_core.core.outbox import Outbox
from fenix_core.core.ports import WorkingSetLike
from fenix_core.core.stepper import StepFrame, StepOutcome, Stepper, Unrunnable


class ReleasingLeases(FakeLeases):
    def release(self, session_id: str) -> None:
        self.calls.append(f"release {session_id}")
        self.store.rows[session_id].owner = None


class CannotRun(FakeRunner):
    def run(self, working_set: WorkingSetLike, now: datetime, frame: StepFrame) -> StepOutcome:
        if working_set.session_id == "lost":
            raise Unrunnable("uses a workflow that no plug-in of this engine provides: 'x'")
        return super().run(working_set, now, frame)


def test_a_session_this_engine_cannot_run_is_let_go_once_and_left_alone() -> None:
    clock = SimClock(start=T0)
    store = FakeStore()
    store.rows = {"lost": Stored(), "s1": Stored()}
    leases = ReleasingLeases(store)
    runner = CannotRun(clock)
    stepper = Stepper(
        store, leases, runner, Outbox(lambda r: None), clock=clock, lease_clock=clock,
        lease_seconds=30, poller=FakePoller(store), poll_seconds=10, leftovers=store,
    )  # fmt: skip
    stepper.wake("lost")
    for _ in range(10):
        stepper.step()
        clock.advance(60)
    assert runner.ran.count("s1") == runner.finish_after  # the other one went on
    assert store.calls.count("load lost") == 1
    assert [c for c in leases.calls if "lost" in c] == ["claim lost,s1", "release lost"]
    assert store.rows["lost"].owner is None  # free for an engine that can run it
    assert store.rows["lost"].version == 0  # nothing written
    assert "no plug-in of this engine provides" in str(stepper.parked("lost"))
    assert stepper.held("lost") is None
    stepper.wake("lost")  # woken again (a reply): still left alone
    stepper.step()
    assert store.calls.count("load lost") == 1
