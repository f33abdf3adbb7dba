"""A move's status from its start (MoveStartStatus): SimulatedCloud's
``start_move_status`` answers exactly what ``start_move`` and then
``poll_move`` answer, and leaves the cloud as they leave it; the operation
runner uses it when a driver has it and polls at once when not."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fenix_core.clock import SimClock
from fenix_core.errors import CloudError, InvalidInput
from fenix_core.hookspecs import MoveStartStatus
from fenix_core.model import ActionSpec, OperationStatus, SessionRequest
from fenix_core.operations import OperationRunner
from fenix_core.plugins import Plugins
from fenix_core.testing import SimulatedCloud

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOSTS = ["h0", "h1", "h2"]
INSTANCES = [f"vm-{n}" for n in range(5)]
KEYS = [f"key-{n}" for n in range(6)]


def a_cloud(clock: SimClock, **kwargs: Any) -> SimulatedCloud:
    # Live migrations end at once (their poll settles them), cold ones take 30 s.
    cloud = SimulatedCloud(migration_seconds=30, live_migration_seconds=0, clock=clock, **kwargs)
    for name in HOSTS:
        cloud.add_host(name, vcpus=6)
    for n, instance_id in enumerate(INSTANCES):
        cloud.add_instance(instance_id, "p", HOSTS[n % 2], vcpus=1 + n % 3)
    return cloud


def answer(call: Any) -> Any:
    try:
        return call()
    except (CloudError, InvalidInput) as exc:
        return (type(exc).__name__, str(exc))


class TwinClouds(RuleBasedStateMachine):
    """Two clouds on one clock, asked the same: one starts with
    ``start_move`` and polls at once, the other with ``start_move_status``."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = SimClock(start=T0)
        self.polled = a_cloud(self.clock)
        self.told = a_cloud(self.clock)

    def both(self, name: str, *args: Any) -> None:
        for cloud in (self.polled, self.told):
            with contextlib.suppress(CloudError, InvalidInput):
                getattr(cloud, name)(*args)

    @rule(
        instance_id=st.sampled_from(INSTANCES),
        action=st.sampled_from(["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]),
        to=st.none() | st.sampled_from(HOSTS),
        key=st.sampled_from(KEYS),
    )
    def start(self, instance_id: str, action: str, to: str | None, key: str) -> None:
        def polled() -> tuple[str, OperationStatus]:
            handle = self.polled.start_move(instance_id, action, to, key)
            return handle, self.polled.poll_move(handle)

        told = answer(lambda: self.told.start_move_status(instance_id, action, to, key))
        assert told == answer(polled)

    @rule(instance_id=st.sampled_from(INSTANCES), stall=st.booleans())
    def inject(self, instance_id: str, stall: bool) -> None:
        if stall:
            self.both("stall_next_migration", instance_id, 45)
        else:
            self.both("fail_next_migration", instance_id)

    @rule(instance_id=st.sampled_from(INSTANCES))
    def remove_instance(self, instance_id: str) -> None:
        self.both("remove_instance", instance_id)

    @rule(host=st.sampled_from(HOSTS), enable=st.booleans())
    def toggle(self, host: str, enable: bool) -> None:
        if enable:
            self.both("enable_host", host)
        else:
            self.both("disable_host", host, "test")

    @rule(seconds=st.sampled_from([0, 10, 30, 45]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def the_clouds_are_the_same(self) -> None:
        polled, told = self.polled, self.told
        assert told.events == polled.events
        assert told._migrations == polled._migrations
        for host in HOSTS:
            assert told.free_vcpus(host) == polled.free_vcpus(host)
        for handle in polled._migrations:
            assert told.poll_move(handle) == polled.poll_move(handle)


TestTwinClouds = TwinClouds.TestCase
TestTwinClouds.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


def test_the_status_is_the_one_a_poll_gives_at_once() -> None:
    clock = SimClock(start=T0)
    cloud = a_cloud(clock)
    handle, status = cloud.start_move_status("vm-0", "MIGRATE", "h2", "k")
    assert status == OperationStatus.running(30.0, "MIGRATE h0 -> h2 running")
    assert status == cloud.poll_move(handle)
    assert cloud.start_move_status("vm-0", "MIGRATE", "h2", "k") == (handle, status)  # same key
    _, status = cloud.start_move_status("vm-1", "LIVE_MIGRATE", "h2", "k2")
    assert status == OperationStatus.done("h2")  # no time to take: ended at once
    assert cloud.host_of("vm-1") == "h2"


class LatePoll(SimulatedCloud):
    """A subclass with its own poll_move."""

    def poll_move(self, handle: str) -> OperationStatus:
        status = super().poll_move(handle)
        return OperationStatus("running", detail="mine", retry_after=status.retry_after)


def test_a_subclass_poll_or_a_state_file_answers_the_status(tmp_path: Path) -> None:
    clock = SimClock(start=T0)
    cloud = LatePoll(migration_seconds=30, clock=clock)
    cloud.add_host("h0", vcpus=4)
    cloud.add_host("h1", vcpus=4)
    cloud.add_instance("vm", "p", "h0")
    assert cloud.start_move_status("vm", "MIGRATE", "h1", "k")[1].detail == "mine"
    filed = SimulatedCloud(migration_seconds=30, clock=clock, state_path=tmp_path / "c.json")
    filed.add_host("h0", vcpus=4)
    filed.add_host("h1", vcpus=4)
    filed.add_instance("vm", "p", "h0")
    handle, status = filed.start_move_status("vm", "MIGRATE", "h1", "k")
    assert status == filed.poll_move(handle)
    assert status.state == "running"


class Driver:
    """A cloud seen through the runner: what it was asked."""

    def __init__(self, cloud: SimulatedCloud, *, tells: bool) -> None:
        self.cloud = cloud
        self.asked: list[str] = []
        if not tells:
            self.start_move_status = None  # type: ignore[method-assign,assignment]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cloud, name)

    def start_move(self, *args: Any) -> str:
        self.asked.append("start_move")
        return self.cloud.start_move(*args)

    def poll_move(self, handle: str) -> OperationStatus:
        self.asked.append("poll_move")
        return self.cloud.poll_move(handle)

    def start_move_status(self, *args: Any) -> tuple[str, OperationStatus]:
        self.asked.append("start_move_status")
        return self.cloud.start_move_status(*args)


class Row:
    """What OperationRunner reads and writes of an operation."""

    def __init__(self, key: str) -> None:
        self.session_id, self.key, self.kind, self.host = "s", key, "move", None
        self.instance_id, self.started_at, self.detail = "vm-0", None, None
        self.handle: str | None = None
        self.params: dict[str, Any] = {"action": "MIGRATE", "target": "h2"}
        self.created_at, self.deadline = T0, None


def test_the_runner_takes_the_status_from_the_start_when_the_driver_gives_it() -> None:
    statuses = {}
    for tells in (True, False):
        clock = SimClock(start=T0)
        driver = Driver(a_cloud(clock), tells=tells)
        assert isinstance(cast(object, driver), MoveStartStatus)  # (also when it is None)
        plugins = Plugins([], clock, load_entry_points=False)
        plugins.driver = cast(Any, driver)
        row = Row("k")
        request = SessionRequest(actions=[ActionSpec("upgrade", "host")])
        statuses[tells] = OperationRunner(plugins).start(row, request, T0)  # type: ignore[arg-type]
        assert row.handle == "migration-1"
        assert driver.asked == (["start_move_status"] if tells else ["start_move", "poll_move"])
    assert (
        statuses[True]
        == statuses[False]
        == OperationStatus.running(30.0, "MIGRATE h0 -> h2 running")
    )
