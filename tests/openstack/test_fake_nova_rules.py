"""The fake Nova refuses what real Nova refuses, checked through openstacksdk:
scheduler filters on a requested host and on a host the scheduler picks
(server groups, disabled services, Placement capacity), soft policies as
weights, 409 for metadata and tag writes in the wrong state, tags from 2.26."""

from __future__ import annotations

import pytest
from fake_openstack_fixtures import clock, fake  # noqa: F401
from openstack import exceptions as sdk_exc

from fenix_core.errors import InvalidInput


@pytest.fixture
def conn(fake):
    return fake.connect()


def _hosts(fake, *names, vcpus=8, **options):
    for name in names:
        fake.add_host(name, vcpus=vcpus, **options)


def _live(conn, server_id, host=None):
    conn.compute.live_migrate_server(server_id, host=host, block_migration="auto")


def _cold(conn, server_id, host=None):
    conn.compute.migrate_server(server_id, host=host)


MIGRATIONS = [_live, _cold]


def _refused(call, *args):
    with pytest.raises(sdk_exc.BadRequestException) as err:
        call(*args)
    assert "No valid host was found" in str(err.value.details)
    return str(err.value.details)


# --------------------------------------------------------------------------- server groups


@pytest.mark.parametrize("migrate", MIGRATIONS)
def test_anti_affinity_refuses_a_requested_host_holding_a_member(fake, conn, migrate):
    _hosts(fake, "cmp-0", "cmp-1", "cmp-2")
    fake.add_server("vm-a", "p1", "cmp-0")
    fake.add_server("vm-b", "p1", "cmp-1")
    fake.add_server_group("sg", "p1", ["vm-a", "vm-b"])
    why = _refused(migrate, conn, "vm-a", "cmp-1")
    assert "ServerGroupAntiAffinityFilter" in why
    assert fake.host_of("vm-a") == "cmp-0"
    migrate(conn, "vm-a", "cmp-2")  # a host without a member is fine
    assert fake.migrations()[-1]["dest_compute"] == "cmp-2"


def test_anti_affinity_counts_members_on_their_way_to_a_host(fake, conn):
    _hosts(fake, "cmp-0", "cmp-1", "cmp-2")
    fake.add_server("vm-a", "p1", "cmp-0")
    fake.add_server("vm-b", "p1", "cmp-1")
    fake.add_server_group("sg", "p1", ["vm-a", "vm-b"])
    _live(conn, "vm-a", "cmp-2")  # still running
    _refused(_live, conn, "vm-b", "cmp-2")


@pytest.mark.parametrize("migrate", MIGRATIONS)
def test_the_scheduler_never_picks_a_host_that_breaks_anti_affinity(fake, conn, migrate):
    _hosts(fake, "cmp-0", "cmp-1", "cmp-2")
    fake.add_host("cmp-3", vcpus=64)  # the roomiest: the scheduler's pick without the group
    fake.add_server("vm-a", "p1", "cmp-0")
    fake.add_server("vm-b", "p1", "cmp-3")
    fake.add_server_group("sg", "p1", ["vm-a", "vm-b"])
    migrate(conn, "vm-a")
    assert fake.migrations()[-1]["dest_compute"] in ("cmp-1", "cmp-2")
    # Every other host holds a member: nowhere to go.
    members = {"vm-c": "cmp-0", "vm-d": "cmp-1", "vm-e": "cmp-2", "vm-f": "cmp-3"}
    for name, host in members.items():
        fake.add_server(name, "p2", host)
    fake.add_server_group("sg-full", "p2", list(members))
    _refused(migrate, conn, "vm-c")


def test_max_server_per_host_allows_that_many_members(fake, conn):
    _hosts(fake, "cmp-0", "cmp-1")
    for name, host in (("vm-a", "cmp-0"), ("vm-b", "cmp-1"), ("vm-c", "cmp-0")):
        fake.add_server(name, "p1", host)
    fake.add_server_group("sg", "p1", ["vm-a", "vm-b", "vm-c"], max_server_per_host=2)
    _live(conn, "vm-a", "cmp-1")  # cmp-1 holds one member: a second is allowed
    _refused(_live, conn, "vm-c", "cmp-1")  # two there (one arriving): no third
    groups = list(conn.compute.server_groups(all_projects=True))
    assert groups[0].rules == {"max_server_per_host": 2}
    assert groups[0].policy == "anti-affinity"


