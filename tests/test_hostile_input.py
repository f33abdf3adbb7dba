"""Hostile input at every public entry point: wrong types, nested junk, huge
strings, unicode, NaN / infinity, negative numbers. Each call either succeeds
or raises a FenixError subclass (never a bare KeyError / TypeError /
AttributeError), and a call that raises writes nothing. Project isolation: a
project sees and answers for its own instances only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import row_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fenix_core import Engine, SessionRequest
from fenix_core.errors import FenixError, Forbidden, InvalidInput, NotFound
from fenix_core.schema import SessionRequestSchema
from fenix_core.testing import ScriptedManager, SimClock, SimulatedCloud, TimedAction

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

WORDS = [
    "ACK_MAINTENANCE", "NACK_MAINTENANCE", "ACK_PLANNED_MAINTENANCE", "MIGRATE",
    "LIVE_MIGRATE", "OWN_ACTION", "cmp-0", "cmp-1", "vm-1", "vm-2", "p1", "p2",
    "MAINTENANCE", "rolling", "upgrade", "host", "pre", "2026-01-01T00:00:00Z",
    "9999-12-31T23:59:59-12:00", "", " ", "\x00", "💥", "-1", "NaN",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.text(min_size=256, max_size=3000)
    | st.binary(max_size=8)
    | st.sampled_from(WORDS)
    | st.datetimes(timezones=st.none() | st.just(UTC))
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(
            st.sampled_from(WORDS) | st.text(max_size=6) | st.integers(), inner, max_size=4
        )
    ),
    max_leaves=12,
)
request_like = st.dictionaries(
    st.sampled_from([*SessionRequestSchema.model_fields, "bogus"]), junk, max_size=5
) | st.fixed_dictionaries(
    {},
    optional={
        "hosts": st.lists(st.sampled_from(WORDS) | junk, max_size=3),
        "actions": st.lists(
            st.fixed_dictionaries(
                {"plugin": st.sampled_from(WORDS) | junk, "type": st.sampled_from(WORDS) | junk},
                optional={"order": junk, "metadata": junk},
            ),
            max_size=2,
        ),
        "maintenance_at": junk,
        "metadata": st.dictionaries(st.text(max_size=5), junk, max_size=3),
        "reply_windows": st.dictionaries(st.sampled_from(WORDS), junk, max_size=2),
        "timeouts": st.dictionaries(
            st.sampled_from(["action", "migration", "x"]), junk, max_size=2
        ),
        "max_migration_retries": junk,
    },
)


@pytest.fixture
def world() -> Iterator[tuple[Engine, str]]:
    """An engine whose session waits for p1's and p2's answers to PREPARE_MAINTENANCE."""
    clock = SimClock(start=datetime(2026, 1, 1, tzinfo=UTC))
    cloud = SimulatedCloud()
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        cloud.add_host(host, vcpus=8)
    cloud.add_instance("vm-1", "p1", "cmp-0", vcpus=2)
    cloud.add_instance("vm-2", "p2", "cmp-0", vcpus=2)
    cloud.add_instance("vm-3", "p2", "cmp-1", vcpus=6)
    engine = Engine(
        clock=clock, plugins=[cloud, TimedAction("upgrade", 60)], load_entry_points=False
    )
    manager = ScriptedManager(engine, "p2", silent={"PREPARE_MAINTENANCE"})
    engine.subscribe("p1")
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"]))
    engine.run_until_idle()
    engine.reply(sid, "p1", "ACK_MAINTENANCE")
    engine.run_until_idle()
    assert engine.project_view(sid, "p1").state == "PREPARE_MAINTENANCE"
    yield engine, sid
    manager.close()
    engine.close()


def only_typed_errors(engine: Engine, call: Callable[[], Any]) -> None:
    before = row_counts(engine)
    try:
        call()
    except FenixError:
        assert row_counts(engine) == before, "a call that raised wrote something"
    except RecursionError:  # pragma: no cover - would be a finding
        pytest.fail("nested input exhausted the stack")


@SETTINGS
@given(request=junk | request_like)
def test_create_session(world: tuple[Engine, str], request: Any) -> None:
    engine, _ = world
    only_typed_errors(engine, lambda: engine.create_session(request))


@SETTINGS
@given(session_id=junk, update=junk | request_like, retry=junk)
def test_update_session(
    world: tuple[Engine, str], session_id: Any, update: Any, retry: Any
) -> None:
    engine, sid = world
    only_typed_errors(engine, lambda: engine.update_session(sid, update))
    only_typed_errors(engine, lambda: engine.update_session(sid, retry=retry))
    only_typed_errors(engine, lambda: engine.update_session(session_id, retry=True))


@SETTINGS
@given(
    session_id=junk,
    project_id=st.sampled_from(["p1", "p2", "p3"]) | junk,
    state=st.sampled_from(WORDS) | junk,
    actions=junk | st.dictionaries(st.sampled_from(WORDS) | scalars, st.sampled_from(WORDS) | junk),
)
def test_reply(
    world: tuple[Engine, str], session_id: Any, project_id: Any, state: Any, actions: Any
) -> None:
    engine, sid = world
    only_typed_errors(engine, lambda: engine.reply(sid, project_id, state, actions))
    only_typed_errors(engine, lambda: engine.reply(session_id, "p1", "ACK_MAINTENANCE"))


@SETTINGS
@given(value=junk, other=junk)
def test_lookups_and_subscriptions(world: tuple[Engine, str], value: Any, other: Any) -> None:
    engine, sid = world
    for call in (
        lambda: engine.subscribe(value),
        lambda: engine.unsubscribe(value),
        lambda: engine.get_session(value),
        lambda: engine.delete_session(value),
        lambda: engine.project_view(value, "p1"),
        lambda: engine.project_view(sid, value),
        lambda: engine.project_view(value, other),
    ):
        only_typed_errors(engine, call)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda e, sid: e.update_session(sid, [("retry", True)]), "update"),
        (lambda e, sid: e.subscribe("p\x00"), "project_id"),
        (
            lambda e, sid: e.create_session({"metadata": {"k": float("nan")}, "hosts": ["x\x00"]}),
            "hosts[0]",
        ),
    ],
)
def test_findings_are_typed(world: tuple[Engine, str], call: Any, field: str) -> None:
    engine, sid = world
    with pytest.raises(InvalidInput) as info:
        call(engine, sid)
    assert info.value.field == field


# --------------------------------------------------------------------------- isolation


def test_a_project_sees_only_its_own_instances(world: tuple[Engine, str]) -> None:
    engine, sid = world
    assert [i.instance_id for i in engine.project_view(sid, "p1").instances] == ["vm-1"]
    assert [i.instance_id for i in engine.project_view(sid, "p2").instances] == ["vm-2", "vm-3"]
    with pytest.raises(NotFound):
        engine.project_view(sid, "p3")  # no instances in this session


def test_a_project_cannot_answer_for_another_projects_instance(
    world: tuple[Engine, str],
) -> None:
    engine, sid = world
    before = row_counts(engine)
    awaited = "PREPARE_MAINTENANCE"
    with pytest.raises(Forbidden) as info:
        engine.reply(sid, "p1", f"ACK_{awaited}", {"vm-1": "MIGRATE", "vm-2": "MIGRATE"})
    assert info.value.project_id == "p1"
    assert "vm-2" in str(info.value)
    with pytest.raises(NotFound):
        engine.reply(sid, "p3", f"ACK_{awaited}", {"vm-1": "MIGRATE"})
    assert row_counts(engine) == before


constraint_like = st.dictionaries(
    st.sampled_from(
        [
            "group_id", "project_id", "group_name", "anti_affinity_group",
            "max_instances_per_host", "max_impacted_members", "recovery_time",
            "resource_mitigation", "instance_id", "instance_name", "max_interruption_time",
            "migration_type", "lead_time", "bogus",
        ]
    ),
    junk | st.sampled_from(["g-1", "p1", "vm-1", "LIVE_MIGRATE", "MIGRATE"]),
    max_size=8,
)  # fmt: skip


@SETTINGS
@given(value=junk | constraint_like, group=st.none() | junk | constraint_like, acting=junk)
def test_constraint_api(world: tuple[Engine, str], value: Any, group: Any, acting: Any) -> None:
    engine, _ = world
    for call in (
        lambda: engine.set_group_constraints(value, project_id=acting),
        lambda: engine.set_group_constraints(value),
        lambda: engine.set_instance_constraints(value, group=group),
        lambda: engine.set_instance_constraints(value, group=group, project_id=acting),
        lambda: engine.get_group_constraints(value, project_id=acting),
        lambda: engine.get_instance_constraints(value),
        lambda: engine.list_group_constraints(acting),
        lambda: engine.list_instance_constraints(acting),
        lambda: engine.delete_group_constraints(value, project_id=acting),
        lambda: engine.delete_instance_constraints(value),
    ):
        only_typed_errors(engine, call)
