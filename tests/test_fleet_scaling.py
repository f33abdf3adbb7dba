"""What a session does once per host or once per instance costs about the
same at any fleet size: 10x the fleet costs about 10x, not 100x (issue 18's
10,000-host run). Each test times one piece of work at two sizes, 10x apart,
and fails on growth of 30x or more (a loop over the fleet per host measures
about 100x)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from scaling import growth

from fenix_core import ActionSpec, SessionRequest
from fenix_core.core.factory import CloudRead, SessionFactory
from fenix_core.model import Host

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
LINEAR = 30.0  # for 10x the size: linear measures ~10x, quadratic ~100x


def test_a_session_s_initial_rows_cost_linear_time_in_its_hosts() -> None:
    # Each host outside the scope was looked up in the union of the scope
    # and the added hosts, built again for each host.
    request = SessionRequest(
        workflow="rolling", actions=[ActionSpec(plugin="upgrade", type="host")]
    )

    def rows_of(hosts: int) -> Callable[[], object]:
        listed = tuple(Host(f"compute-{n:05d}", vcpus=24) for n in range(hosts))
        read = CloudRead(
            hosts=listed,
            instances=(),
            allowed=("LIVE_MIGRATE",),
            found=None,
            scope=tuple(h.name for h in listed),
            gone=(),
            host_guard=False,
        )
        return lambda: SessionFactory.records(request, read, subscribed=(), session_id="s", now=T0)

    assert growth(rows_of, 400, 4_000) < LINEAR