@pytest.mark.parametrize("migrate", MIGRATIONS)
def test_affinity_keeps_members_together(fake, conn, migrate):
    _hosts(fake, "cmp-0", "cmp-1", "cmp-2")
    fake.add_server("vm-a", "p1", "cmp-0")
    fake.add_server("vm-b", "p1", "cmp-0")
    fake.add_server_group("sg", "p1", ["vm-a", "vm-b"], policy="affinity")
    # Away from the other member: refused on a requested host and by the scheduler.
    assert "ServerGroupAffinityFilter" in _refused(migrate, conn, "vm-a", "cmp-1")
    _refused(migrate, conn, "vm-a")
    # A lone member cannot move either: the group's hosts are its own host.
    fake.add_server("vm-lone", "p2", "cmp-1")
    fake.add_server_group("sg-lone", "p2", ["vm-lone"], policy="affinity")
    _refused(migrate, conn, "vm-lone", "cmp-2")
    # A member that is apart may join the others.
    fake.add_server("vm-c", "p3", "cmp-1")
    fake.add_server("vm-d", "p3", "cmp-2")
    fake.add_server_group("sg-apart", "p3", ["vm-c", "vm-d"], policy="affinity")
    migrate(conn, "vm-c", "cmp-2")


def test_soft_policies_weigh_the_schedulers_choice_and_refuse_nothing(fake, conn):
    _hosts(fake, "cmp-0", "cmp-1")
    fake.add_host("cmp-2", vcpus=32)  # the roomiest
    fake.add_server("vm-a", "p1", "cmp-0")
    fake.add_server("vm-b", "p1", "cmp-2")
    fake.add_server_group("sg-spread", "p1", ["vm-a", "vm-b"], policy="soft-anti-affinity")
    fake.add_server("vm-c", "p2", "cmp-0")
    fake.add_server("vm-d", "p2", "cmp-1")
    fake.add_server_group("sg-near", "p2", ["vm-c", "vm-d"], policy="soft-affinity")
    _live(conn, "vm-a")
    assert fake.migrations()[-1]["dest_compute"] == "cmp-1"  # not with vm-b
    _live(conn, "vm-c")
    assert fake.migrations()[-1]["dest_compute"] == "cmp-1"  # with vm-d
    fake.add_server("vm-e", "p3", "cmp-0")
    fake.add_server("vm-f", "p3", "cmp-1")
    fake.add_server_group("sg-soft", "p3", ["vm-e", "vm-f"], policy="soft-anti-affinity")
    _live(conn, "vm-e", "cmp-1")  # a preference, not a filter


def test_server_group_input_is_checked(fake):
    _hosts(fake, "cmp-0")
    fake.add_server("vm-a", "p1", "cmp-0")
    with pytest.raises(InvalidInput, match="policy"):
        fake.add_server_group("sg", "p1", ["vm-a"], policy="anti_affinity")
    with pytest.raises(InvalidInput, match="max_server_per_host"):
        fake.add_server_group("sg", "p1", ["vm-a"], policy="affinity", max_server_per_host=2)
    fake.add_server_group("sg", "p1", ["vm-a"])
    with pytest.raises(InvalidInput, match="in server group 'sg' already"):
        fake.add_server_group("sg-2", "p1", ["vm-a"])


# --------------------------------------------------------------------------- hosts, capacity


@pytest.mark.parametrize("migrate", MIGRATIONS)
def test_a_disabled_compute_is_refused_on_request_and_never_scheduled(fake, conn, migrate):
    _hosts(fake, "cmp-0", "cmp-1")
    fake.add_host("cmp-2", enabled=False, vcpus=64)
    fake.add_server("vm-a", "p1", "cmp-0")
    assert "ComputeFilter" in _refused(migrate, conn, "vm-a", "cmp-2")
    migrate(conn, "vm-a")
    assert fake.migrations()[-1]["dest_compute"] == "cmp-1"


