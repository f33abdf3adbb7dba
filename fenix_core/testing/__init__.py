"""The testing kit: run workflows and application managers against a
simulated cloud on simulated time.

::

    from fenix_core import Engine, SessionRequest, ActionSpec
    from fenix_core.testing import SimClock, SimulatedCloud, TimedAction, ScriptedManager

    clock = SimClock()
    cloud = SimulatedCloud()
    cloud.add_host("cmp-0", vcpus=8); cloud.add_host("cmp-1", vcpus=8)
    cloud.add_instance("vm-1", project_id="p1", host="cmp-0", vcpus=2)
    upgrade = TimedAction("upgrade", seconds=600)
    engine = Engine(clock=clock, plugins=[cloud, upgrade])
    ScriptedManager(engine, "p1")
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
"""

from __future__ import annotations

from ..clock import SimClock
from .actions import TimedAction
from .cloud import CloudEvent, SimulatedCloud
from .invariants import migrations_per_instance, violations
from .kube_cloud import KubeScheduledCloud
from .manager import ScriptedManager
from .placed_cloud import PlacedCloud

__all__ = [
    "CloudEvent",
    "KubeScheduledCloud",
    "PlacedCloud",
    "ScriptedManager",
    "SimClock",
    "SimulatedCloud",
    "TimedAction",
    "migrations_per_instance",
    "violations",
]
