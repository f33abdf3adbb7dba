"""Steering on the new core (Engine): the PreferNoSchedule taint
fenix-core/queued on the nodes a session still has to maintain, set once for
all when the session starts, taken off one node as that node leaves the
queue (that node's requests only: no listing of every node per change), and
off every node when the session ends."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fenix_core import ActionSpec, Engine, SessionRequest, hookimpl
from fenix_core.clock import Clock, SimClock
from fenix_core.hookspecs import CloudDriver
from fenix_core.workflows.rolling import RollingWorkflow
from fenix_core_k8s import KubernetesCloud
from fenix_core_k8s.driver import KubernetesDriver
from fenix_core_k8s.testing import FakeApiServer, NodeReboot

from .test_k8s_steering import NODES, queued_taints, six_nodes_six_pods

REBOOT = [ActionSpec("reboot", "host")]


Call = tuple[str, object, list[tuple[str, str]]]


def record(engine: Engine, fake: FakeApiServer) -> list[Call]:
    """The driver's steering calls from now on, each with the requests it sent."""
    driver: Any = engine.plugins.driver
    calls: list[Call] = []
    mark, one = driver.mark_queued, driver.host_queued

    def sent(call: Callable[[], None]) -> list[tuple[str, str]]:
        before = len(fake.app.requests)
        call()
        return fake.app.requests[before:]

    def mark_queued(session_id: str, hosts: Sequence[str]) -> None:
        calls.append(("mark_queued", sorted(hosts), sent(lambda: mark(session_id, hosts))))

    def host_queued(session_id: str, host: str, queued: bool) -> None:
        calls.append(("host_queued", (host, queued), sent(lambda: one(session_id, host, queued))))

    driver.mark_queued, driver.host_queued = mark_queued, host_queued
    return calls


@pytest.fixture
def core(tmp_path: Path, fake: FakeApiServer, fenix_clock: SimClock) -> Iterator[Engine]:
    engine = Engine(
        f"sqlite:///{tmp_path / 'fenix.db'}",
        clock=fenix_clock,
        plugins=[
            KubernetesCloud(api_client=fake.api_client()),
            NodeReboot(fake.cluster, seconds=60),
        ],
        workflows={"rolling": RollingWorkflow},
    )
    yield engine
    engine.close()


@pytest.mark.no_cover
def test_a_node_leaving_the_queue_is_untainted_alone(
    fake: FakeApiServer, fenix_clock: SimClock, core: Engine
) -> None:
    engine = core
    calls = record(engine, fake)
    cluster = fake.cluster
    six_nodes_six_pods(cluster)
    sid = engine.create_session(SessionRequest(hosts=NODES, actions=REBOOT))
    while True:
        engine.run_until_idle()
        view = engine.get_session(sid)
        queued = {h.name for h in view.hosts if h.state == "PENDING"}
        taints = queued_taints(cluster)
        if view.state not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED"):
            # Exactly the nodes still queued carry this session's taint.
            assert taints == {n: [sid] for n in queued}, (view.hosts, taints)
        wake = engine.next_wake()
        if wake is None:
            break
        fenix_clock.advance_to(max(fenix_clock.now(), wake))
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert queued_taints(cluster) == {}
    first, *each, last = calls
    assert first[:2] == ("mark_queued", sorted(NODES))
    assert last[:2] == ("mark_queued", [])
    assert sorted(c[1] for c in each) == [(n, False) for n in NODES]  # type: ignore[type-var]
    for _, (node, _), sent in each:  # type: ignore[misc]
        # That node read and patched, nothing else (no listing of the nodes).
        assert {path for _, path in sent} == {f"/api/v1/nodes/{node}"}, sent
        assert [method for method, _ in sent] == ["GET", "PATCH"]


class _WholeSets(KubernetesDriver):
    """A driver that only takes the whole set (HostQueue, not HostQueueChanges)."""

    host_queued = None  # type: ignore[assignment]
    sets: ClassVar[list[list[str]]] = []

    def mark_queued(self, session_id: str, hosts: Sequence[str]) -> None:
        self.sets.append(sorted(hosts))
        super().mark_queued(session_id, hosts)


class WholeSetsCloud(KubernetesCloud):
    @hookimpl
    def fenix_cloud_driver(self, clock: Clock) -> CloudDriver:
        self.driver = _WholeSets(self.api_client, clock=clock, **self.options)
        return self.driver


def test_a_driver_without_single_changes_gets_the_whole_set(
    fake: FakeApiServer, fenix_clock: SimClock, tmp_path: Path
) -> None:
    cluster = fake.cluster
    six_nodes_six_pods(cluster)
    _WholeSets.sets = []
    engine = Engine(
        f"sqlite:///{tmp_path / 'fenix.db'}",
        clock=fenix_clock,
        plugins=[WholeSetsCloud(api_client=fake.api_client()), NodeReboot(cluster, seconds=60)],
        workflows={"rolling": RollingWorkflow},
    )
    try:
        sid = engine.create_session(SessionRequest(hosts=NODES, actions=REBOOT))
        view = engine.run_until_done(sid)
        assert view.state == "MAINTENANCE_DONE", view.reason
    finally:
        engine.close()
    # The whole set, one node fewer each time a node's maintenance begins,
    # then empty when the session ends.
    sets = _WholeSets.sets
    assert sets[0] == NODES
    assert [len(s) for s in sets] == [6, 5, 4, 3, 2, 1, 0, 0]
    assert all(set(later) < set(before) for before, later in itertools.pairwise(sets[:7]))
    assert queued_taints(cluster) == {}
