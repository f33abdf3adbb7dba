"""Topology labels from the OpenStack fake through openstacksdk: availability
zones (Nova derives a compute service's zone from the aggregates holding its
host) and host aggregates, and a session held to one zone at a time."""

from __future__ import annotations

from datetime import datetime

import pytest
from fake_openstack_fixtures import build, clock, fake, make_engine  # noqa: F401

from fenix_core import ActionSpec, SessionRequest
from fenix_core.errors import InvalidInput
from fenix_core.testing import TimedAction
from fenix_core_openstack import OpenStackDriver


def _zoned(fake) -> None:
    build(fake, {f"cmp-{i}": [(f"vm-{i}", f"p{i % 2}", 2)] for i in range(4)})
    fake.add_aggregate("az1-hosts", ["cmp-0", "cmp-1"], availability_zone="az1")
    fake.add_aggregate("az2-hosts", ["cmp-2", "cmp-3"], availability_zone="az2")
    fake.add_aggregate("ssd", ["cmp-1", "cmp-2"])


def test_services_report_the_zone_their_aggregates_give(fake) -> None:
    _zoned(fake)
    fake.add_host("cmp-9")
    conn = fake.connect()
    zones = {s.host: s.availability_zone for s in conn.compute.services(binary="nova-compute")}
    assert zones == {
        "cmp-0": "az1",
        "cmp-1": "az1",
        "cmp-2": "az2",
        "cmp-3": "az2",
        "cmp-9": "nova",
    }
    listed = {a.name: (a.availability_zone, a.metadata) for a in conn.compute.aggregates()}
    assert listed["az1-hosts"] == ("az1", {"availability_zone": "az1"})
    assert listed["ssd"] == (None, {})


def test_a_host_cannot_be_in_two_availability_zones(fake) -> None:
    _zoned(fake)
    with pytest.raises(InvalidInput, match="cmp-1 is in availability zone az1"):
        fake.add_aggregate("other", ["cmp-1"], availability_zone="az3")


def test_hosts_carry_their_zone_and_aggregates(fake) -> None:
    _zoned(fake)
    driver = OpenStackDriver(fake.connect(), poll_interval=10)
    labels = {h.name: dict(h.labels) for h in driver.list_hosts()}
    assert labels == {
        "cmp-0": {"zone": "az1", "aggregate": ("az1-hosts",)},
        "cmp-1": {"zone": "az1", "aggregate": ("az1-hosts", "ssd")},
        "cmp-2": {"zone": "az2", "aggregate": ("az2-hosts", "ssd")},
        "cmp-3": {"zone": "az2", "aggregate": ("az2-hosts",)},
    }


@pytest.mark.no_cover
def test_a_session_maintains_one_availability_zone_at_a_time(fake, make_engine, clock) -> None:
    _zoned(fake)
    engine = make_engine(TimedAction("upgrade", seconds=600))
    sid = engine.create_session(
        SessionRequest(
            workflow="constrained",
            actions=[ActionSpec("upgrade", "host")],
            controls={"max_topology_in_maintenance": [{"key": "zone", "max": 1}]},
        )
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    worked: dict[str, tuple[datetime, datetime]] = {}
    for host in view.hosts:
        assert host.started_at is not None
        assert host.finished_at is not None
        worked[host.name] = (host.started_at, host.finished_at)
    zone = {"cmp-0": "az1", "cmp-1": "az1", "cmp-2": "az2", "cmp-3": "az2"}
    for a, (a0, a1) in worked.items():
        for b, (b0, b1) in worked.items():
            if a0 < b1 and b0 < a1:
                assert zone[a] == zone[b], (a, b, worked)
