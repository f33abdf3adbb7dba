"""The v2 rolling workflow's scenarios again, with the hooks given the
engine's own context (core/context.py StepContext over tests'
FakeWorkingSet) instead of FakeContext: the workflow keeps the stricter
rules of the real context too (host admission through the pipeline, the
session lifecycle for every transition, a component state it may not
touch)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
import test_rolling_v2
import test_rolling_v2_decommission
import test_rolling_v2_escalation
import test_rolling_v2_failures
import test_rolling_v2_lifecycle
import test_rolling_v2_replies
import test_rolling_v2_rules
from contract_driver import Driver
from fake_working_set import FakeWorkingSet

from fenix_core.contract import SessionContext
from fenix_core.core.context import StepContext

#: Scenarios that play the pipeline with FakeContext's ``closed`` hosts, or
#: read what only FakeContext records (``done``, ``skipped``), not the views.
FAKE_ONLY = {
    "test_a_closed_window_holds_the_host_until_it_opens",  # closed
    "test_random_fleets_end_with_every_host_maintained_once",  # closed, ctx.done
    "test_the_fenix_sequence_of_notifications_per_project",  # ctx.done
    "test_decommission_of_two_hosts",  # ctx.done
    "test_a_stuck_action_under_skip_host_skips_it_and_the_session_completes",  # ctx.skipped
    "test_a_stuck_migration_under_skip_host_skips_the_host_it_leaves",  # ctx.skipped
}


def scenarios() -> list[Callable[[], None]]:
    found = []
    for module in (
        test_rolling_v2,
        test_rolling_v2_decommission,
        test_rolling_v2_escalation,
        test_rolling_v2_failures,
        test_rolling_v2_lifecycle,
        test_rolling_v2_replies,
        test_rolling_v2_rules,
    ):
        for name, fn in vars(module).items():
            if (
                name.startswith("test_")
                and inspect.isfunction(fn)
                and not inspect.signature(fn).parameters
                and name not in FAKE_ONLY
            ):
                found.append(fn)
    return found


class LoggingWorkingSet(FakeWorkingSet):
    """Questions and notices go through the LoggingContext's own methods,
    so the scenarios read them in its log as they do without the engine's
    context (StepContext checks them first)."""

    def ask_project(
        self,
        project_id: str,
        state: str,
        instance_ids: Sequence[str],
        allowed_actions: Sequence[str],
        metadata: Mapping[str, Any] | None,
        actions_at: datetime | None = None,
    ) -> None:
        self.fake.ask(
            state,
            {project_id: instance_ids},
            allowed_actions=allowed_actions,
            metadata=metadata,
            actions_at=actions_at,
        )

    def notify_host(self, host: str, state: str) -> None:
        self.fake.notify_host(host, state)

    def notify_project(self, project_id: str, state: str, instance_ids: Sequence[str]) -> None:
        self.fake.notify_project(project_id, state, instance_ids)


def engine_context(self: Driver) -> SessionContext:
    return StepContext(LoggingWorkingSet(self.ctx), self.ctx.now)


@pytest.mark.parametrize(
    "scenario",
    # A scenario's own marks (a strict xfail naming a known defect) hold here too.
    [pytest.param(f, marks=getattr(f, "pytestmark", []), id=f.__name__) for f in scenarios()],
)
def test_the_scenario_holds_under_the_engines_context(
    scenario: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Driver, "view", engine_context)
    scenario()
