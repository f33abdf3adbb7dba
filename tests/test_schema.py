"""One schema: the Python value objects, the REST bodies and the scenario
files accept the same fields, and every problem is reported at once."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import attrs
import jsonschema_rs
import pytest
import yaml
from click.testing import CliRunner

from fenix_core.cli import main
from fenix_core.controls import ESCALATIONS, STUCK_KINDS, Controls
from fenix_core.errors import InvalidInput
from fenix_core.model import (
    DEFAULT_REPLY_WINDOWS,
    DEFAULT_TIMEOUTS,
    ActionSpec,
    SessionRequest,
    SessionUpdate,
)
from fenix_core.schema import (
    ActionSchema,
    ControlsSchema,
    EscalationPolicy,
    ReplyWindowState,
    SessionRequestSchema,
    SessionUpdateSchema,
    StuckKind,
    TimeoutKind,
)
from fenix_core.sim.scenario import load_scenario
from fenix_core.sim.scenario_schema import SESSION_FIELDS, scenario_json_schema

SCENARIOS = Path(__file__).parent.parent / "examples" / "scenarios"


def rest_body_fields(schema_name: str) -> set[str]:
    """The properties the REST service's own OpenAPI description gives a body."""
    pytest.importorskip("fastapi")
    from fenix_core import Engine
    from fenix_core.rest import TokenAuthenticator, create_app
    from fenix_core.testing import SimulatedCloud

    with Engine(database_url="sqlite://", plugins=[SimulatedCloud()]) as engine:
        spec = create_app(engine, TokenAuthenticator(["t"], {})).openapi()
    return set(spec["components"]["schemas"][schema_name]["properties"])


def test_rest_and_python_session_requests_take_the_same_fields() -> None:
    python = {f.name for f in attrs.fields(SessionRequest)}
    assert python == set(SessionRequestSchema.model_fields)
    assert rest_body_fields("SessionRequestSchema") == python
    assert {"controls", "max_parallel_hosts", "add_hosts", "decommission_hosts"} <= python
    assert rest_body_fields("ActionSchema") == {f.name for f in attrs.fields(ActionSpec)}
    # The update also takes Fenix's state: "MAINTENANCE" (a retry).
    update = rest_body_fields("SessionUpdateSchema")
    assert update == {f.name for f in attrs.fields(SessionUpdate)} | {"state"}
    assert update == set(SessionUpdateSchema.model_fields)


def test_nested_shapes_and_choices_match_the_value_objects() -> None:
    assert {f.name for f in attrs.fields(Controls)} == set(ControlsSchema.model_fields)
    assert set(typing.get_args(ReplyWindowState)) == set(DEFAULT_REPLY_WINDOWS)
    assert set(typing.get_args(TimeoutKind)) == set(DEFAULT_TIMEOUTS)
    assert set(typing.get_args(StuckKind)) == set(STUCK_KINDS)
    assert set(typing.get_args(EscalationPolicy)) == set(ESCALATIONS)
    assert set(ActionSchema.model_fields) == {f.name for f in attrs.fields(ActionSpec)}
    # The scenario's session section is the request minus what it gives elsewhere.
    assert set(SESSION_FIELDS) - {"maintenance_in"} <= set(SessionRequestSchema.model_fields)
    assert "controls" in SESSION_FIELDS


BAD_REQUEST: dict[str, Any] = {
    "hosts": ["cmp-0", "cmp-0"],
    "actions": [{"plugin": "fw"}, {"plugin": "fw", "type": "host", "order": "1"}],
    "max_parallel_hosts": 0,
    "reply_windows": {"MAINTENANCE": -5},
    "controls": {"timezone": "Mars/Olympus", "escalation": {"migration": "shrug"}},
    "colour": "blue",
}
BAD_FIELDS = {
    "hosts[1]",
    "actions[0].type",
    "actions[1].order",
    "max_parallel_hosts",
    "reply_windows.MAINTENANCE",
    "controls.timezone",
    "controls.escalation.migration",
    "colour",
}


def test_every_error_of_a_request_is_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        SessionRequest.from_dict(BAD_REQUEST)
    error = caught.value
    assert {e.field for e in error.errors} == BAD_FIELDS
    assert error.field == error.errors[0].field
    assert error.reason == error.errors[0].message
    assert dict(error.errors)["hosts[1]"] == "host 'cmp-0' listed twice"
    assert dict(error.errors)["colour"] == "unknown field"
    for field in BAD_FIELDS:
        assert field in str(error)


def test_value_objects_inside_a_request_still_validate() -> None:
    request = SessionRequest.from_dict(
        {
            "actions": (ActionSpec("fw", "host"),),
            "controls": Controls(max_hosts_per_hour=2),
            "hosts": ("a", "b"),
            "maintenance_at": "2026-01-01T00:00:00Z",
            "max_parallel_hosts": None,
        }
    )
    assert request.hosts == ("a", "b")
    assert request.controls.max_hosts_per_hour == 2
    assert SessionRequest.from_dict(request.to_dict()) == request


SCENARIO = """
hosts:
  - {name: "cmp-{i}", count: 2, vcpus: lots}
  - {name: ctl, type: storage}
managers:
  web: {delay: -1}
session:
  max_parallel_hosts: 0
  controls: {settle_seconds: -1}
"""


def test_every_shape_error_of_a_scenario_is_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_scenario(SCENARIO)
    assert {e.field for e in caught.value.errors} == {
        "hosts[0].vcpus",
        "hosts[1].type",
        "managers.web.delay",
        "session.max_parallel_hosts",
        "session.controls.settle_seconds",
    }


def _as_json(path: Path) -> Any:
    data = yaml.safe_load(path.read_text())
    return json.loads(json.dumps(data, default=lambda v: v.isoformat()))


def test_fenix_schema_prints_a_json_schema_the_examples_satisfy() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema == json.loads(json.dumps(scenario_json_schema()))
    validator = jsonschema_rs.validator_for(schema)
    for path in sorted(SCENARIOS.glob("*.yaml")):
        assert validator.is_valid(_as_json(path)), path
    assert not validator.is_valid({"hosts": [{"name": "a"}], "colour": "blue"})
    assert not validator.is_valid({"hosts": [{"name": "a"}], "session": {"max_parallel_hosts": 0}})
    session = schema["$defs"]["SessionSection"]["properties"]
    assert {"controls", "max_parallel_hosts", "workflow"} <= set(session)


def test_fenix_validate_catches_unknown_plugin_names(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "hosts: [{name: cmp-0}, {name: cmp-1}]\n"
        "actions: [{plugin: firmware, type: sometimes}]\n"
        "session: {workflow: sideways, controls: {gates: [{name: nogate}]}}\n"
    )
    result = CliRunner().invoke(main, ["validate", "--json", str(bad)])
    assert result.exit_code == 2, result.output
    error = json.loads(result.output)
    fields = {e["field"] for e in error["errors"]}
    assert fields == {"session.workflow", "session.controls.gates[0].name"}
    bad.write_text(bad.read_text().replace("sideways", "rolling"))
    result = CliRunner().invoke(main, ["validate", "--json", str(bad)])
    assert result.exit_code == 2, result.output
    fields = {e["field"] for e in json.loads(result.output)["errors"]}
    assert fields == {"actions[0].type", "session.controls.gates[0].name"}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 0, result.output
