"""The operation runner asks an action plug-in with the action's spec, read
from the stored operation: its schema is checked once per content, not at
every start and poll, and each call still gets a spec of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

import fenix_core.model
from fenix_core import hookimpl
from fenix_core.clock import SimClock
from fenix_core.hookspecs import ActionContext
from fenix_core.model import OperationStatus, SessionRequest
from fenix_core.operations import OperationRunner
from fenix_core.plugins import Plugins
from fenix_core.store.schema import OperationRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Scribble:
    """An action that writes into the metadata it is given."""

    name = "scribble"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def fenix_actions(self, clock: Any) -> list[Any]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        self.seen.append(dict(context.metadata))
        cast(dict[str, Any], context.metadata)["scribbled"] = True
        return OperationStatus.running(retry_after=10)

    def poll(self, context: ActionContext) -> OperationStatus:
        return self.start(context)


class Row:
    """What OperationRunner reads and writes of an action operation."""

    def __init__(self, key: str, action: Any) -> None:
        self.session_id, self.key, self.kind, self.host = "s", key, "action", "cmp-0"
        self.instance_id, self.handle, self.started_at, self.detail = None, None, None, None
        self.params: dict[str, Any] = {"action": action, "host_type": "compute"}
        self.created_at, self.deadline = T0, None


def run(runner: OperationRunner, row: Row, polls: int) -> list[OperationStatus]:
    request = SessionRequest()
    op = cast(OperationRow, row)
    statuses = [runner.start(op, request, T0)]
    statuses += [runner.poll(op, request, T0 + timedelta(seconds=10 * n)) for n in range(polls)]
    return statuses


def test_the_spec_is_checked_once_and_each_call_gets_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[Any] = []
    real = fenix_core.model.validate

    def counted(schema: Any, data: Any, **kwargs: Any) -> Any:
        checks.append(schema)
        return real(schema, data, **kwargs)

    monkeypatch.setattr(fenix_core.model, "validate", counted)
    action = Scribble()
    runner = OperationRunner(Plugins([action], SimClock(), load_entry_points=False))
    stored = {"plugin": "scribble", "type": "host", "order": 0, "metadata": {"level": 2}}
    for key in ("a", "b"):  # two operations of one stored action
        statuses = run(runner, Row(key, dict(stored, metadata={"level": 2})), polls=3)
        assert [s.state for s in statuses] == ["running"] * 4
    assert len(checks) == 1
    # Each start and poll saw the stored metadata, not what the last call wrote.
    assert action.seen == [{"level": 2}] * 8
    assert stored["metadata"] == {"level": 2}


def test_a_stored_action_that_fails_its_check_fails_each_call() -> None:
    runner = OperationRunner(Plugins([Scribble()], SimClock(), load_entry_points=False))
    statuses = run(runner, Row("a", {"plugin": "scribble", "type": 3}), polls=1)
    assert [s.state for s in statuses] == ["failed", "failed"]
    assert all("action.type" in s.detail for s in statuses)


def test_actions_of_other_contents_get_their_own_specs() -> None:
    action = Scribble()
    runner = OperationRunner(Plugins([action], SimClock(), load_entry_points=False))
    for level in (1, 2, 1, "1"):
        data = {"plugin": "scribble", "type": "host", "metadata": {"level": level}}
        assert run(runner, Row(f"k{level!r}", data), polls=0)[0].state == "running"
    assert action.seen == [{"level": 1}, {"level": 2}, {"level": 1}, {"level": "1"}]
