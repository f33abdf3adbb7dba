"""SimulatedCloud answers from indexes (instances per host, used and incoming
vcpus, a heap of migration ends, key -> move, a heap of targets by free vcpus).

The property test drives random sequences of every operation of the cloud and
after each one compares every indexed answer with a brute-force recomputation
from the cloud's raw state (the dicts it saves to ``state_path``)."""

from __future__ import annotations

import contextlib
import gc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fenix_core.clock import SimClock
from fenix_core.errors import CloudError, InvalidInput
from fenix_core.testing import SimulatedCloud
from fenix_core.testing.cloud import _descending

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOSTS = [f"h{n}" for n in range(5)]
INSTANCES = [f"vm-{n}" for n in range(8)]
KEYS = [f"key-{n}" for n in range(6)]


def brute_free(cloud: SimulatedCloud, host: str) -> int:
    """free_vcpus as the cloud computed it before it had indexes."""
    instances, migrations = cloud._instances, cloud._migrations
    used = sum(i["vcpus"] for i in instances.values() if i["host"] == host)
    incoming = sum(
        instances[m["instance_id"]]["vcpus"]
        for m in migrations.values()
        if m["state"] == "running" and m["target"] == host and m["instance_id"] in instances
    )
    return int(cloud._hosts[host]["vcpus"]) - used - incoming


def brute_pick(cloud: SimulatedCloud, vcpus: int, exclude: str) -> str | None:
    fitting = [
        (brute_free(cloud, name), name)
        for name, h in cloud._hosts.items()
        if name != exclude and h["enabled"] and h["type"] == "compute"
    ]
    fitting = [c for c in fitting if c[0] >= vcpus]
    return max(fitting)[1] if fitting else None


class IndexedCloudMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = SimClock(start=T0)
        self.cloud = SimulatedCloud(
            migration_seconds=30, live_migration_seconds=20, clock=self.clock
        )
        for name in HOSTS[:3]:
            self.cloud.add_host(name, vcpus=8)
        for n, instance_id in enumerate(INSTANCES[:6]):
            self.cloud.add_instance(instance_id, "p", HOSTS[n % 2], vcpus=n % 3)

    def _try(self, call: Any, *args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(InvalidInput, CloudError):
            call(*args, **kwargs)

    @rule(
        name=st.sampled_from(HOSTS),
        type=st.sampled_from(["compute", "compute", "controller"]),
        vcpus=st.integers(0, 8),
        enabled=st.booleans(),
    )
    def add_host(self, name: str, type: str, vcpus: int, enabled: bool) -> None:
        self._try(self.cloud.add_host, name, type=type, vcpus=vcpus, enabled=enabled)

    @rule(name=st.sampled_from(HOSTS), evacuate_to=st.none() | st.sampled_from(HOSTS))
    def remove_host(self, name: str, evacuate_to: str | None) -> None:
        self._try(self.cloud.remove_host, name, evacuate_to=evacuate_to)

    @rule(
        instance_id=st.sampled_from(INSTANCES),
        host=st.sampled_from(HOSTS),
        vcpus=st.integers(0, 3),
        live=st.booleans(),
    )
    def add_instance(self, instance_id: str, host: str, vcpus: int, live: bool) -> None:
        self._try(
            self.cloud.add_instance, instance_id, "p", host, vcpus=vcpus, live_migratable=live
        )

    @rule(instance_id=st.sampled_from(INSTANCES))
    def remove_instance(self, instance_id: str) -> None:
        self._try(self.cloud.remove_instance, instance_id)

    @rule(instance_id=st.sampled_from(INSTANCES), host=st.none() | st.sampled_from(HOSTS))
    def relocate(self, instance_id: str, host: str | None) -> None:
        self._try(self.cloud.relocate, instance_id, host)

    @rule(
        instance_id=st.sampled_from(INSTANCES),
        action=st.sampled_from(["MIGRATE", "MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]),
        to=st.none() | st.sampled_from(HOSTS),
        key=st.sampled_from(KEYS),
    )
    def start_move(self, instance_id: str, action: str, to: str | None, key: str) -> None:
        known = self.cloud.find_move(key)
        try:
            handle = self.cloud.start_move(instance_id, action, to, key)
        except (InvalidInput, CloudError):
            assert known is None  # a key already used answers with its move, never refuses
            return
        assert known in (None, handle)

    @rule(instance_id=st.sampled_from(INSTANCES), stall=st.booleans())
    def inject(self, instance_id: str, stall: bool) -> None:
        if stall:
            self.cloud.stall_next_migration(instance_id, 45)
        else:
            self.cloud.fail_next_migration(instance_id)

    @rule(host=st.sampled_from(HOSTS), enable=st.booleans())
    def toggle(self, host: str, enable: bool) -> None:
        if enable:
            self._try(self.cloud.enable_host, host)
        else:
            self._try(self.cloud.disable_host, host, "test")

    @rule(seconds=st.integers(0, 40))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def indexed_answers_match_a_brute_force_recomputation(self) -> None:
        cloud = self.cloud
        everything = cloud.list_instances()  # settles what is due first
        instances = cloud._instances
        assert [i.instance_id for i in everything] == sorted(instances)
        for host in cloud._hosts:
            assert cloud.free_vcpus(host) == brute_free(cloud, host)
            assert cloud.instances_on(host) == sorted(
                i for i, d in instances.items() if d["host"] == host
            )
            for vcpus in range(4):
                assert cloud._pick_target(vcpus, exclude=host) == brute_pick(cloud, vcpus, host)
        assert cloud._pick_target(0, exclude="") == brute_pick(cloud, 0, "")
        wanted = set(HOSTS[::2])
        assert [i.instance_id for i in cloud.list_instances(sorted(wanted))] == sorted(
            i for i, d in instances.items() if d["host"] in wanted
        )
        for key in KEYS:
            first = next((h for h, m in cloud._migrations.items() if m["key"] == key), None)
            assert cloud.find_move(key) == first
        now = self.clock.now()
        running = [m for m in cloud._migrations.values() if m["state"] == "running"]
        assert all(datetime.fromisoformat(m["end"]) > now for m in running)
        assert len({m["instance_id"] for m in running}) == len(running)
        times = [e.time for e in cloud.events]
        assert times == sorted(times)


TestIndexedCloud = pytest.mark.no_cover(IndexedCloudMachine.TestCase)
TestIndexedCloud.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_migrations_finish_in_end_time_order_then_start_order() -> None:
    clock = SimClock(start=T0)
    cloud = SimulatedCloud(migration_seconds=30, live_migration_seconds=30, clock=clock)
    for name in ("a", "b"):
        cloud.add_host(name, vcpus=40)
    for n in range(12):
        cloud.add_instance(f"vm-{n}", "p", "a")
    # Started in handle order 1..12 at the same time: migration-10 sorts before
    # migration-2 as text, which is the order they always finished in.
    for n in range(12):
        cloud.start_move(f"vm-{n}", "MIGRATE", "b", f"k{n}")
    clock.advance(30)
    done = [e.instance_id for e in cloud.events if e.kind == "migration_done"]
    expected = sorted(range(12), key=lambda n: f"migration-{n + 1}")
    assert done == [f"vm-{n}" for n in expected]


def test_a_cloud_reloaded_from_its_file_rebuilds_its_indexes(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    clock = SimClock(start=T0)
    first = SimulatedCloud(migration_seconds=30, state_path=path, clock=clock)
    first.add_host("a", vcpus=4)
    first.add_host("b", vcpus=4)
    first.add_instance("vm-1", "p", "a", vcpus=3)
    first.add_instance("vm-2", "p", "a", vcpus=1)
    handle = first.start_move("vm-1", "MIGRATE", "b", "key-1")

    second = SimulatedCloud(state_path=path, clock=clock)
    assert second.find_move("key-1") == handle
    assert second.free_vcpus("b") == 1  # vm-1 is heading there
    assert second.free_vcpus("a") == 0
    assert second.instances_on("a") == ["vm-1", "vm-2"]
    with pytest.raises(CloudError, match="already being migrated"):
        second.start_move("vm-1", "MIGRATE", "b", "key-2")
    assert second.relocate("vm-2") == "b"  # the most free vcpus: b has 1, a none
    clock.advance(30)
    assert second.instances_on("b") == ["vm-1", "vm-2"]
    assert second.free_vcpus("a") == 4
    assert second.free_vcpus("b") == 0


def test_a_removed_host_takes_a_moving_instance_it_held_out_of_the_count() -> None:
    clock = SimClock(start=T0)
    cloud = SimulatedCloud(migration_seconds=30, clock=clock)
    for name in ("a", "b", "c"):
        cloud.add_host(name, vcpus=4)
    cloud.add_instance("vm", "p", "a", vcpus=3)
    cloud.start_move("vm", "MIGRATE", "b", "k")
    cloud.relocate("vm", "c")  # its manager re-created it elsewhere meanwhile
    assert cloud.free_vcpus("b") == 1  # the migration still heads there
    cloud.remove_host("c")  # and the host it is on now goes, with it
    assert cloud.free_vcpus("b") == 4
    clock.advance(30)
    status = cloud.poll_move(cloud.find_move("k") or "")
    assert (status.state, status.gone) == ("done", True)  # its instance went with c
    assert cloud.instances_on("b") == []


def test_a_migration_done_on_the_host_its_instance_was_relocated_to_offers_its_room() -> None:
    """A migration done leaves its target's free vcpus as they were, so the
    target is not offered again; but not if its instance was put on that very
    host meanwhile: then the room it held as incoming comes free, and the
    scheduler must see it (here its earlier figure left the heap meanwhile)."""
    clock = SimClock(start=T0)
    cloud = SimulatedCloud(migration_seconds=30, clock=clock)
    for name, vcpus in (("h0", 8), ("h1", 8), ("h2", 2)):
        cloud.add_host(name, vcpus=vcpus)
    cloud.add_instance("vm-0", "p", "h0", vcpus=4)
    cloud.add_instance("vm-2", "p", "h0", vcpus=4)
    cloud.add_instance("vm-1", "p", "h2", vcpus=2)
    cloud.start_move("vm-0", "MIGRATE", "h1", "k0")
    cloud.relocate("vm-0", "h1")  # its manager re-created it there meanwhile
    assert cloud.free_vcpus("h1") == 0  # on it, and still heading there
    assert cloud.relocate("vm-1") == "h0"  # the scheduler passes h1 (full)
    clock.advance(30)
    assert cloud.free_vcpus("h1") == 4
    assert (cloud.free_vcpus("h0"), cloud.free_vcpus("h2")) == (2, 2)
    cloud.start_move("vm-2", "MIGRATE", None, "k2")  # the scheduler chooses
    started = [e for e in cloud.events if e.kind == "migration_started"]
    assert started[-1].detail == "h1"  # the only host with room


@given(st.text(max_size=6), st.text(max_size=6))
def test_the_heap_key_orders_host_names_backwards(a: str, b: str) -> None:
    # Names that begin others ("h1", "h10") included: the greatest name first.
    assert (_descending(a) < _descending(b)) == (a > b)


def test_the_cloud_leaves_the_collector_no_object_per_migration() -> None:
    # Each event was an attrs instance and each heap entry of targets held an
    # object made for it: a run of the 10,000-host benchmark left a few
    # hundred thousand more for every full collection to walk, and they made
    # those collections more frequent too.
    clock = SimClock(start=T0)
    cloud = SimulatedCloud(migration_seconds=30, live_migration_seconds=30, clock=clock)
    for name in ("a", "b", "c"):
        cloud.add_host(name, vcpus=400)
    for n in range(100):
        cloud.add_instance(f"vm-{n}", "p", "a")
    gc.collect()
    before = len(gc.get_objects())
    for round_ in range(10):
        for n in range(100):
            cloud.start_move(f"vm-{n}", "LIVE_MIGRATE", None, f"k{round_}-{n}")
        clock.advance(30)
        cloud.free_vcpus("a")  # the migrations end
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert sum(e.kind == "migration_done" for e in cloud.events) == 1_000
    assert grown < 100  # 1,000 migrations, two events each
