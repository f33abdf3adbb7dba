"""An Inventory operation's result carries each listed instance as a dict of
every field of :class:`fenix_core.model.Instance` but ``details`` (the
engine's ``apply_inventory`` reads it; a field added to Instance must reach it)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import attrs

from fenix_core.model import Instance, SessionRequest
from fenix_core.operations import OperationRunner
from fenix_core.plugins import Plugins
from fenix_core.testing import SimClock, SimulatedCloud


def test_an_inventory_lists_every_instance_field_but_details() -> None:
    clock = SimClock()
    cloud = SimulatedCloud(clock=clock)
    cloud.add_host("cmp-0", vcpus=8)
    cloud.add_instance("vm-1", "p1", "cmp-0", vcpus=2)
    cloud.add_instance("vm-2", "p2", "cmp-0", vcpus=1)
    runner = OperationRunner(Plugins([cloud], clock, load_entry_points=False))
    row = SimpleNamespace(
        key="s:1", kind="inventory", host=None, instance_id=None, session_id="s",
        params={"hosts": ["cmp-0"], "list_hosts": False}, handle=None, started_at=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC), deadline=None, detail=None,
    )  # fmt: skip
    status = runner.start(row, SessionRequest(), clock.now())  # type: ignore[arg-type]
    listed = status.result["instances"]
    expected = []
    for found in cloud.list_instances(["cmp-0"]):
        data = attrs.asdict(found)
        del data["details"]
        expected.append(data)
    assert [i["instance_id"] for i in listed] == ["vm-1", "vm-2"]
    assert listed == expected
    assert set(listed[0]) == {f.name for f in attrs.fields(Instance)} - {"details"}
