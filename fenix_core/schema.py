"""The one declarative definition of every request shape.

Each shape is a pydantic model; from it come the checks of
``SessionRequest.from_dict`` (and the other requests' ``from_dict``), the REST
bodies and their OpenAPI description (:mod:`fenix_core.rest` uses these models
as its bodies), and the JSON Schema of scenario files (``fenix schema``).
Validation reports every error at once: :func:`validate` raises one
:class:`~fenix_core.errors.InvalidInput` whose ``errors`` lists each problem
with its path (``actions[1].type``) and whose ``field`` names the first.

Models forbid unknown fields and do not coerce types (``"2"`` is not 2). A
field that is ``null`` means "the default", so every optional field accepts
null and is described as nullable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from .budgets import parse_cap
from .clock import as_utc
from .errors import FieldError, InvalidInput
from .recurrence import parse_duration

__all__ = [
    "ActionSchema",
    "ControlsSchema",
    "DefaultGroupSchema",
    "GateSchema",
    "GroupRules",
    "SessionRequestSchema",
    "SessionUpdateSchema",
    "TopologyCapSchema",
    "WindowSchema",
    "errors_of",
    "errors_of_one",
    "field_path",
    "iso_time",
    "validate",
]

#: Awaited states with a reply window, and kinds of work with a timeout
#: (fenix_core.model's DEFAULT_REPLY_WINDOWS / DEFAULT_TIMEOUTS keys; a test
#: keeps them equal).
ReplyWindowState = Literal[
    "MAINTENANCE",
    "SCALE_IN",
    "PREPARE_MAINTENANCE",
    "PLANNED_MAINTENANCE",
    "MAINTENANCE_COMPLETE",
]
TimeoutKind = Literal["migration", "own_action", "action", "host_up", "host_added"]
StuckKind = Literal["migration", "own_action", "action", "host_up", "gate"]
EscalationPolicy = Literal["wait_and_notify", "skip_host", "fail"]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:  # PostgreSQL text cannot hold it; no real name has it
        raise ValueError("contains a NUL character")
    return value


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            # "index" puts the entry's position in the error's path (errors_of).
            raise PydanticCustomError(
                "duplicate", "host {host} listed twice", {"host": repr(value), "index": index}
            )
        seen.add(value)
    return values


def iso_time(value: object) -> object:
    """ISO 8601 text (``Z`` or an offset; naive means UTC) to an aware datetime."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if isinstance(value, datetime):
        try:
            return as_utc(value)
        except OverflowError:
            raise ValueError(f"out of the representable range: {value}") from None
    return value


def _iso_date(value: object) -> object:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a date like '2026-12-24': {value!r}") from None
    return value


def _clock(value: object) -> object:
    if isinstance(value, str):
        try:
            value = time.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a time of day like '22:30': {value!r}") from None
    if isinstance(value, time) and value.tzinfo is not None:
        raise ValueError("give the time zone in controls.timezone, not in the time")
    return value


def _weekday(value: str) -> str:
    if value.strip().lower()[:3] not in _WEEKDAYS:
        raise ValueError(f"expected a weekday (mon ... sun), got {value!r}")
    return value


def _checked_by(parse: Callable[[object, str], object]) -> Callable[[object], object]:
    """A pydantic validator from a value object's own parser (one rule, one
    message), which raises InvalidInput; the value is kept as given."""

    def check(value: object) -> object:
        try:
            parse(value, "")
        except InvalidInput as exc:
            raise ValueError(exc.reason) from None
        return value

    return check


