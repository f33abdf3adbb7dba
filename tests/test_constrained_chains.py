"""The constrained workflow keeps the longest group chains moving (issue 21:
closer to the makespan bound): a host is opened for a group in its
recovery_time, so that its next member is ready when that ends, and the
members that may move now take the room first, host by host. Driven on a
FakeContext by tests/constrained_driver.py (moves and host work take no
time there; recovery_time does)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
from constrained_driver import ConstrainedDriver, cluster, group, member
from contract_driver import LoggingContext

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import Move, RunAction, Watch
from fenix_core.states import HostState, SessionState

UPGRADE = (ActionSpec("upgrade", "host"),)


def outside(ctx: LoggingContext, host: str) -> LoggingContext:
    """``host`` is not maintained by the session: a target where instances stay."""
    ctx._hosts[host] = attrs.evolve(ctx._hosts[host], state=HostState.OUT_OF_SCOPE)
    return ctx


class Timed(ConstrainedDriver):
    """Records when each instance's moves start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.moves_at: dict[str, list[datetime]] = {}
        self.work_at: dict[str, datetime] = {}  # host -> its maintenance action started

    def _check_submitted(self, op: Any) -> None:
        super()._check_submitted(op)
        if isinstance(op, Move | Watch):
            self.moves_at.setdefault(op.instance_id, []).append(self.ctx.now)
        elif isinstance(op, RunAction) and op.host is not None:
            self.work_at.setdefault(op.host, self.ctx.now)


def test_a_host_opens_for_a_group_in_recovery_so_its_next_member_is_ready() -> None:
    # "spare" is outside the session (room where instances stay from the
    # start). h0 goes first; while the chain group recovers from c0's move,
    # h2 (group d, slow) and h1 (the chain's next member) compete for the
    # room there is. A chain in recovery still needs its next host open.
    layout = {
        "spare": [],
        "h0": [("c0", "app", 1), ("a0", "app", 1), ("a1", "app", 1)],
        "h2": [("d0", "app", 1), ("d1", "app", 1), ("d2", "app", 1)],
        "h1": [("c1", "app", 1), ("a2", "app", 1), ("a3", "app", 1)],
    }
    groups = [
        group("chain", "app", max_impacted_members=1, recovery_time=300),
        group("a", "app", max_impacted_members=4, recovery_time=1000),
        group("d", "app", max_impacted_members=1, recovery_time=400),
    ]
    members = [
        member(iid, "app", gid)
        for gid, ids in {
            "chain": ("c0", "c1"),
            "a": ("a0", "a1", "a2", "a3"),
            "d": ("d0", "d1", "d2"),
        }.items()
        for iid in ids
    ]
    ctx = cluster(
        layout,
        vcpus=4,
        groups=groups,
        members=members,
        request=SessionRequest(workflow="constrained", actions=UPGRADE, hosts=("h0", "h1", "h2")),
    )
    outside(ctx, "spare")
    driver = Timed(ctx)
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    (c0,), (c1,) = driver.moves_at["c0"], driver.moves_at["c1"]
    assert (c1 - c0).total_seconds() == 300


def test_open_hosts_empty_one_by_one_rather_than_all_halfway() -> None:
    # Every host opens at once (the spare outside the session has room for
    # all, and each host alone feeds a group of its own: x, m, n); groups g
    # and k may move one member at a time, and each host holds one member of
    # each. h0 goes first; when the groups' recovery_time ends, their budget
    # goes to one host's members (h1's): it is maintained then, instead of
    # h1 and h2 both half-empty until the next recovery_time ends.
    layout = {
        "spare": [],
        "h0": [("g-a", "app", 1), ("k-a", "app", 1), ("x-0", "app", 1)],
        "h1": [("g-b", "app", 1), ("k-c", "app", 1), ("m-0", "app", 1)],
        "h2": [("g-c", "app", 1), ("k-b", "app", 1), ("n-0", "app", 1)],
    }
    ctx = cluster(
        layout,
        vcpus=10,
        groups=[
            group("g", "app", max_impacted_members=1, recovery_time=100),
            group("k", "app", max_impacted_members=1, recovery_time=100),
            *(group(g, "app") for g in ("x", "m", "n")),
        ],
        members=[
            member(iid, "app", iid.partition("-")[0])
            for insts in layout.values()
            for iid, _project, _vcpus in insts
        ],
        request=SessionRequest(workflow="constrained", actions=UPGRADE, hosts=("h0", "h1", "h2")),
    )
    outside(ctx, "spare")
    start = ctx.now
    driver = Timed(ctx)
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    at = {h: (t - start).total_seconds() for h, t in driver.work_at.items()}
    assert at == {"h0": 0, "h1": 100, "h2": 200}
