"""The workflow contract's types (fenix_core.contract): the op kinds and
statuses are the strings today's operations table holds, ops are frozen
values, component state round-trips through JSON and refuses what it cannot
read, and a Workflow subclass with a misspelt hook fails when defined."""

from __future__ import annotations

import typing
from enum import StrEnum

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import (
    HOOKS,
    ComponentState,
    ContractError,
    DisableHost,
    Move,
    Operation,
    OpKind,
    OpStatus,
    RunAction,
    SessionContext,
    Workflow,
)
from fenix_core.contract.ops import kind_of
from fenix_core.errors import InvalidInput
from fenix_core.model import OperationView
from fenix_core.operations import OperationRunner
from fenix_core.plugins import Plugins
from fenix_core.states import InstanceAction
from fenix_core.testing import SimClock


def test_op_kinds_are_the_kinds_the_operation_runner_starts() -> None:
    # Two tables of one fact: the runner's dispatch and the enum.
    runner = OperationRunner(Plugins([], SimClock(), load_entry_points=False))
    assert {k.value for k in OpKind} == runner.kinds


def test_op_statuses_are_the_ones_operation_views_document() -> None:
    doc = OperationView.__doc__ or ""
    for status in OpStatus:
        assert status.value in doc
    assert "abandoned" in {s.value for s in OpStatus}


def test_every_operation_class_has_its_own_kind_and_no_one_submits_a_gate() -> None:
    classes = typing.get_args(Operation)
    kinds = [kind_of(cls.__new__(cls)) for cls in classes]
    assert len(set(kinds)) == len(classes)
    assert OpKind.GATE not in kinds  # gates belong to the host pipeline
    assert OpKind.QUEUE_HOSTS not in kinds  # steering belongs to the core


def test_ops_are_frozen_values() -> None:
    move = Move("vm-1", InstanceAction.LIVE_MIGRATE)
    assert move == Move("vm-1", InstanceAction.LIVE_MIGRATE)
    assert hash(move) == hash(Move("vm-1", InstanceAction.LIVE_MIGRATE))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        move.target = "cmp-1"  # type: ignore[misc]
    assert RunAction(ActionSpec("upgrade", "host"), "host", "cmp-0").host == "cmp-0"
    assert DisableHost("cmp-0").reason == "maintenance"


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@attrs.define(slots=True)
class Counters(ComponentState):
    component: typing.ClassVar[str] = "counters"
    started: int = 0
    last_host: str | None = None
    colour: Colour = Colour.RED


@given(
    started=st.integers(min_value=0, max_value=10**9),
    last_host=st.none() | st.text(max_size=20),
    colour=st.sampled_from(Colour),
)
def test_component_state_round_trips_through_json(
    started: int, last_host: str | None, colour: Colour
) -> None:
    state = Counters(started=started, last_host=last_host, colour=colour)
    body = state.to_json()
    assert body["colour"] == colour.value  # plain JSON, no enum objects
    again = Counters.from_json(body, Counters.schema_version)
    assert again.started == started
    assert again.last_host == last_host
    assert Colour(again.colour) is colour


def test_component_state_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ContractError, match="schema version 7"):
        Counters.from_json({"started": 1}, 7)
    with pytest.raises(ContractError, match=r"unknown field\(s\).*'paused'"):
        Counters.from_json({"started": 1, "paused": True}, 1)


def test_a_component_state_needs_its_name() -> None:
    with pytest.raises(ContractError, match="Nameless: a ComponentState needs"):

        @attrs.define(slots=True)
        class Nameless(ComponentState):
            value: int = 0


class Minimal(Workflow):
    name = "minimal"

    def start(self, ctx: SessionContext) -> None:
        pass

    def advance(self, ctx: SessionContext) -> None:
        pass


def test_a_misspelt_workflow_hook_fails_when_the_class_is_defined() -> None:
    with pytest.raises(ContractError) as info:

        class Typo(Minimal):
            def on_replies(self, ctx: SessionContext) -> None:
                pass

    assert info.value.subject == "Typo.on_replies"
    assert "on_reply" in str(info.value)


def test_start_and_advance_are_required() -> None:
    class HalfDone(Workflow):
        name = "half"

        def start(self, ctx: SessionContext) -> None:
            pass

    with pytest.raises(TypeError, match="advance"):
        HalfDone()  # type: ignore[abstract]
    assert {"start", "advance", "on_reply", "on_operation", "on_timer"} <= HOOKS
    Minimal()


def test_validate_request_names_the_field() -> None:
    good = SessionRequest(actions=[ActionSpec("upgrade", "host")])
    Minimal.validate_request(good, ["upgrade"])
    with pytest.raises(InvalidInput) as info:
        Minimal.validate_request(good, ["reboot"])
    assert info.value.field == "actions[0].plugin"

    class HostsOnly(Minimal):
        action_types = ("host",)

    with pytest.raises(InvalidInput) as info:
        HostsOnly.validate_request(SessionRequest(actions=[ActionSpec("x", "pre")]), ["x"])
    assert info.value.field == "actions[0].type"
