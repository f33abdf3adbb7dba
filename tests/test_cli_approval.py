"""`fenix sessions create | plan | show | approve` for a session created with
``approval: required``, on a database a worker engine runs on simulated time."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_sessions import HOSTS, World, fenix, fenix_json, world  # noqa: F401

WRITES = ("disable_host", "enable_host", "migration_started")
PLUGINS = ("--plugin", "cli_test_plugins:cloud", "--plugin", "cli_test_plugins:upgrade")


def create_waiting(world: World, tmp_path: Path) -> dict[str, object]:  # noqa: F811
    request = tmp_path / "request.yaml"
    request.write_text(
        "workflow: rolling\napproval: required\nactions:\n  - {plugin: upgrade, type: host}\n"
    )
    created: dict[str, object] = fenix_json(
        "sessions", "create", request, "--database-url", world.url, *PLUGINS
    )
    return created


def test_plan_show_and_approve_on_the_database(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    db = ("--database-url", world.url)
    created = create_waiting(world, tmp_path)
    sid = str(created["session_id"])
    assert created["state"] == "AWAITING_APPROVAL"
    first = fenix_json("sessions", "plan", sid[:8], *db)
    assert first["session_id"] == sid
    assert first["approved_at"] is None
    assert sorted(first["plan"]["hosts"]) == HOSTS
    text = " ".join(fenix("sessions", "plan", sid, *db).output.split())
    assert f"plan {first['plan_id']} (awaiting approval)" in text
    assert "estimated makespan" in text
    shown = " ".join(fenix("sessions", "show", sid, *db).output.split())
    assert "AWAITING_APPROVAL" in shown
    assert f"plan {first['plan_id']}" in shown
    assert fenix_json("sessions", "show", sid, *db)["approval"]["plan_id"] == first["plan_id"]

    world.run(minutes=120)  # the worker leaves it alone
    assert world.view(sid).state == "AWAITING_APPROVAL"
    assert [e for e in world.cloud.events if e.kind in WRITES] == []

    # The cloud changes: approve re-plans, prints the new plan, exits 2.
    world.cloud.relocate("vm-0", "cmp-3")
    result = fenix("sessions", "approve", sid, *db, "--plan-id", first["plan_id"], *PLUGINS, code=2)
    said = " ".join(result.output.split())
    second = world.view(sid).approval
    assert second is not None
    assert f"plan {second.plan_id} (awaiting approval)" in said
    assert f"re-planned, approve again (plan {second.plan_id})" in said
    assert "instances moved: vm-0 cmp-0 -> cmp-3" in said
    # The plan reviewed before is refused now, in JSON too.
    stale = json.loads(
        fenix(
            "sessions", "approve", sid, *db, "--plan-id", first["plan_id"], *PLUGINS, "--json",
            code=2,
        ).output
    )  # fmt: skip
    assert f"re-planned as {second.plan_id}" in stale["error"]
    assert world.view(sid).state == "AWAITING_APPROVAL"

    approved = fenix_json("sessions", "approve", sid, *db, "--plan-id", second.plan_id, *PLUGINS)
    assert approved["state"] == "MAINTENANCE"
    assert approved["approval"]["approved_at"] is not None
    world.run(minutes=120)
    assert world.view(sid).state == "MAINTENANCE_DONE"


def test_approve_without_a_cloud_driver_says_so(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    sid = str(create_waiting(world, tmp_path)["session_id"])
    error = fenix_json("sessions", "approve", sid, "--database-url", world.url, code=2)
    assert "no cloud driver" in error["error"]
    assert world.view(sid).state == "AWAITING_APPROVAL"
    missing = fenix_json("sessions", "plan", sid, "--database-url", world.url)
    assert missing["plan_id"]
    create_plain = tmp_path / "plain.yaml"
    create_plain.write_text("workflow: rolling\nhosts: [cmp-0]\n")
    plain = fenix_json("sessions", "create", create_plain, "--database-url", world.url, *PLUGINS)
    error = fenix_json("sessions", "plan", plain["session_id"], "--database-url", world.url, code=2)
    assert error["error"] == f"plan {plain['session_id']!r} not found"
