"""Migration 0008 carries the previous release's first drained hosts over:
their instances may still land on a queued host (issue 21's first wave),
which the contract's waves read from ``FIRST_DRAINED`` in the host's stage."""

from __future__ import annotations

from fenix_core import ActionSpec, SessionRequest
from fenix_core.states import SessionState
from fenix_core.store.migrations.release_constrained import constrained_state
from fenix_core.store.migrations.release_sessions import CoreState, OldHost, OldSession
from fenix_core.workflows import RollingState
from fenix_core.workflows.constrained import FIRST_DRAINED, WE_DISABLED


def test_the_first_drained_hosts_keep_their_mark() -> None:
    hosts = {
        name: OldHost(name, "compute", "DRAINING", 0, False, True)
        for name in ("cmp-0", "cmp-1", "cmp-2")
    }
    session = OldSession(
        id="s-1",
        workflow="constrained",
        state=SessionState.PLANNED_MAINTENANCE,
        phase="waves",
        version=3,
        data={"wave": 1, "first_drained": ["cmp-0", "cmp-1"]},
        request=SessionRequest(workflow="constrained", actions=[ActionSpec("upgrade", "host")]),
        hosts=hosts,
        instances={},
        projects={},
        ops=[],
        timers=[],
    )
    out = CoreState(hosts={name: {"disabled_by_session": True} for name in hosts})
    constrained_state(session, RollingState(), out)
    stages = {name: cols["stage"] for name, cols in out.hosts.items()}
    assert stages == {
        "cmp-0": WE_DISABLED | FIRST_DRAINED,
        "cmp-1": WE_DISABLED | FIRST_DRAINED,
        "cmp-2": WE_DISABLED,
    }
