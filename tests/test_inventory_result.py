"""An Inventory operation's result carries each listed instance as a dict of
every field of :class:`fenix_core.model.Instance` but ``details`` (the
engine's ``apply_inventory`` reads it; a field added to Instance must reach it)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType, SimpleNamespace

import attrs

from fenix_core.constraints import CloudConstraints
from fenix_core.model import Instance, SessionRequest
from fenix_core.operations import OperationRunner
from fenix_core.plugins import Plugins
from fenix_core.testing import SimClock, SimulatedCloud


def _listing_of_cmp_0() -> SimpleNamespace:
    """An inventory operation's row, as the runner reads it: cmp-0's instances."""
    return SimpleNamespace(
        key="s:1", kind="inventory", host=None, instance_id=None, session_id="s",
        params={"hosts": ["cmp-0"], "list_hosts": False}, handle=None, started_at=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC), deadline=None, detail=None,
    )  # fmt: skip


def test_an_inventory_lists_every_instance_field_but_details() -> None:
    clock = SimClock()
    cloud = SimulatedCloud(clock=clock)
    cloud.add_host("cmp-0", vcpus=8)
    cloud.add_instance("vm-1", "p1", "cmp-0", vcpus=2)
    cloud.add_instance("vm-2", "p2", "cmp-0", vcpus=1)
    runner = OperationRunner(Plugins([cloud], clock, load_entry_points=False))
    row = _listing_of_cmp_0()
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


class _Source(SimulatedCloud):
    """A driver with cloud constraints (a ConstraintSource)."""

    def cloud_constraints(self, instances: Sequence[Instance]) -> CloudConstraints:
        return CloudConstraints()


def test_whether_the_driver_has_cloud_constraints_is_checked_once_per_driver() -> None:
    """Every listing carries the driver's cloud constraints, found out by a
    runtime protocol check (~7 us) made once for the driver, not at each
    listing: the later listings make no ``__instancecheck__`` call."""
    clock = SimClock()
    cloud = _Source(clock=clock)
    cloud.add_host("cmp-0", vcpus=8)
    cloud.add_instance("vm-1", "p1", "cmp-0", vcpus=2)
    runner = OperationRunner(Plugins([cloud], clock, load_entry_points=False))
    row = _listing_of_cmp_0()
    request = SessionRequest()
    first = runner.start(row, request, clock.now())  # type: ignore[arg-type]
    assert "cloud_constraints" in first.result
    checks: list[str] = []

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "__instancecheck__":
            checks.append(frame.f_code.co_filename)

    sys.setprofile(profile)
    try:
        listings = [runner.start(row, request, clock.now()) for _ in range(3)]  # type: ignore[arg-type]
    finally:
        sys.setprofile(None)
    assert [s.result["cloud_constraints"] for s in listings] == [
        first.result["cloud_constraints"]
    ] * 3
    assert checks == []
