"""examples/custom_workflow.py, the example of docs/plugins.md: it runs on the
engine and on FakeContext, and a maintenance window closed now keeps it from
disabling a host until the window opens: on the engine, on FakeContext (a
closed host) and through the host pipeline alone (StepContext with the
request's windows)."""

from __future__ import annotations

import re
import runpy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_working_set import FakeWorkingSet

from fenix_core.contract import DisableHost, EnableHost, InstanceView, RunAction
from fenix_core.core.context import PIPELINE_TIMER, StepContext
from fenix_core.states import HostState, InstanceState, SessionState

ROOT = Path(__file__).parents[1]
EXAMPLE = runpy.run_path(str(ROOT / "examples" / "custom_workflow.py"))
EmptyHostsOnly: Any = EXAMPLE["EmptyHostsOnly"]
fleet: Any = EXAMPLE["fleet"]
run: Any = EXAMPLE["run"]

NIGHTLY = {"windows": [{"start": "22:00", "end": "04:00"}]}
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OPENS = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


PART_OF_THE_EXAMPLE = "# not run\n# (a part of examples/custom_workflow.py, which the tests run)\n"


def test_the_page_shows_the_example_as_it_is() -> None:
    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", page, re.MULTILINE | re.DOTALL)
    shown = [
        b.removeprefix(PART_OF_THE_EXAMPLE) for b in blocks if b.startswith(PART_OF_THE_EXAMPLE)
    ]
    assert len(shown) == 2  # the workflow, and its registration
    source = (ROOT / "examples" / "custom_workflow.py").read_text(encoding="utf-8")
    for block in shown:
        assert block.strip() in source


def test_on_the_engine_a_window_closed_now_delays_the_first_host_until_it_opens() -> None:
    view, upgrade = EXAMPLE["on_an_engine"](NIGHTLY)
    assert view.state == SessionState.MAINTENANCE_DONE
    assert upgrade.runs == [(OPENS, "ctl-0"), (OPENS + timedelta(minutes=10), "cmp-0")]
    assert view.host("ctl-0").started_at == OPENS


def test_on_the_engine_without_controls_the_hosts_go_at_once() -> None:
    view, upgrade = EXAMPLE["on_an_engine"]()
    assert view.state == SessionState.MAINTENANCE_DONE
    assert [host for _, host in upgrade.runs] == ["ctl-0", "cmp-0"]
    assert upgrade.runs[0][0] == NOON


def test_the_example_maintains_both_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    assert EXAMPLE["main"]() == 0
    assert capsys.readouterr().out.splitlines()[-1] == "session MAINTENANCE_DONE"
    ctx = fleet()
    run(EmptyHostsOnly(), ctx, ctx.submitted)
    kinds = [(type(op).__name__, getattr(op, "host", None)) for _, op in ctx.submitted]
    assert kinds == [
        ("DisableHost", "ctl-0"),
        ("RunAction", "ctl-0"),
        ("EnableHost", "ctl-0"),
        ("DisableHost", "cmp-0"),
        ("RunAction", "cmp-0"),
        ("EnableHost", "cmp-0"),
    ]
    assert [h.state for h in ctx.hosts][:2] == [HostState.MAINTAINED, HostState.MAINTAINED]
    assert ctx.done == {"ctl-0", "cmp-0"}


def test_a_compute_host_with_an_instance_fails_the_session() -> None:
    ctx = fleet()
    ctx._instances["vm-2"] = InstanceView("vm-2", "web", "cmp-0", 2, InstanceState.PENDING)
    run(EmptyHostsOnly(), ctx, ctx.submitted)
    assert ctx.session.state is SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == "cmp-0 is not empty"


def test_a_closed_host_is_not_disabled_until_it_opens_on_fake_context() -> None:
    workflow = EmptyHostsOnly()
    ctx = fleet(closed={"ctl-0": "outside the maintenance window"})
    run(workflow, ctx, ctx.submitted)
    assert ctx.submitted == []
    assert ctx.session.state == "START_MAINTENANCE"  # waits in its state
    ctx.closed.clear()
    run(workflow, ctx, ctx.submitted, started=True)
    assert ctx.submitted[0][1] == DisableHost("ctl-0")
    assert ctx.session.state is SessionState.MAINTENANCE_DONE


def test_a_window_closed_now_keeps_the_workflow_from_disabling_a_host_until_it_opens() -> None:
    ws = FakeWorkingSet(fleet(controls=NIGHTLY))
    workflow = EmptyHostsOnly()
    ctx = StepContext(ws, NOON)
    run(workflow, ctx, ws.fake.submitted)
    assert ws.fake.submitted == []  # nothing disabled at noon
    assert ws.fake.timers[PIPELINE_TIMER][0] == OPENS  # the engine wakes it at 22:00
    late = StepContext(ws, datetime(2026, 3, 2, 21, 59, tzinfo=UTC))
    run(workflow, late, ws.fake.submitted, started=True)
    assert ws.fake.submitted == []
    opened = StepContext(ws, OPENS)
    run(workflow, opened, ws.fake.submitted, started=True)
    ops = [op for _, op in ws.fake.submitted]
    assert ops[0] == DisableHost("ctl-0")
    assert isinstance(ops[1], RunAction)
    assert ops[2] == EnableHost("ctl-0")
    assert ws.fake._hosts["ctl-0"].started_at == OPENS
    assert ws.fake.session.state is SessionState.MAINTENANCE_DONE


def test_a_cap_of_one_host_at_once_holds_for_the_example() -> None:
    ws = FakeWorkingSet(fleet(controls={"max_hosts_in_maintenance": 1, "settle_seconds": 600}))
    workflow = EmptyHostsOnly()
    run(workflow, StepContext(ws, NOON), ws.fake.submitted)
    # ctl-0 done at noon; cmp-0 waits for the settle delay
    assert [getattr(op, "host", None) for _, op in ws.fake.submitted] == ["ctl-0"] * 3
    assert ws.fake.timers[PIPELINE_TIMER][0] == datetime(2026, 3, 2, 12, 10, tzinfo=UTC)
    run(
        workflow,
        StepContext(ws, datetime(2026, 3, 2, 12, 10, tzinfo=UTC)),
        ws.fake.submitted,
        started=True,
    )
    assert ws.fake.session.state is SessionState.MAINTENANCE_DONE
