"""The OpenStack driver's own contract, through the real sdk against the fake:
inventory and capacity, the move record that survives an engine crash
(find_move), cold-migration confirmation, and anti-affinity server groups as
default constraints."""

from __future__ import annotations

import pytest
from fake_openstack_fixtures import build, clock, fake  # noqa: F401

from fenix_core.constraints import GroupConstraints
from fenix_core.errors import CloudError, PluginError
from fenix_core.model import Instance
from fenix_core.placement_rules import PlacementRule
from fenix_core_openstack import OpenStackDriver
from fenix_core_openstack.moves import key_tag


@pytest.fixture
def driver(fake):
    build(fake, {"cmp-0": [("vm-1", "p1", 2), ("vm-2", "p2", 1)], "cmp-1": [], "ctl-0": []})
    return OpenStackDriver(fake.connect(), controllers=["ctl-0"], poll_interval=10)


def test_hosts_and_instances_come_from_services_placement_and_servers(driver, fake):
    hosts = {h.name: h for h in driver.list_hosts()}
    assert {n: (h.type, h.vcpus, h.enabled) for n, h in hosts.items()} == {
        "cmp-0": ("compute", 8, True),
        "cmp-1": ("compute", 8, True),
        "ctl-0": ("controller", 8, True),
    }
    instances = {i.instance_id: i for i in driver.list_instances(["cmp-0"])}
    assert {i: (x.project_id, x.host, x.vcpus) for i, x in instances.items()} == {
        "vm-1": ("p1", "cmp-0", 2),
        "vm-2": ("p2", "cmp-0", 1),
    }
    assert driver.list_instances(["cmp-1"]) == []
    assert driver.locate("vm-1") == "cmp-0"


def test_instance_owner_is_the_servers_project(driver):
    # What the engine asks when a project sets an instance's constraints.
    assert driver.instance_owner("vm-1") == "p1"
    assert driver.instance_owner("vm-2") == "p2"
    assert driver.instance_owner("vm-nope") is None


def test_controllers_from_an_aggregate_and_capacity_from_configuration(fake, driver):
    fake.add_aggregate("control-plane", ["ctl-0"])
    configured = OpenStackDriver(
        fake.connect(), controller_aggregate="control-plane", host_vcpus={"cmp-0": 4}
    )
    hosts = {h.name: (h.type, h.vcpus) for h in configured.list_hosts()}
    assert hosts == {"cmp-0": ("compute", 4), "cmp-1": ("compute", 0), "ctl-0": ("controller", 0)}
    with pytest.raises(PluginError, match="no host aggregate named 'missing'"):
        OpenStackDriver(fake.connect(), controller_aggregate="missing")


def _poll_until_final(driver, clock, handle):
    for _ in range(50):
        status = driver.poll_move(handle)
        if status.state != "running":
            return status
        clock.advance(status.retry_after or 0)
    raise AssertionError("the move never ended")


def test_find_move_follows_the_key_recorded_on_the_server(driver, fake, clock):
    assert driver.find_move("key-1") is None
    handle = driver.start_move("vm-1", "LIVE_MIGRATE", "cmp-1", "key-1")
    # After a crash, a new engine only knows the key: the server tells the rest.
    assert driver.find_move("key-1") == handle
    assert driver.find_move("key-2") is None
    assert key_tag("key-1") in fake.server("vm-1")["tags"]
    # Asking again with the same key does not start a second migration.
    assert driver.start_move("vm-1", "LIVE_MIGRATE", "cmp-1", "key-1") == handle
    assert len(fake.migrations()) == 1
    status = _poll_until_final(driver, clock, handle)
    assert (status.state, status.host) == ("done", "cmp-1")
    assert fake.server("vm-1")["tags"] == []
    assert fake.server("vm-1")["metadata"] == {}


def test_find_move_ignores_a_record_whose_migration_never_reached_nova(driver, fake):
    # The engine crashed after recording the key on the server, before the request.
    conn = fake.connect()
    server = conn.compute.get_server("vm-1")
    conn.compute.set_server_metadata(server, **{key_tag("k"): "v1 LIVE_MIGRATE 0 vm-1 cmp-0"})
    server.add_tag(conn.compute, key_tag("k"))
    assert driver.find_move("k") is None


def test_cold_migration_is_confirmed_once_the_server_waits_in_verify_resize(driver, fake, clock):
    handle = driver.start_move("vm-2", "MIGRATE", None, "cold")  # nova's scheduler picks
    status = _poll_until_final(driver, clock, handle)
    assert status.state == "done"
    assert status.host == fake.host_of("vm-2") != "cmp-0"
    assert [e.kind for e in fake.events if e.instance_id == "vm-2"][-2:] == [
        "migration_done",
        "resize_confirmed",
    ]
    assert fake.migrations()[-1]["status"] == "confirmed"
    assert fake.server("vm-2")["status"] == "ACTIVE"


def test_unknown_actions_and_handles_are_refused(driver):
    with pytest.raises(CloudError, match="EVICT is not supported"):
        driver.start_move("vm-1", "EVICT", None, "k")
    with pytest.raises(CloudError, match="not a handle"):
        driver.poll_move("migration-1")


def test_anti_affinity_server_groups_become_group_constraints(driver, fake):
    fake.add_server_group("sg-db", "p1", ["vm-1", "vm-elsewhere"], name="db")
    fake.add_server_group("sg-web", "p2", ["vm-2"], policy="affinity")
    fake.add_server_group("sg-other", "p3", ["vm-unlisted"])
    instances = [Instance("vm-1", "p1", "cmp-0"), Instance("vm-2", "p2", "cmp-0")]

    found = driver.cloud_constraints(instances)

    assert found.groups == (
        GroupConstraints(
            group_id="sg-db",
            project_id="p1",
            group_name="db",
            anti_affinity_group=True,
            max_instances_per_host=1,
            max_impacted_members=1,
        ),
    )
    assert dict(found.members) == {"vm-1": "sg-db"}
    # Every policy reaches every workflow as a placement rule, with all members.
    assert found.placement == (
        PlacementRule("sg-db", "anti-affinity", ("vm-1", "vm-elsewhere"), name="db"),
        PlacementRule("sg-web", "affinity", ("vm-2",), name="sg-web"),
    )


def test_max_server_per_host_and_soft_policies_are_carried(driver, fake):
    fake.add_server_group("sg-2", "p1", ["vm-1"], max_server_per_host=2)
    fake.add_server_group("sg-soft", "p2", ["vm-2"], policy="soft-anti-affinity")
    found = driver.cloud_constraints(
        [Instance("vm-1", "p1", "cmp-0"), Instance("vm-2", "p2", "cmp-0")]
    )
    assert [(r.group_id, r.policy, r.max_per_host) for r in found.placement] == [
        ("sg-2", "anti-affinity", 2),
        ("sg-soft", "soft-anti-affinity", 1),
    ]
    (group,) = found.groups
    assert (group.anti_affinity_group, group.max_instances_per_host) == (False, 2)


def test_poll_move_reports_the_fault_of_a_server_in_error(driver, fake, clock):
    fake.error_next_migration("vm-1", "libvirtError: guest crashed")
    handle = driver.start_move("vm-1", "LIVE_MIGRATE", "cmp-1", "key-err")
    status = _poll_until_final(driver, clock, handle)
    assert status.state == "failed"
    assert "vm-1 went into ERROR: libvirtError: guest crashed" in (status.detail or "")
    # Nova keeps the record while the server is in ERROR (409): it stays, and
    # the key it carries is this attempt's only.
    assert key_tag("key-err") in fake.server("vm-1")["tags"]
