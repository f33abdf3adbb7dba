"""Disruption budgets in the shared host pipeline (fenix_core.core.pipeline):
percent caps of the session's budget hosts, topology caps over the labels
the session keeps, and windows with their own (percent) budgets, through
HostPipeline and through StepContext (what every contract workflow gets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fake_working_set import FakeWorkingSet

from fenix_core.contract import HostView
from fenix_core.controls import Controls
from fenix_core.core.context import StepContext
from fenix_core.core.pipeline import HostPipeline, PipelineState
from fenix_core.model import SessionRequest
from fenix_core.states import HostState
from fenix_core.testing.contract import FakeContext

T = datetime(2026, 3, 2, 12, tzinfo=UTC)
ZONES = {"a0": "az0", "a1": "az0", "b0": "az1", "b1": "az1", "c0": "az2"}


def _labels(host: str) -> dict[str, str]:
    return {"zone": ZONES[host]} if host in ZONES else {}


def _round_trip(p: HostPipeline) -> HostPipeline:
    """The pipeline of the next step: its state as the store persists it."""
    state = PipelineState.from_json(p.state.to_json(), PipelineState.schema_version)
    return HostPipeline(p.controls, state, hosts=p.hosts, labels=p.labels)


def test_a_percent_cap_is_a_percent_of_the_hosts_the_pipeline_is_given() -> None:
    controls = Controls.from_dict({"max_hosts_in_maintenance": "25%"})
    p = HostPipeline(controls, PipelineState(), hosts=12)
    assert [p.admit(h, T)[0].admitted for h in "abcd"] == [True, True, True, False]
    refused, _ = p.admit("d", T)
    assert "3 (25% of 12 host(s), rounded down)" in (refused.reason or "")


def test_a_topology_cap_keeps_the_open_zones_in_the_constant_state() -> None:
    controls = Controls.from_dict({"max_topology_in_maintenance": [{"key": "zone", "max": 1}]})
    p = HostPipeline(controls, PipelineState(), hosts=5, labels=_labels)
    assert p.admit("a0", T)[0].admitted
    p = _round_trip(p)
    refused, _ = p.admit("b0", T)
    assert (refused.admitted, refused.until) == (False, None)  # only a finish changes it
    assert "zone az1 would be one zone too many" in (refused.reason or "")
    assert p.admit("a1", T)[0].admitted  # its zone is open already
    assert p.state.open_domains == {"zone": {"az0": 2}}
    p.finished("a0", T + timedelta(minutes=5), started_at=T)
    p = _round_trip(p)
    assert not p.admit("b0", T)[0].admitted  # a1 still holds az0
    p.released("a1")  # skipped: its place is free, without a duration
    assert p.state.open_domains == {}
    assert p.admit("b0", T + timedelta(minutes=6))[0].admitted
    assert p.state.open_domains == {"zone": {"az1": 1}}


def test_a_host_without_the_label_is_neither_limited_nor_counted() -> None:
    controls = Controls.from_dict({"max_topology_in_maintenance": [{"key": "zone", "max": 1}]})
    p = HostPipeline(controls, PipelineState(), hosts=6, labels=_labels)
    assert p.admit("a0", T)[0].admitted
    assert p.admit("unlabelled", T)[0].admitted
    assert p.state.open_domains == {"zone": {"az0": 1}}
    p.finished("unlabelled", T, started_at=T)
    assert p.state.open_domains == {"zone": {"az0": 1}}


def test_a_window_budget_in_percent_counts_the_session_hosts() -> None:
    # Monthly on the second Sunday at 01:00 for four hours, half the hosts at once.
    controls = Controls.from_dict(
        {
            "windows": [
                {
                    "rrule": "FREQ=MONTHLY;BYDAY=2SU;BYHOUR=1;BYMINUTE=0;BYSECOND=0",
                    "duration": "4h",
                    "max_hosts_in_maintenance": "50%",
                }
            ],
            "host_seconds": 600,
        }
    )
    opens = datetime(2026, 3, 8, 1, tzinfo=UTC)
    p = HostPipeline(controls, PipelineState(), hosts=6)
    early, _ = p.admit("h0", T - timedelta(days=1))
    assert (early.admitted, early.until) == (False, opens)
    assert [p.admit(f"h{i}", opens)[0].admitted for i in range(4)] == [True, True, True, False]
    full, _ = p.admit("h3", opens)
    assert "at most 3 (50% of 6 host(s), rounded down) at once in any window" in (full.reason or "")


# --------------------------------------------------------------------------- StepContext


def _session(controls: object, *, targets: int = 0) -> FakeWorkingSet:
    """Five hosts to maintain (zones as ZONES) and ``targets`` out of scope."""
    names = list(ZONES)
    hosts = [HostView(n, "compute", HostState.PENDING, 8, True, i) for i, n in enumerate(names)]
    hosts += [
        HostView(f"t{i}", "compute", HostState.OUT_OF_SCOPE, 8, True, len(names) + i)
        for i in range(targets)
    ]
    fake = FakeContext(
        now=T,
        request=SessionRequest.from_dict({"hosts": names, "controls": controls}),
        hosts=hosts,
    )
    ws = FakeWorkingSet(fake)
    ws.labels = {n: _labels(n) for n in names}
    return ws


def test_step_context_resolves_a_percent_cap_against_the_budget_hosts() -> None:
    # 40% of the 5 hosts maintained is 2; the 20 targets do not count.
    ws = _session({"max_hosts_in_maintenance": "40%"}, targets=20)
    ctx = StepContext(ws, T)
    assert [ctx.admit(h).admitted for h in ZONES] == [True, True, False, False, False]
    assert ctx.pipeline.hosts == 5


def test_step_context_applies_topology_caps_with_the_session_labels() -> None:
    ws = _session({"max_topology_in_maintenance": [{"key": "zone", "max": 2}]})
    ctx = StepContext(ws, T)
    admitted = [h for h in ZONES if ctx.admit(h).admitted]
    assert admitted == ["a0", "a1", "b0", "b1"]
    ctx.host_done("a0")
    ctx.set_host_state("b0", HostState.SKIPPED)
    later = StepContext(ws, T + timedelta(minutes=1))  # state read as stored
    assert not later.admit("c0").admitted  # a1 and b1 still hold two zones
    later.host_done("a1")
    assert later.admit("c0").admitted
