"""Request and reply value objects: validation, field paths in errors, round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.errors import InvalidInput
from fenix_core.model import (
    DEFAULT_REPLY_WINDOWS,
    DEFAULT_TIMEOUTS,
    ActionSpec,
    Reply,
    SessionRequest,
    SessionUpdate,
    parse_time,
)

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True)


def invalid(call: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    """Run ``call`` and return the InvalidInput it raises (fail if it does not)."""
    with pytest.raises(InvalidInput) as info:
        call(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:30:00Z", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00+00:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T14:30:00+02:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T07:30:00-05:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),  # naive = UTC
        ("2026-03-01T12:30:00.250000Z", datetime(2026, 3, 1, 12, 30, 0, 250000, tzinfo=UTC)),
        ("  2026-03-01T12:30:00Z  ", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_parse_time_iso_strings(text: str, expected: datetime) -> None:
    parsed = parse_time(text, "maintenance_at")
    assert parsed == expected
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


def test_parse_time_datetimes() -> None:
    naive = datetime(2026, 5, 1, 8, 0)
    assert parse_time(naive, "f") == datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    plus_two = datetime(2026, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    parsed = parse_time(plus_two, "f")
    assert parsed == datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    assert parsed is not None
    assert parsed.tzinfo == UTC
    assert parse_time(None, "f") is None


@pytest.mark.parametrize("value", ["tomorrow", "", "2026-13-01T00:00:00", "12:00 today"])
def test_parse_time_rejects_bad_strings(value: str) -> None:
    err = invalid(parse_time, value, "maintenance_at")
    assert err.field == "maintenance_at"
    assert repr(value) in str(err)


@pytest.mark.parametrize("value", [12345, 1.5, [], {}, True])
def test_parse_time_rejects_other_types(value: object) -> None:
    assert invalid(parse_time, value, "when").field == "when"


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_parse_time_out_of_range_is_invalid_input(value: str) -> None:
    assert invalid(parse_time, value, "maintenance_at").field == "maintenance_at"


# --------------------------------------------------------------------------- ActionSpec


def test_action_spec_defaults_and_to_dict() -> None:
    action = ActionSpec(plugin="upgrade", type="host")
    assert (action.order, dict(action.metadata)) == (0, {})
    assert action.to_dict() == {"plugin": "upgrade", "type": "host", "order": 0, "metadata": {}}
    full = ActionSpec.from_dict(
        {"plugin": "fw", "type": "compute", "order": 3, "metadata": {"v": "2.1"}}
    )
    assert full == ActionSpec("fw", "compute", 3, {"v": "2.1"})
    assert ActionSpec.from_dict(full.to_dict()) == full


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"plugin": "", "type": "host"}, "plugin"),
        ({"plugin": 7, "type": "host"}, "plugin"),
        ({"plugin": "p", "type": None}, "type"),
        ({"plugin": "p", "type": "  "}, "type"),
        ({"plugin": "p", "type": "host", "order": -1}, "order"),
        ({"plugin": "p", "type": "host", "order": 1.5}, "order"),
        ({"plugin": "p", "type": "host", "order": True}, "order"),
        ({"plugin": "p", "type": "host", "metadata": [1]}, "metadata"),
        ({"plugin": "x" * 256, "type": "host"}, "plugin"),
    ],
)
def test_action_spec_constructor_rejects(kwargs: dict[str, Any], field: str) -> None:
    assert invalid(ActionSpec, **kwargs).field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("upgrade", "actions[2]"),
        ({"type": "host"}, "actions[2].plugin"),
        ({"plugin": "p"}, "actions[2].type"),
        ({"plugin": "p", "type": 1}, "actions[2].type"),
        ({"plugin": "p", "type": "host", "order": "1"}, "actions[2].order"),
        ({"plugin": "p", "type": "host", "metadata": "x"}, "actions[2].metadata"),
        ({"plugin": "p", "type": "host", "when": "now"}, "actions[2].when"),
    ],
)
def test_action_spec_from_dict_names_the_field(data: object, field: str) -> None:
    assert invalid(ActionSpec.from_dict, data, field="actions[2]").field == field


# --------------------------------------------------------------------------- SessionRequest


def test_session_request_defaults() -> None:
    request = SessionRequest()
    assert request.hosts == ()
    assert request.workflow == "rolling"
    assert request.maintenance_at is None
    assert request.actions == ()
    assert dict(request.metadata) == {}
    assert request.project_policy == "default"
    assert request.reply_policy == "fail"
    assert request.state == "MAINTENANCE"
    assert request.download == ()
    assert request.max_migration_retries == 2
    for state, seconds in DEFAULT_REPLY_WINDOWS.items():
        assert request.reply_window(state) == seconds
    for kind, seconds in DEFAULT_TIMEOUTS.items():
        assert request.timeout(kind) == seconds


def test_session_request_constructor_converts() -> None:
    request = SessionRequest(
        hosts=["cmp-0", "cmp-1"],
        maintenance_at="2026-02-01T10:00:00+01:00",
        actions=[ActionSpec("upgrade", "host"), {"plugin": "post-check", "type": "post"}],
        download=["http://repo/img"],
        reply_windows={"MAINTENANCE": 60},
        timeouts={"migration": 120.5},
    )
    assert request.hosts == ("cmp-0", "cmp-1")
    assert request.maintenance_at == datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    assert request.actions == (ActionSpec("upgrade", "host"), ActionSpec("post-check", "post"))
    assert request.download == ("http://repo/img",)
    assert request.reply_window("MAINTENANCE") == 60.0
    assert request.reply_window("SCALE_IN") == DEFAULT_REPLY_WINDOWS["SCALE_IN"]
    assert request.timeout("migration") == 120.5
    assert request.timeout("action") == DEFAULT_TIMEOUTS["action"]


FENIX_JSON: dict[str, Any] = {
    "hosts": ["overcloud-novacompute-0", "overcloud-novacompute-1"],
    "state": "MAINTENANCE",
    "maintenance_at": "2026-06-01T20:00:00Z",
    "metadata": {"openstack_version": "Train"},
    "workflow": "rolling",
    "download": ["http://repo/upgrade.tar"],
    "actions": [
        {"plugin": "dummy", "type": "host", "metadata": {"foo": "bar"}},
        {"plugin": "pre-check", "type": "pre", "order": 1},
    ],
}


def test_session_request_from_fenix_json() -> None:
    request = SessionRequest.from_dict(FENIX_JSON)
    assert request.hosts == ("overcloud-novacompute-0", "overcloud-novacompute-1")
    assert request.state == "MAINTENANCE"
    assert request.maintenance_at == datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
    assert dict(request.metadata) == {"openstack_version": "Train"}
    assert request.workflow == "rolling"
    assert request.download == ("http://repo/upgrade.tar",)
    assert request.actions == (
        ActionSpec("dummy", "host", 0, {"foo": "bar"}),
        ActionSpec("pre-check", "pre", 1),
    )


def test_session_request_from_dict_extensions_and_nulls() -> None:
    request = SessionRequest.from_dict(
        {
            "hosts": None,
            "maintenance_at": None,
            "workflow": None,
            "project_policy": "fail",
            "reply_policy": "default",
            "reply_windows": {"PLANNED_MAINTENANCE": 30, "SCALE_IN": 45.5},
            "timeouts": {"host_up": 900, "own_action": 10},
            "max_migration_retries": 0,
        }
    )
    assert request.hosts == ()
    assert request.maintenance_at is None
    assert request.workflow == "rolling"  # null means the default
    assert request.project_policy == "fail"
    assert request.reply_policy == "default"
    assert request.reply_window("PLANNED_MAINTENANCE") == 30.0
    assert request.reply_window("SCALE_IN") == 45.5
    assert request.timeout("host_up") == 900.0
    assert request.timeout("own_action") == 10.0
    assert request.max_migration_retries == 0


BAD_REQUESTS: list[tuple[object, str]] = [
    ([], "request"),
    ("hosts=a", "request"),
    ({"hostz": ["a"]}, "hostz"),
    ({"hosts": "cmp-0"}, "hosts"),
    ({"hosts": {"cmp-0": 1}}, "hosts"),
    ({"hosts": 3}, "hosts"),
    ({"hosts": [3]}, "hosts[0]"),
    ({"hosts": ["a", ""]}, "hosts[1]"),
    ({"hosts": ["a", "b", "a"]}, "hosts[2]"),
    ({"hosts": ["a", "h" * 256]}, "hosts[1]"),
    ({"workflow": ""}, "workflow"),
    ({"workflow": 5}, "workflow"),
    ({"state": "MAINTENANCE_DONE"}, "state"),
    ({"maintenance_at": "soon"}, "maintenance_at"),
    ({"maintenance_at": 1700000000}, "maintenance_at"),
    ({"metadata": ["a"]}, "metadata"),
    ({"metadata": "a"}, "metadata"),
    ({"download": "http://x"}, "download"),
    ({"download": ["http://x", 5]}, "download[1]"),
    ({"actions": {"plugin": "p", "type": "host"}}, "actions"),
    ({"actions": ["upgrade"]}, "actions[0]"),
    ({"actions": [{"plugin": "p", "type": "host"}, {"plugin": "q"}]}, "actions[1].type"),
    ({"actions": [{"plugin": "p", "type": "host"}, {"type": "host"}]}, "actions[1].plugin"),
    ({"actions": [{"plugin": "p", "type": "host"}, {"plugin": "q", "type": 1}]}, "actions[1].type"),
    ({"actions": [{"plugin": "p", "type": "host", "order": -2}]}, "actions[0].order"),
    ({"actions": [{"plugin": "p", "type": "host", "metadata": 1}]}, "actions[0].metadata"),
    ({"actions": [{"plugin": "p", "type": "host", "bogus": 1}]}, "actions[0].bogus"),
    ({"project_policy": "ignore"}, "project_policy"),
    ({"reply_policy": "retry"}, "reply_policy"),
    ({"reply_windows": [1]}, "reply_windows"),
    ({"reply_windows": {"FOO": 10}}, "reply_windows.FOO"),
    ({"reply_windows": {"MAINTENANCE": 0}}, "reply_windows.MAINTENANCE"),
    ({"reply_windows": {"SCALE_IN": "10"}}, "reply_windows.SCALE_IN"),
    ({"reply_windows": {"SCALE_IN": True}}, "reply_windows.SCALE_IN"),
    ({"reply_windows": {"SCALE_IN": float("inf")}}, "reply_windows.SCALE_IN"),
    ({"reply_windows": {"SCALE_IN": float("nan")}}, "reply_windows.SCALE_IN"),
    ({"timeouts": {"migration": -1}}, "timeouts.migration"),
    ({"timeouts": {"migration": None}}, "timeouts.migration"),
    ({"timeouts": {"reboot": 10}}, "timeouts.reboot"),
    ({"timeouts": "3600"}, "timeouts"),
    ({"max_migration_retries": -1}, "max_migration_retries"),
    ({"max_migration_retries": 21}, "max_migration_retries"),
    ({"max_migration_retries": 2.0}, "max_migration_retries"),
    ({"max_migration_retries": True}, "max_migration_retries"),
    ({"max_migration_retries": "2"}, "max_migration_retries"),
]


@pytest.mark.parametrize(("data", "field"), BAD_REQUESTS)
def test_session_request_from_dict_names_the_bad_field(data: object, field: str) -> None:
    err = invalid(SessionRequest.from_dict, data)
    assert err.field == field
    assert str(err).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hosts": ["a", 1]}, "hosts[1]"),
        ({"hosts": ["a", "a"]}, "hosts[1]"),
        ({"actions": [ActionSpec("p", "host"), 5]}, "actions[1]"),
        ({"metadata": 3}, "metadata"),
        ({"maintenance_at": object()}, "maintenance_at"),
        ({"reply_windows": {"NOPE": 1}}, "reply_windows.NOPE"),
        ({"timeouts": {"action": 0}}, "timeouts.action"),
        ({"project_policy": None}, "project_policy"),
    ],
)
def test_session_request_constructor_names_the_bad_field(
    kwargs: dict[str, Any], field: str
) -> None:
    assert invalid(SessionRequest, **kwargs).field == field


@pytest.mark.parametrize("field", ["reply_windows", "timeouts"])
def test_huge_integer_seconds_are_invalid_input(field: str) -> None:
    key = "MAINTENANCE" if field == "reply_windows" else "migration"
    err = invalid(SessionRequest.from_dict, {field: {key: 10**400}})
    assert err.field == f"{field}.{key}"


def test_mixed_type_keys_are_invalid_input() -> None:
    invalid(SessionRequest.from_dict, {1: "x", "hostz": []})


def test_session_request_round_trip_full() -> None:
    request = SessionRequest(
        hosts=["c0", "c1"],
        workflow="constrained",
        maintenance_at=datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
        actions=[ActionSpec("a", "pre", 2, {"k": [1, 2]}), ActionSpec("b", "host")],
        metadata={"x": {"y": None}},
        project_policy="fail",
        reply_policy="default",
        download=["u1", "u2"],
        reply_windows={"MAINTENANCE": 12.5},
        timeouts={"migration": 77},
        max_migration_retries=5,
    )
    data = request.to_dict()
    assert data["maintenance_at"] == "2026-01-02T03:04:05.000678+00:00"
    assert SessionRequest.from_dict(data) == request
    assert SessionRequest.coerce(data) == request
    assert SessionRequest.coerce(request) is request


# JSON-like values, and requests built from the real field names with random values.
# JSON integers have no size limit, so neither do these.

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "hosts",
        "state",
        "maintenance_at",
        "metadata",
        "workflow",
        "download",
        "actions",
        "project_policy",
        "reply_policy",
        "reply_windows",
        "timeouts",
        "max_migration_retries",
    ]
)
plausible = st.one_of(
    json_values,
    st.sampled_from(["MAINTENANCE", "rolling", "default", "fail", "2026-01-01T00:00:00Z"]),
    st.lists(st.text(max_size=6) | st.integers(), max_size=4),
    st.dictionaries(
        st.sampled_from([*DEFAULT_REPLY_WINDOWS, *DEFAULT_TIMEOUTS, "FOO"]),
        st.integers(min_value=-5, max_value=10**6) | st.floats() | json_scalars,
        max_size=3,
    ),
    st.lists(
        st.dictionaries(
            st.sampled_from(["plugin", "type", "order", "metadata", "extra"]),
            json_values,
            max_size=5,
        ),
        max_size=3,
    ),
)
requests_like = json_values | st.dictionaries(field_names, plausible, max_size=8)


@pytest.mark.no_cover
@PROPERTY
@given(requests_like)
def test_from_dict_raises_only_invalid_input(data: object) -> None:
    try:
        request = SessionRequest.from_dict(data)
    except InvalidInput:
        return  # the only error allowed; anything else fails the test
    # What validates, round-trips.
    assert SessionRequest.from_dict(request.to_dict()) == request


host_names = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=12)
action_specs = st.builds(
    ActionSpec,
    plugin=host_names,
    type=st.sampled_from(["pre", "host", "compute", "controller", "post"]),
    order=st.integers(min_value=0, max_value=100),
    metadata=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
valid_requests = st.builds(
    SessionRequest,
    hosts=st.lists(host_names, unique=True, max_size=5),
    workflow=st.sampled_from(["rolling", "constrained"]),
    maintenance_at=st.none() | st.datetimes(timezones=st.just(UTC)),
    actions=st.lists(action_specs, max_size=3),
    metadata=st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    project_policy=st.sampled_from(["default", "fail"]),
    reply_policy=st.sampled_from(["default", "fail"]),
    download=st.lists(host_names, max_size=2),
    reply_windows=st.dictionaries(
        st.sampled_from(list(DEFAULT_REPLY_WINDOWS)), st.integers(1, 10**5) | st.floats(0.1, 1e5)
    ),
    timeouts=st.dictionaries(
        st.sampled_from(list(DEFAULT_TIMEOUTS)), st.integers(1, 10**5) | st.floats(0.1, 1e5)
    ),
    max_migration_retries=st.integers(0, 20),
)


@pytest.mark.no_cover
@PROPERTY
@given(valid_requests)
def test_round_trip(request: SessionRequest) -> None:
    assert SessionRequest.from_dict(request.to_dict()) == request


# --------------------------------------------------------------------------- SessionUpdate


def test_session_update_from_dict() -> None:
    moved = SessionUpdate.from_dict({"maintenance_at": "2026-01-01T01:00:00+01:00"})
    assert moved.changes_start
    assert moved.maintenance_at == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert moved.retry is False

    cleared = SessionUpdate.from_dict({"maintenance_at": None})
    assert cleared.changes_start
    assert cleared.maintenance_at is None

    retry = SessionUpdate.from_dict({"retry": True})
    assert retry.retry
    assert not retry.changes_start

    fenix_style = SessionUpdate.from_dict({"state": "MAINTENANCE"})
    assert fenix_style.retry
    assert not fenix_style.changes_start


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "update"),
        ({"retry": False}, "update"),
        ([], "update"),
        ({"retry": "yes"}, "retry"),
        ({"retry": 1}, "retry"),
        ({"state": "MAINTENANCE_DONE"}, "state"),
        ({"maintenance_at": "later"}, "maintenance_at"),
        ({"hosts": ["a"]}, "hosts"),
    ],
)
def test_session_update_rejects(data: object, field: str) -> None:
    assert invalid(SessionUpdate.from_dict, data).field == field


def test_session_update_constructor_retry_only() -> None:
    update = SessionUpdate(retry=True)
    assert update.retry
    assert not update.changes_start


# --------------------------------------------------------------------------- Reply


def test_reply_valid() -> None:
    reply = Reply("p1", "ACK_PLANNED_MAINTENANCE", {"vm-1": "MIGRATE", "vm-2": "OWN_ACTION"})
    assert reply.project_id == "p1"
    assert dict(reply.instance_actions) == {"vm-1": "MIGRATE", "vm-2": "OWN_ACTION"}
    assert dict(Reply("p1", "ACK_MAINTENANCE").instance_actions) == {}
    assert dict(Reply("p1", "ACK_MAINTENANCE", None).instance_actions) == {}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"project_id": "", "state": "ACK_MAINTENANCE"}, "project_id"),
        ({"project_id": 1, "state": "ACK_MAINTENANCE"}, "project_id"),
        ({"project_id": "p", "state": None}, "state"),
        ({"project_id": "p", "state": "ACK", "instance_actions": ["vm-1"]}, "instance_actions"),
        (
            {"project_id": "p", "state": "ACK", "instance_actions": {1: "MIGRATE"}},
            "instance_actions",
        ),
        (
            {"project_id": "p", "state": "ACK", "instance_actions": {"": "MIGRATE"}},
            "instance_actions",
        ),
        (
            {"project_id": "p", "state": "ACK", "instance_actions": {"vm-3": 5}},
            "instance_actions.vm-3",
        ),
        (
            {"project_id": "p", "state": "ACK", "instance_actions": {"vm-3": ""}},
            "instance_actions.vm-3",
        ),
    ],
)
def test_reply_rejects(kwargs: dict[str, Any], field: str) -> None:
    assert invalid(Reply, **kwargs).field == field
