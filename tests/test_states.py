"""Session lifecycle (shared transitions Machine), host / instance transition tables,
and reply-state parsing."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from itertools import count

import pytest

from fenix_core.errors import IllegalTransition
from fenix_core.states import (
    FINAL_SESSION_STATES,
    HOST_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    SESSION_TRANSITIONS,
    HostState,
    InstanceState,
    SessionLifecycle,
    SessionState,
    check_host_transition,
    check_instance_transition,
    normalize_reply_state,
)

_ids = count()


def _sources(transition: dict[str, object]) -> list[SessionState]:
    source = transition["source"]
    return list(source) if isinstance(source, list) else [source]  # type: ignore[list-item]


Make = Callable[[str], SessionLifecycle]


@pytest.fixture
def lifecycle() -> Iterator[Make]:
    """Make SessionLifecycle models and release them after the test."""
    made: list[SessionLifecycle] = []

    def make(state: str) -> SessionLifecycle:
        model = SessionLifecycle(f"session-{next(_ids)}", state)
        made.append(model)
        return model

    yield make
    for model in made:
        model.release()


LEGAL = [(t["trigger"], source, t["dest"]) for t in SESSION_TRANSITIONS for source in _sources(t)]
ILLEGAL = [
    (t["trigger"], state, t["dest"])
    for t in SESSION_TRANSITIONS
    for state in SessionState
    if state not in _sources(t)
]


def test_tables_cover_the_expected_shape() -> None:
    # Sanity of the parametrisation below: every state but DONE and CANCELLED is the
    # source of some trigger, and some trigger is illegal from every state.
    triggers = {t["trigger"] for t in SESSION_TRANSITIONS}
    assert triggers == {
        "approve",
        "scale_in",
        "prepare",
        "start",
        "plan",
        "complete",
        "done",
        "fail",
        "retry",
        "cancel",
    }
    assert {source for _, source, _ in LEGAL} == set(SessionState) - {
        SessionState.MAINTENANCE_DONE,
        SessionState.MAINTENANCE_CANCELLED,
    }
    assert {state for _, state, _ in ILLEGAL} == set(SessionState)


@pytest.mark.parametrize(("trigger", "source", "dest"), LEGAL)
def test_session_trigger_from_listed_source(
    lifecycle: Make, trigger: str, source: SessionState, dest: SessionState
) -> None:
    model = lifecycle(source.value)
    new_state = model.fire(trigger)
    assert new_state == dest
    assert isinstance(new_state, SessionState)
    assert model.state == dest.value


@pytest.mark.parametrize(("trigger", "source", "dest"), ILLEGAL)
def test_session_trigger_from_unlisted_state(
    lifecycle: Make, trigger: str, source: SessionState, dest: SessionState
) -> None:
    model = lifecycle(source.value)
    with pytest.raises(IllegalTransition) as info:
        model.fire(trigger)
    err = info.value
    assert source.value in str(err)
    assert dest.value in str(err)
    assert (err.source, err.dest) == (source.value, dest.value)
    assert err.session_id == model.session_id
    assert model.state == source.value  # unchanged


def test_unknown_trigger_is_illegal(lifecycle: Make) -> None:
    model = lifecycle("MAINTENANCE")
    with pytest.raises(IllegalTransition) as info:
        model.fire("explode")
    assert "MAINTENANCE" in str(info.value)
    assert model.state == "MAINTENANCE"


@pytest.mark.parametrize("state", list(SessionState))
def test_allowed_triggers_match_the_table(lifecycle: Make, state: SessionState) -> None:
    model = lifecycle(state.value)
    expected = {t["trigger"] for t in SESSION_TRANSITIONS if state in _sources(t)}
    assert set(model.allowed_triggers()) == expected


def test_final_states() -> None:
    assert {
        SessionState.MAINTENANCE_DONE,
        SessionState.MAINTENANCE_FAILED,
        SessionState.MAINTENANCE_CANCELLED,
    } == FINAL_SESSION_STATES


def test_models_are_independent(lifecycle: Make) -> None:
    a = lifecycle("MAINTENANCE")
    b = lifecycle("MAINTENANCE")
    a.fire("fail")
    assert a.state == "MAINTENANCE_FAILED"
    assert b.state == "MAINTENANCE"
    assert b.fire("prepare") == SessionState.PREPARE_MAINTENANCE
    assert a.fire("retry") == SessionState.MAINTENANCE


def test_full_lifecycle_path(lifecycle: Make) -> None:
    model = lifecycle("MAINTENANCE")
    path = ["scale_in", "prepare", "start", "plan", "start", "complete", "done"]
    states = [model.fire(trigger) for trigger in path]
    assert states[-1] == SessionState.MAINTENANCE_DONE
    assert model.allowed_triggers() == []


def test_release_lets_the_model_be_collected() -> None:
    model = SessionLifecycle("to-release", "PLANNED_MAINTENANCE")
    ref = weakref.ref(model)
    model.release()
    del model
    gc.collect()
    assert ref() is None


def test_release_leaves_other_models_working(lifecycle: Make) -> None:
    kept = lifecycle("MAINTENANCE")
    gone = SessionLifecycle("released", "MAINTENANCE")
    ref = weakref.ref(gone)
    gone.release()
    del gone
    gc.collect()
    assert ref() is None
    assert kept.fire("plan") == SessionState.PLANNED_MAINTENANCE
    assert set(kept.allowed_triggers()) == {"scale_in", "start", "complete", "fail", "cancel"}


# --------------------------------------------------------------------------- hosts


# Enum order, not frozenset order: the same list in every process (pytest-xdist).
HOST_LEGAL = [(s, d) for s in HostState for d in HostState if d in HOST_TRANSITIONS[s]]
HOST_ILLEGAL = [
    (s, d) for s in HostState for d in HostState if s != d and d not in HOST_TRANSITIONS[s]
]


def test_host_table_covers_every_state() -> None:
    assert set(HOST_TRANSITIONS) == set(HostState)
    # A maintained host stays maintained unless the cloud loses it.
    assert HOST_TRANSITIONS[HostState.MAINTAINED] == frozenset({HostState.REMOVED})
    assert HostState.IN_MAINTENANCE in HOST_TRANSITIONS[HostState.DRAINED]


@pytest.mark.parametrize(("source", "dest"), HOST_LEGAL)
def test_host_legal(source: HostState, dest: HostState) -> None:
    check_host_transition(source, dest, host="cmp-0")


@pytest.mark.parametrize(("source", "dest"), HOST_ILLEGAL)
def test_host_illegal(source: HostState, dest: HostState) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_host_transition(source, dest, host="cmp-7")
    message = str(info.value)
    assert source.value in message
    assert dest.value in message
    assert "cmp-7" in message
    assert (info.value.source, info.value.dest) == (source.value, dest.value)


@pytest.mark.parametrize("state", list(HostState))
def test_host_same_state_is_a_noop(state: HostState) -> None:
    check_host_transition(state, state)


def test_host_examples() -> None:
    with pytest.raises(IllegalTransition):
        check_host_transition(HostState.MAINTAINED, HostState.PENDING)
    with pytest.raises(IllegalTransition):
        check_host_transition(HostState.PENDING, HostState.MAINTAINED)
    with pytest.raises(IllegalTransition):
        check_host_transition(HostState.OUT_OF_SCOPE, HostState.DRAINING)
    check_host_transition(HostState.FAILED, HostState.PENDING)  # retry


# --------------------------------------------------------------------------- instances


INSTANCE_LEGAL = [
    (s, d) for s in InstanceState for d in InstanceState if d in INSTANCE_TRANSITIONS[s]
]
INSTANCE_ILLEGAL = [
    (s, d)
    for s in InstanceState
    for d in InstanceState
    if s != d and d not in INSTANCE_TRANSITIONS[s]
]


def test_instance_table_covers_every_state() -> None:
    assert set(INSTANCE_TRANSITIONS) == set(InstanceState)
    assert INSTANCE_ILLEGAL  # the table does restrict something


@pytest.mark.parametrize(("source", "dest"), INSTANCE_LEGAL)
def test_instance_legal(source: InstanceState, dest: InstanceState) -> None:
    check_instance_transition(source, dest, instance_id="vm-1")


@pytest.mark.parametrize(("source", "dest"), INSTANCE_ILLEGAL)
def test_instance_illegal(source: InstanceState, dest: InstanceState) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_instance_transition(source, dest, instance_id="vm-42")
    message = str(info.value)
    assert source.value in message
    assert dest.value in message
    assert "vm-42" in message


@pytest.mark.parametrize("state", list(InstanceState))
def test_instance_same_state_is_a_noop(state: InstanceState) -> None:
    check_instance_transition(state, state)


def test_instance_examples() -> None:
    with pytest.raises(IllegalTransition):
        check_instance_transition(InstanceState.PENDING, InstanceState.IN_ACTION)
    with pytest.raises(IllegalTransition):
        check_instance_transition(InstanceState.GONE, InstanceState.DONE)
    check_instance_transition(InstanceState.IN_ACTION, InstanceState.DONE)


# --------------------------------------------------------------------------- replies

AWAITED = ["MAINTENANCE", "SCALE_IN", "PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE",
           "MAINTENANCE_COMPLETE"]  # fmt: skip


@pytest.mark.parametrize("awaited", AWAITED)
def test_normalize_ack_and_nack(awaited: str) -> None:
    assert normalize_reply_state(f"ACK_{awaited}") == (True, awaited)
    assert normalize_reply_state(f"NACK_{awaited}") == (False, awaited)


def test_normalize_in_scale_alias() -> None:
    assert normalize_reply_state("ACK_IN_SCALE") == (True, "SCALE_IN")
    assert normalize_reply_state("NACK_IN_SCALE") == (False, "SCALE_IN")


@pytest.mark.parametrize(
    "state",
    [
        "INSTANCE_ACTION_DONE",
        "ACK_INSTANCE_ACTION_DONE",
        "NACK_ADMIN_ACTION_DONE",
        "ACK_FOO",
        "NACK_",
        "ACK_",
        "",
        "MAINTENANCE",
        "ack_maintenance",
        "ACK_MAINTENANCE_DONE",
        "ACKMAINTENANCE",
        "IN_SCALE",
    ],
)
def test_normalize_non_reply_states(state: str) -> None:
    assert normalize_reply_state(state) is None
