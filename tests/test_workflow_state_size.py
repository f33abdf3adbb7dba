"""A workflow's persisted state has a constant size (plan §2.5): no list in it
grows with hosts or instances; per-host and per-instance facts live on the
host and instance records."""

from __future__ import annotations

import json

import attrs
import pytest
from contract_driver import Driver, LoggingContext, start_time

from fenix_core import SessionRequest
from fenix_core.contract import HostView, InstanceView, ProjectView
from fenix_core.states import HostState, InstanceState, SessionState
from fenix_core.workflows import RollingState, RollingWorkflow


class Measuring(Driver):
    largest = 0

    def _step(self) -> None:
        super()._step()
        for comp in self.ctx.components.values():
            self.largest = max(self.largest, len(json.dumps(comp.to_json())))


def largest_state(n_hosts: int) -> int:
    names = [f"cmp-{k:04d}" for k in range(n_hosts)]
    # Instances on one host in fifteen; the others are empty (cheap for the
    # brute-force FakeContext, and the state must not see the difference).
    instances = [
        InstanceView(f"vm-{k:04d}-{j}", f"p{k % 3}", name, 1, InstanceState.PENDING)
        for k, name in enumerate(names)
        if k % 15 == 0
        for j in range(2)
    ]
    ctx = LoggingContext(
        now=start_time(),
        request=SessionRequest(hosts=tuple(names), max_migration_retries=2),
        hosts=[HostView(n, "compute", HostState.PENDING, 8, True, k) for k, n in enumerate(names)],
        instances=instances,
        projects=[ProjectView(f"p{k}", k != 2, None, None) for k in range(3)],
    )
    driver = Measuring(
        ctx,
        RollingWorkflow(),
        # a refusal and a failure, so the move-retry fields are filled once
        refuse_first=frozenset({"vm-0015-0"}),
        fail_moves={"vm-0000-1": 1},
    )
    driver.run(limit=200_000)
    assert not driver.refuse_first  # the refusal happened
    assert driver.fail_moves == {"vm-0000-1": 0}
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert len(ctx.hosts.in_state(HostState.MAINTAINED)) == n_hosts
    return driver.largest


@pytest.mark.no_cover
def test_rolling_state_is_the_same_size_at_30_and_300_hosts() -> None:
    small, large = largest_state(30), largest_state(300)
    assert small > 0
    assert large == small  # names are of fixed width: not one byte more


def test_rolling_state_holds_scalars_and_one_moves_refusals_only() -> None:
    for field in attrs.fields(RollingState):
        assert field.type in ("str", "int", "bool", "str | None", "tuple[str, ...]"), field
    tuples = [f.name for f in attrs.fields(RollingState) if f.type == "tuple[str, ...]"]
    # bounded by one instance's attempts (max_migration_retries + 1), not the
    # fleet: the hosts that refused it, and why each did
    assert tuples == ["refused", "refusals"]
