"""What goes wrong on a real cloud, injected into the fake: the engine
refuses to start without working admin credentials; Nova's refusals and
failed migrations fail the session with Nova's own message; a server deleted
by its project meanwhile is gone, not a failure; a compute that stays down
fails the session and stays disabled."""

from __future__ import annotations

import pytest
import yaml
from fake_openstack_fixtures import build, clock, fake, make_engine  # noqa: F401

from fenix_core import Engine, SessionRequest
from fenix_core.errors import PluginError
from fenix_core.testing import ScriptedManager
from fenix_core_openstack import OpenStackCloud
from fenix_core_openstack.testing import MEMBER_USER

TWO_HOSTS = {"cmp-0": [("vm-1", "p1", 2)], "cmp-1": []}


def test_bad_credentials_stop_the_engine_from_starting(fake, clock):
    build(fake, TWO_HOSTS)
    cloud = OpenStackCloud(connection=fake.connect(password="wrong"))
    with pytest.raises(PluginError, match="cannot authenticate"):
        Engine(clock=clock, plugins=[cloud], load_entry_points=False)


def test_a_user_without_admin_rights_is_refused_at_start(fake, clock):
    build(fake, TWO_HOSTS)
    cloud = OpenStackCloud(connection=fake.connect(user=MEMBER_USER))
    with pytest.raises(PluginError, match="no admin rights") as err:
        Engine(clock=clock, plugins=[cloud], load_entry_points=False)
    assert "os_compute_api" in str(err.value)  # nova's policy message is kept