_host_cap = _checked_by(parse_cap)
_duration = _checked_by(parse_duration)


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_name)]
HostNames = Annotated[list[Name], AfterValidator(_unique)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
SecondsOrZero = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=10**6)]
Time = Annotated[
    datetime,
    BeforeValidator(iso_time),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Day = Annotated[
    date, BeforeValidator(_iso_date), WithJsonSchema({"type": "string", "format": "date"})
]
ClockTime = Annotated[
    time,
    BeforeValidator(_clock),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}(:\d{2})?$"}),
]
#: A cap on hosts: a count, or a percent of the session's hosts ("10%").
HostCap = Annotated[
    Any,
    PlainValidator(_host_cap),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 10**6},
                {"type": "string", "pattern": r"^\d+(\.\d+)?%$"},
            ],
            "description": "a number of hosts, or a percent of the session's hosts ('10%')",
        }
    ),
]
#: Seconds, or a text like "4h", "1h30m", "PT4H".
Duration = Annotated[
    Any,
    PlainValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {
                    "type": "string",
                    "pattern": r"^[Pp]?(\d+[Dd])?[Tt]?(\d+[Hh])?(\d+[Mm])?(\d+[Ss])?$",
                },
            ]
        }
    ),
]
Weekday = Annotated[
    str,
    AfterValidator(_weekday),
    WithJsonSchema({"type": "string", "description": "mon ... sun (or the full name)"}),
]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GroupRules(_Shape):
    """ETSI instance-group constraints (the REST body and scenario ``groups``
    add the group's and project's ids under their own names)."""

    group_name: str | None = None
    anti_affinity_group: bool | None = None
    max_instances_per_host: int | None = None
    max_impacted_members: int | None = None
    recovery_time: int | None = None
    resource_mitigation: bool | None = None


class DefaultGroupSchema(_Shape):
    """The rules of a project's instances that no group constraint covers
    (their implicit group, in the constrained workflow)."""

    max_impacted_members: int | None = Field(None, ge=1, le=10**6)
    recovery_time: int | None = Field(None, ge=0, le=10 * 365 * 24 * 3600)
    anti_affinity_group: bool | None = None
    max_instances_per_host: int | None = Field(None, ge=0, le=10_000)
    resource_mitigation: bool | None = None


class ActionSchema(_Shape):
    """One action of a session: which plug-in, of which type (when it runs)."""

    plugin: Name = Field(description="name of an action plug-in of the engine")
    type: Name = Field(description="pre, host, compute, controller, post, or a workflow's own")
    order: int = Field(0, ge=0, le=10**6, description="order among actions of one type")
    metadata: dict[str, Any] = Field(default_factory=dict, description="given to the plug-in")


class WindowSchema(_Shape):
    """A recurring window, local time: weekly (``days``, ``start``, ``end``),
    or opening when ``cron`` fires / ``rrule`` recurs, for ``duration`` or
    until ``end``; optionally with its own ``max_hosts_in_maintenance``."""

    days: list[Weekday] | Literal["*"] | None = Field(
        None, description="weekly windows: null or '*': every day"
    )
    start: ClockTime | None = Field(None, description="weekly windows: when it opens")
    end: ClockTime | None = Field(
        None,
        description="when it closes (wall clock); at or before the opening: the next day",
    )
    cron: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        None, description="five-field cron expression, e.g. '0 1 * * sun#2'"
    )
    rrule: Annotated[str, Field(min_length=1, max_length=1000)] | None = Field(
        None, description="RFC 5545 RRULE, e.g. 'FREQ=MONTHLY;BYDAY=2SU;BYHOUR=1'"
    )
    duration: Duration | None = Field(
        None, description="cron/rrule windows: seconds, or '4h', '1h30m', 'PT4H'"
    )
    max_hosts_in_maintenance: HostCap | None = Field(
        None, description="within this window: a count, or a percent of the session's hosts"
    )


class TopologyCapSchema(_Shape):
    """At most ``max`` domains of the host label ``key`` in maintenance at once."""

    key: Name = Field(description="a host label: zone, aggregate, topology.kubernetes.io/zone ...")
    max: Count


