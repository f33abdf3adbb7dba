"""A finished session's working set is freed when the engine lets it go,
by reference counting, not at the next full cyclic collection: at 1,000
hosts it is ~20 MB of records, and run_until_done loads the session once
more for its view right after the last step."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from conftest import fill

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import SimClock
from fenix_core.core.working_set import WorkingSet
from fenix_core.testing import ScriptedManager, SimulatedCloud, TimedAction
from fenix_core.workflows.constrained import ConstrainedWorkflow
from fenix_core.workflows.rolling import RollingWorkflow

LAYOUT = {
    "cmp-0": [("vm-a1", "pa", 2), ("vm-b1", "pb", 1)],
    "cmp-1": [("vm-a2", "pa", 2)],
    "cmp-2": [],
}


def _working_sets_of(session_id: str) -> list[WorkingSet]:
    return [o for o in gc.get_objects() if isinstance(o, WorkingSet) and o.session.id == session_id]


@pytest.mark.parametrize("workflow", ["rolling", "constrained"])
def test_a_finished_sessions_working_set_is_not_left_to_the_cyclic_collector(
    tmp_path: Path, workflow: str
) -> None:
    """The constrained workflow's step leaves cycles of its own that hold
    the step's context (and so the adapter): dropping the adapter's views is
    not enough there."""
    clock = SimClock()
    cloud = SimulatedCloud(clock=clock)
    fill(cloud, LAYOUT)
    engine = Engine(
        f"sqlite:///{tmp_path / 'fenix.db'}",
        clock=clock,
        plugins=[cloud, TimedAction("upgrade", 600)],
        workflows={"rolling": RollingWorkflow, "constrained": ConstrainedWorkflow},
    )
    try:
        ScriptedManager(engine, "pa")  # type: ignore[arg-type]
        ScriptedManager(engine, "pb")  # type: ignore[arg-type]
        sid = engine.create_session(
            SessionRequest(workflow=workflow, actions=[ActionSpec("upgrade", "host")])
        )
        gc.collect()
        gc.disable()
        try:
            assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
            assert engine.held_sessions() == []
            held = _working_sets_of(sid)
        finally:
            gc.enable()
        assert held == [], "the finished session's records wait for a cyclic collection"
    finally:
        engine.close()