def test_clouds_yaml_names_the_cloud(fake, clock, tmp_path, monkeypatch):
    build(fake, TWO_HOSTS)
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump({"clouds": {"fake": fake.cloud_config()}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(config))
    engine = Engine(clock=clock, plugins=[OpenStackCloud(cloud="fake")], load_entry_points=False)
    assert [h.name for h in engine.plugins.require_driver().list_hosts()] == ["cmp-0", "cmp-1"]
    engine.close()
    with pytest.raises(PluginError, match="nowhere"):
        Engine(clock=clock, plugins=[OpenStackCloud(cloud="nowhere")], load_entry_points=False)


def _one_move(make_engine, action: str, **request):
    engine = make_engine()
    ScriptedManager(engine, "p1", action=action)
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"], **request))
    return engine.run_until_done(sid)


def test_a_409_conflict_fails_the_move_with_novas_message(fake, make_engine):
    build(fake, TWO_HOSTS)
    fake.conflict_next_action("vm-1", "Instance vm-1 is locked by its owner")
    view = _one_move(make_engine, "LIVE_MIGRATE", max_migration_retries=0)
    assert view.state == "MAINTENANCE_FAILED"
    assert "HTTP 409" in view.reason
    assert "Instance vm-1 is locked by its owner" in view.reason
    assert fake.host_of("vm-1") == "cmp-0"
    assert not fake.server("vm-1")["tags"]  # the move's record was removed
    assert all(fake.service(h)["status"] == "enabled" for h in TWO_HOSTS)


def test_no_valid_host_answered_at_once_at_microversion_2_30(fake, make_engine):
    build(fake, TWO_HOSTS)
    # cmp-1 refused at the request (HTTP 400), then the scheduler as well.
    for _ in range(2):
        fake.fail_next_migration("vm-1", "No valid host was found. Anti-affinity", at_request=True)
    view = _one_move(make_engine, "LIVE_MIGRATE", max_migration_retries=0)
    assert view.state == "MAINTENANCE_FAILED"
    assert "HTTP 400" in view.reason
    assert "No valid host was found. Anti-affinity" in view.reason
    assert not fake.migrations()  # refused at the request: nothing started


def test_a_target_refused_at_once_is_not_an_attempt(fake, make_engine):
    build(fake, TWO_HOSTS)
    fake.fail_next_migration("vm-1", "No valid host was found. Claim raced", at_request=True)
    # No retry allowed: the refusal started nothing, the scheduler is asked next.
    view = _one_move(make_engine, "LIVE_MIGRATE", max_migration_retries=0)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert fake.host_of("vm-1") == "cmp-1"


def test_no_valid_host_found_after_the_request_is_a_refusal_not_an_attempt(fake, make_engine):
    # From microversion 2.34 Nova answers 202 and its scheduler's NoValidHost
    # ends the migration record in error, the server ACTIVE where it was: the
    # same refusal of the target as a 400 at the request, so not an attempt.
    build(fake, TWO_HOSTS)
    fake.fail_next_migration("vm-1", "No valid host was found. There are not enough hosts")
    view = _one_move(make_engine, "LIVE_MIGRATE", max_migration_retries=0)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert fake.host_of("vm-1") == "cmp-1"
    statuses = [(m["status"], m["dest_compute"]) for m in fake.migrations()]
    assert statuses == [("error", "cmp-1"), ("completed", "cmp-1")]


@pytest.mark.parametrize("action", ["LIVE_MIGRATE", "MIGRATE"])
def test_a_migration_ending_in_error_fails_with_novas_event_details(fake, make_engine, action):
    build(fake, TWO_HOSTS)
    fake.fail_next_migration("vm-1", "libvirtError: unable to connect to cmp-1")
    view = _one_move(make_engine, action, max_migration_retries=0)
    assert view.state == "MAINTENANCE_FAILED"
    assert "status error" in view.reason
    assert "libvirtError: unable to connect to cmp-1" in view.reason
    assert fake.host_of("vm-1") == "cmp-0"
    assert fake.server("vm-1")["status"] == "ACTIVE"


def test_a_failed_migration_is_retried_and_the_session_completes(fake, make_engine):
    build(fake, TWO_HOSTS)
    fake.fail_next_migration("vm-1", "migration pre-check failed")
    view = _one_move(make_engine, "LIVE_MIGRATE")
    assert view.state == "MAINTENANCE_DONE", view.reason
    statuses = [m["status"] for m in fake.migrations()]
    assert statuses[:2] == ["error", "completed"]


def test_a_server_deleted_during_its_move_is_gone_not_a_failure(fake, make_engine):
    build(fake, {"cmp-0": [("vm-1", "p1", 2), ("vm-2", "p1", 2)], "cmp-1": []})
    fake.delete_when_moved("vm-1")
    engine = make_engine()
    ScriptedManager(engine, "p1", action="LIVE_MIGRATE")
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    states = {i.instance_id: i.state for i in engine.project_view(sid, "p1").instances}
    assert states["vm-1"] == "GONE"
    assert fake.host_of("vm-1") is None
    assert engine.plugins.require_driver().locate("vm-1") is None


def test_a_compute_that_stays_down_fails_the_session_and_stays_disabled(fake, make_engine):
    build(fake, {"cmp-0": [], "cmp-1": []})
    fake.service_stays_down("cmp-0")
    engine = make_engine()
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"], timeouts={"host_up": 120}))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert "cmp-0 did not come back" in view.reason
    assert fake.service("cmp-0")["status"] == "disabled"
    assert fake.service("cmp-0")["state"] == "down"
    assert fake.service("cmp-1")["status"] == "enabled"


@pytest.mark.parametrize("action", ["LIVE_MIGRATE", "MIGRATE"])
def test_a_server_that_goes_to_error_fails_the_move_with_novas_fault(fake, make_engine, action):
    # Nova refuses to remove the move's record (409, vm_state error): that
    # cleanup must not hide the outcome.
    build(fake, TWO_HOSTS)
    fake.error_next_migration("vm-1", "libvirtError: guest crashed during migration")
    view = _one_move(make_engine, action, max_migration_retries=0)
    assert view.state == "MAINTENANCE_FAILED"
    assert "went into ERROR: libvirtError: guest crashed during migration" in view.reason
    assert fake.server("vm-1")["status"] == "ERROR"
    assert all(fake.service(h)["status"] == "enabled" for h in TWO_HOSTS)