class GateSchema(_Shape):
    """A registered health gate's ``name`` and its parameters (any other keys)."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: Name = Field(description="the name of a registered gate")


class ControlsSchema(_Shape):
    """Maintenance windows, pacing, health gates and escalation of stuck work."""

    windows: list[WindowSchema] | None = None
    timezone: Annotated[str, AfterValidator(_zone)] = Field(
        "UTC", description="IANA time zone of the windows and blackout dates"
    )
    blackout_dates: list[Day] | None = None
    max_hosts_in_maintenance: HostCap | None = None
    max_hosts_per_hour: HostCap | None = None
    max_hosts_per_day: HostCap | None = None
    max_topology_in_maintenance: list[TopologyCapSchema] | None = None
    settle_seconds: SecondsOrZero = 0.0
    host_seconds: Seconds | None = Field(None, description="declared duration of one host")
    gates: list[GateSchema] | None = None
    gate_timeout: Seconds = 3600.0
    escalation: dict[StuckKind, EscalationPolicy] | None = None


class SessionRequestSchema(_Shape):
    """A maintenance session: Fenix v1's ``POST /v1/maintenance`` body plus
    fenix-core's options (the fields of :class:`~fenix_core.model.SessionRequest`)."""

    hosts: HostNames | None = Field(None, description="empty or null: every host")
    workflow: Name | None = Field(
        None, description='a workflow plug-in (default "rolling"; over REST "default" too)'
    )
    maintenance_at: Time | None = Field(None, description="ISO 8601; naive means UTC")
    actions: list[ActionSchema] | None = None
    metadata: dict[str, Any] | None = None
    project_policy: Literal["default", "fail"] | None = None
    reply_policy: Literal["fail", "default"] | None = None
    state: Literal["MAINTENANCE"] | None = None
    download: list[Name] | None = None
    reply_windows: dict[ReplyWindowState, Seconds] | None = None
    timeouts: dict[TimeoutKind, Seconds] | None = None
    max_migration_retries: int | None = Field(None, ge=0, le=20)
    max_parallel_hosts: int | None = Field(None, ge=1, le=100_000)
    controls: ControlsSchema | None = None
    default_group_constraints: DefaultGroupSchema | None = Field(
        None,
        description="rules of instances without group constraints (null: the engine's default)",
    )
    add_hosts: HostNames | None = Field(None, description="hosts this session brings into service")
    decommission_hosts: HostNames | None = Field(
        None, description="hosts of the scope emptied and left out of service"
    )
    approval: Literal["none", "required"] | None = Field(
        None,
        description='"required": plan, wait in AWAITING_APPROVAL until approved (default "none")',
    )


class SessionUpdateSchema(_Shape):
    """Changes to a session: move the start, or retry a failed session
    (``retry: true``, or Fenix's ``state: "MAINTENANCE"``)."""

    maintenance_at: Time | None = None
    retry: bool | None = None
    state: Literal["MAINTENANCE"] | None = None


M = TypeVar("M", bound=BaseModel)


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic location as a dotted path: ``("actions", 1, "type")`` ->
    ``actions[1].type``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required"
    if error["type"] == "literal_error":
        return f"must be one of {error['ctx']['expected']}, got {error['input']!r}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _plain(value: Any) -> Any:
    """Tuples (Python callers' lists) as lists, so that strict models take them."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def errors_of_one(error: Mapping[str, Any], prefix: str = "") -> list[FieldError]:
    """One pydantic error as a (path, message) pair."""
    loc = tuple(error["loc"])
    # A union's branch names ("list[...]", "literal['*']") are not fields.
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or "(" in p)))
    if error["type"] == "duplicate":
        loc = (*loc, error["ctx"]["index"])
    path = field_path(loc)
    if prefix:
        path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
    return [FieldError(path or "body", _message(error))]


def errors_of(exc: ValidationError, prefix: str = "") -> tuple[FieldError, ...]:
    """Every error of a pydantic validation, as (path, message) pairs, once each."""
    unique: dict[FieldError, None] = {}
    for error in exc.errors():
        for item in errors_of_one(error, prefix):
            unique.setdefault(item, None)
    return tuple(unique)


def validate(model: type[M], data: object, *, what: str = "request", prefix: str = "") -> M:
    """``data`` checked against ``model``; every problem in one InvalidInput."""
    if not isinstance(data, Mapping):
        raise InvalidInput(prefix or what, f"expected an object, got {type(data).__name__}")
    try:
        return model.model_validate(_plain(data))
    except ValidationError as exc:
        raise InvalidInput.from_errors(errors_of(exc, prefix)) from None
