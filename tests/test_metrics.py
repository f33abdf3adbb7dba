"""fenix_core.metrics.EngineCollector on a plain Engine with a simulated
cloud: what a Prometheus scrape of an embedding program shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.metrics import EngineCollector, waiting_reason
from fenix_core.store.schema import OutboxRow, SessionClockRow
from fenix_core.testing import ScriptedManager, SimulatedCloud


def step_until(
    engine: Engine, clock: SimClock, done: Callable[[], bool], max_steps: int = 10_000
) -> None:
    """Step the engine on simulated time, jumping to its next wake when it
    is idle, until ``done()`` (asked before each step) says so."""
    for _ in range(max_steps):
        if done():
            return
        if engine.step() == 0:
            wake = engine.next_wake()
            assert wake is not None, "idle with nothing to wait for"
            clock.advance_to(wake)
    pytest.fail(f"not done after {max_steps} steps")


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed back from the text format."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[Any, float], name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def engine(fenix_cloud: SimulatedCloud, fenix_engine_factory: Any) -> Engine:
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        fenix_cloud.add_host(host, vcpus=8)
    fenix_cloud.add_instance("vm-a1", project_id="pa", host="cmp-0", vcpus=2)
    fenix_cloud.add_instance("vm-a2", project_id="pa", host="cmp-1", vcpus=2)
    engine: Engine = fenix_engine_factory()
    return engine


def test_a_session_seen_through_scrapes(
    engine: Engine, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    idle = samples(registry)
    assert value(idle, "fenix_sessions", state="MAINTENANCE") == 0
    assert value(idle, "fenix_outbox_depth") == 0
    assert value(idle, "fenix_outbox_lag_seconds") == 0

    ScriptedManager(engine, "pa", cloud=fenix_cloud, action="LIVE_MIGRATE")
    sid = engine.create_session({"hosts": ["cmp-0", "cmp-1", "cmp-2"]})
    seen: set[str] = set()

    def observe() -> bool:
        seen.update(
            dict(labels)["state"]
            for (name, labels), n in samples(registry).items()
            if name == "fenix_hosts" and dict(labels)["session_id"] == sid and n > 0
        )
        return engine.get_session(sid).state == "MAINTENANCE_DONE"

    step_until(engine, fenix_clock, observe)
    assert {"PENDING", "DRAINING", "IN_MAINTENANCE", "MAINTAINED"} <= seen, seen

    done = samples(registry)
    assert value(done, "fenix_sessions", state="MAINTENANCE_DONE") == 1
    assert value(done, "fenix_sessions", state="MAINTENANCE") == 0
    # an ended session leaves the per-session gauges
    assert not [k for k in done if k[0] == "fenix_hosts"]
    moves = value(done, "fenix_operations_total", kind="move", status="done")
    assert moves is not None
    assert moves >= 2
    count = value(done, "fenix_operation_duration_seconds_count", kind="move", status="done")
    assert count == moves
    assert value(done, "fenix_outbox_depth") == 0
    # a later scrape does not count the ended session's operations again
    assert value(samples(registry), "fenix_operations_total", kind="move", status="done") == moves


def test_sessions_that_ended_before_the_first_scrape_are_not_read_back(
    engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    ScriptedManager(engine, "pa", cloud=fenix_cloud, action="LIVE_MIGRATE")
    engine.run_until_done(engine.create_session({"hosts": ["cmp-0"]}))
    collector = EngineCollector(engine)
    registry = CollectorRegistry()
    registry.register(collector)
    reads: list[str] = []
    original = engine.list_operations

    def spy(session_id: str) -> Any:
        reads.append(session_id)
        return original(session_id)

    engine.list_operations = spy  # type: ignore[method-assign]
    scrape = samples(registry)
    assert value(scrape, "fenix_sessions", state="MAINTENANCE_DONE") == 1
    assert reads == []


def test_stuck_work_shows_with_its_age(
    engine: Engine, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    """A host that never comes back up, waited for past its deadline
    (wait_and_notify): stuck work of kind host_up, and how long it has been."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    fenix_cloud.host_stays_down("cmp-2")
    sid = engine.create_session(
        {
            "hosts": ["cmp-2"],
            "timeouts": {"host_up": 600},
            "controls": {"escalation": {"host_up": "wait_and_notify"}},
        }
    )
    step_until(engine, fenix_clock, lambda: bool(engine.get_session(sid).stuck))
    view = engine.get_session(sid)
    assert [w.kind for w in view.stuck] == ["host_up"]
    fenix_clock.advance(120)
    scrape = samples(registry)
    assert value(scrape, "fenix_stuck_work", session_id=sid, kind="host_up") == 1
    age = value(scrape, "fenix_stuck_work_oldest_seconds", session_id=sid, kind="host_up")
    expected = (fenix_clock.now() - view.stuck[0].since).total_seconds()
    assert age == expected
    assert age >= 120


def test_outbox_depth_and_lag_of_undelivered_notifications(
    engine: Engine, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    """Notifications a crash left undelivered (marked so by hand here): the
    backlog counts them and the lag is the age of the oldest."""
    assert engine.outbox_backlog() == (0, None)
    ScriptedManager(engine, "pa", cloud=fenix_cloud, action="LIVE_MIGRATE")
    sid = engine.run_until_done(engine.create_session({"hosts": ["cmp-0"]})).session_id
    with engine.transaction() as orm:
        rows = orm.scalars(
            select(OutboxRow).where(OutboxRow.session_id == sid).order_by(OutboxRow.seq)
        ).all()
        # Delivered is at or below the session's watermark: the last two are not.
        clock_row = orm.get(SessionClockRow, sid)
        assert clock_row is not None
        clock_row.delivered_seq = rows[-3].seq
        written = min(r.created_at for r in rows[-2:])
    assert engine.outbox_backlog() == (2, written)
    fenix_clock.advance(300)
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    scrape = samples(registry)
    assert value(scrape, "fenix_outbox_depth") == 2
    lag = value(scrape, "fenix_outbox_lag_seconds")
    assert lag == (fenix_clock.now() - written).total_seconds()
    assert lag >= 300


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("paused: by the admin", "paused"),
        ("gate ceph before cmp-1: checking", "gate"),
        ("cmp-1 waits: outside the maintenance window", "admission"),
        ("awaiting approval of plan 0123456789abcdef", "approval"),
    ],
)
def test_waiting_reason_labels(text: str, reason: str) -> None:
    assert waiting_reason(text) == reason