def test_capacity_is_placements_usable_inventory_minus_its_usages(fake, conn):
    fake.add_host("cmp-0", vcpus=16)
    fake.add_host("cmp-1", vcpus=4, reserved_vcpus=2, allocation_ratio=2.0)  # (4-2)*2 = 4 usable
    fake.add_host("cmp-2", vcpus=16, memory_mb=2048)  # (2048-512) MB: room for 1536 MB
    fake.add_server("vm-big", "p1", "cmp-0", vcpus=4)
    fake.add_server("vm-5", "p1", "cmp-0", vcpus=5)
    fake.add_server("vm-small", "p1", "cmp-0", vcpus=3)
    fake.add_server("vm-ram", "p1", "cmp-0", vcpus=4)  # 2048 MB
    assert "4 VCPU free, 5 needed" in _refused(_live, conn, "vm-5", "cmp-1")
    assert "MEMORY_MB free, 2048 needed" in _refused(_live, conn, "vm-ram", "cmp-2")
    _live(conn, "vm-big", "cmp-1")  # exactly the usable 4
    assert "0 VCPU free" in _refused(_live, conn, "vm-small", "cmp-1")  # the arrival counts
    # What the scheduler saw is what Placement reports.
    rp = next(h.id for h in conn.compute.hypervisors(details=True) if h.name == "cmp-1.fake.local")
    inventories = {i.resource_class: i for i in conn.placement.resource_provider_inventories(rp)}
    assert (inventories["VCPU"].total, inventories["VCPU"].reserved) == (4, 2)
    assert inventories["VCPU"].allocation_ratio == 2.0
    usages = conn.placement.get(f"/resource_providers/{rp}/usages").json()["usages"]
    assert usages == {"VCPU": 4, "MEMORY_MB": 2048}


# --------------------------------------------------------------------------- metadata, tags


def test_metadata_and_tag_writes_need_a_settled_server(fake, conn, clock):
    _hosts(fake, "cmp-0", "cmp-1")
    fake.add_server("vm-a", "p1", "cmp-0")
    fake.add_server("vm-off", "p1", "cmp-0", status="SHUTOFF")
    server = conn.compute.get_server("vm-a")
    conn.compute.set_server_metadata(server, k="v")
    server.add_tag(conn.compute, "t")
    stopped = conn.compute.get_server("vm-off")
    conn.compute.set_server_metadata(stopped, k="v")  # SHUTOFF is vm_state stopped: allowed
    stopped.add_tag(conn.compute, "t")

    _live(conn, "vm-a", "cmp-1")  # a task in progress
    with pytest.raises(sdk_exc.ConflictException, match="task_state migrating"):
        conn.compute.set_server_metadata(server, k2="v")
    with pytest.raises(sdk_exc.ConflictException, match="task_state migrating"):
        conn.compute.delete_server_metadata(server, ["k"])
    server.add_tag(conn.compute, "t2")  # Nova's tag API checks the vm_state only
    clock.advance(60)

    fake.add_server("vm-err", "p1", "cmp-0", status="ERROR")
    broken = conn.compute.get_server("vm-err")
    with pytest.raises(sdk_exc.ConflictException, match="vm_state error"):
        conn.compute.set_server_metadata(broken, k="v")
    with pytest.raises(sdk_exc.ConflictException, match="vm_state error"):
        broken.add_tag(conn.compute, "t")
    with pytest.raises(sdk_exc.ConflictException, match="vm_state error"):
        broken.remove_tag(conn.compute, "t")


def test_tags_need_microversion_2_26_and_answer_201_then_204(fake, conn):
    _hosts(fake, "cmp-0")
    fake.add_server("vm-a", "p1", "cmp-0")
    old = conn.compute.put("/servers/vm-a/tags/t", microversion="2.25")
    assert old.status_code == 404
    assert conn.compute.put("/servers/vm-a/tags/t", microversion="2.26").status_code == 201
    assert conn.compute.put("/servers/vm-a/tags/t", microversion="2.26").status_code == 204
    assert "tags" not in conn.compute.get("/servers/vm-a", microversion="2.25").json()["server"]
    assert conn.compute.get_server("vm-a").tags == ["t"]


def test_a_server_that_went_to_error_during_a_migration_shows_its_fault(fake, conn, clock):
    _hosts(fake, "cmp-0", "cmp-1")
    fake.add_server("vm-a", "p1", "cmp-0")
    fake.error_next_migration("vm-a", "libvirtError: domain crashed")
    _live(conn, "vm-a", "cmp-1")
    assert conn.compute.get_server("vm-a").fault is None
    clock.advance(60)
    server = conn.compute.get_server("vm-a")
    assert (server.status, server.vm_state) == ("ERROR", "error")
    assert server.fault["message"] == "libvirtError: domain crashed"
    assert fake.migrations()[-1]["status"] == "error"
