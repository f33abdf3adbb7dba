"""The shape of a scenario file, declared once (pydantic).

:func:`fenix_core.sim.scenario.parse_scenario` checks a file against
:class:`ScenarioSchema` first, so that every shape error (a wrong type, an
unknown field, a value out of range) is reported at once with its path; the
references between sections (an instance on a host that exists, a group of
the right project) are checked after. ``fenix schema`` prints
:func:`scenario_json_schema` for editors to complete and check YAML.

The ``session`` section takes the session request's fields (from
:class:`~fenix_core.schema.SessionRequestSchema`, so the two cannot drift)
except those the scenario gives elsewhere, plus ``maintenance_in``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from ..schema import GroupRules, Name, SecondsOrZero, SessionRequestSchema, Time, _Shape

__all__ = ["SESSION_FIELDS", "ScenarioSchema", "SessionSection", "scenario_json_schema"]

AnsweredState = Literal[
    "MAINTENANCE",
    "SCALE_IN",
    "PREPARE_MAINTENANCE",
    "PLANNED_MAINTENANCE",
    "MAINTENANCE_COMPLETE",
]
ManagerAction = Literal["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]


def _scalar(value: object) -> object:
    if isinstance(value, dict | list) or value is None:
        raise ValueError(f"expected a value, got {type(value).__name__}")
    return value


def _label(value: object) -> object:
    """A value, or a list of values (a host in several domains of one key)."""
    if isinstance(value, list):
        for item in value:
            _scalar(item)
        return value
    return _scalar(value)


_SCALAR = {"type": ["string", "number", "boolean"]}
#: A host label's value (YAML may read it as a number or a boolean), or a list
#: of values when the host is in several domains of the key (an OpenStack
#: host in two aggregates).
Label = Annotated[
    Any,
    AfterValidator(_label),
    WithJsonSchema({"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]}),
]
_VCPUS = Field(None, ge=0, le=100_000)
_GENERATOR = "with count: N, the entry stands for N entries; {i} in its strings is 0 ... N-1"


class HostEntry(_Shape):
    """A simulated host, or with ``count`` a generator of hosts."""

    name: Name = Field(description="the host's name; with count a pattern containing {i}")
    type: Literal["compute", "controller"] | None = None
    vcpus: int | None = _VCPUS
    labels: dict[str, Label] | None = None
    enabled: bool | None = Field(None, description="false: out of service at the start")
    count: int | None = Field(None, ge=1, le=100_000, description=_GENERATOR)
    first: int | None = Field(None, ge=0, le=10**9, description="with count: the first i")


class InstanceEntry(_Shape):
    """A simulated instance, or with ``count`` a generator of instances."""

    id: Name
    project: Name
    host: Name | None = Field(None, description="give host, or hosts")
    hosts: list[Name] | None = Field(None, description="round-robin over these hosts")
    vcpus: int | None = _VCPUS
    group: Name | None = None
    live_migratable: bool | None = None
    constraints: dict[str, Any] | None = Field(
        None, description="ETSI instance constraints (as PUT /v1/instance takes them)"
    )
    count: int | None = Field(None, ge=1, le=100_000, description=_GENERATOR)
    first: int | None = Field(None, ge=0, le=10**9, description="with count: the first i")


class GroupEntry(GroupRules):
    """ETSI instance-group constraints of one project's group."""

    id: Name
    project: Name


class ManagerEntry(_Shape):
    """How one project's application manager answers."""

    action: ManagerAction | None = None
    actions: dict[str, ManagerAction] | None = Field(None, description="per instance id")
    nack: list[AnsweredState] | AnsweredState | bool | None = None
    silent: list[AnsweredState] | AnsweredState | bool | None = None
    delay: SecondsOrZero | None = None
    scale_in: int | None = Field(None, ge=0, le=100_000)


class ActionEntry(_Shape):
    """An action of the session and how long it takes where."""

    plugin: Name
    type: Name | None = None
    seconds: SecondsOrZero | None = None
    by_host_type: dict[Literal["compute", "controller"], SecondsOrZero] | None = None
    by_label: dict[str, SecondsOrZero] | None = Field(None, description="key=value -> seconds")
    order: int | None = Field(None, ge=-(10**6), le=10**6)
    metadata: dict[str, Any] | None = None
    fail_on: list[Name] | None = None


class PlacementEntry(_Shape):
    """A server group as the cloud's scheduler applies it (on every move), or
    the host types (placement classes) its members may go to (host-types)."""

    group_id: Name
    policy: Literal[
        "anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity", "host-types"
    ]
    members: list[Name] = Field(description="instance ids")
    max_per_host: int | None = Field(None, ge=1, le=10**6, description="anti-affinity: default 1")
    name: str | None = None
    host_types: list[Literal["compute", "controller"]] | None = Field(
        None, description="host-types: the host types the members may go to"
    )


class RequestsEntry(_Shape):
    """Requests as kube-scheduler counts them: ``cpu_m`` millicores and
    ``memory`` bytes (filters), ``scored_*`` with its defaults for containers
    without a request (scores)."""

    cpu_m: int | None = Field(None, ge=0)
    memory: int | None = Field(None, ge=0)
    scored_cpu_m: int | None = Field(None, ge=0)
    scored_memory: int | None = Field(None, ge=0)


class SchedulerNodeEntry(_Shape):
    cpu_m: int = Field(ge=0, description="allocatable CPU, millicores")
    memory: int = Field(ge=0, description="allocatable memory, bytes")
    stays: RequestsEntry | None = Field(
        None, description="requests of the pods that never move (DaemonSet, static pods)"
    )
    taints: list[dict[str, str]] | None = Field(
        None, description="lasting NoSchedule / NoExecute taints: key, value, effect"
    )


class SchedulerPodEntry(_Shape):
    requests: RequestsEntry | None = None
    tolerations: list[dict[str, str | int]] | None = None
    node_selector: dict[str, str] | None = None


class SchedulerSection(_Shape):
    """What the cloud's own scheduler decides on (a Kubernetes snapshot):
    the simulation places each moved instance as kube-scheduler would."""

    kind: Literal["kubernetes"]
    nodes: dict[str, SchedulerNodeEntry] | None = Field(None, description="host -> its inputs")
    pods: dict[str, SchedulerPodEntry] | None = Field(None, description="instance -> its inputs")


class Migrations(_Shape):
    seconds: SecondsOrZero | None = None
    live_seconds: SecondsOrZero | None = None


class MigrationFaultEntry(_Shape):
    instance: Name
    times: int | None = Field(None, ge=1, le=100)
    error: Name | None = None


class FaultsSection(_Shape):
    failed_migrations: list[MigrationFaultEntry] | None = None
    hosts_stay_down: list[Name] | None = None


#: Request fields a scenario gives elsewhere (actions) or does not simulate.
_NOT_IN_SESSION = {"actions", "state", "download", "maintenance_at", "add_hosts", "approval"}
SESSION_FIELDS: tuple[str, ...] = (
    *(n for n in SessionRequestSchema.model_fields if n not in _NOT_IN_SESSION),
    "maintenance_in",
)

SessionSection: type[BaseModel] = create_model(
    "SessionSection",
    __base__=_Shape,
    __doc__="The session: the request's fields, and maintenance_in (seconds after start).",
    maintenance_in=(SecondsOrZero | None, None),
    **{  # type: ignore[call-overload]
        name: (field.annotation, field)
        for name, field in SessionRequestSchema.model_fields.items()
        if name in SESSION_FIELDS
    },
)


class ScenarioSchema(_Shape):
    """A scenario file: a simulated cloud, its managers, and a session."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="fenix-core scenario",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    name: Name | None = None
    start: Time | None = Field(None, description="when the simulation starts (ISO 8601)")
    hosts: list[HostEntry] = Field(min_length=1)
    instances: list[InstanceEntry] | None = None
    groups: list[GroupEntry] | None = None
    managers: dict[str, ManagerEntry | None] | None = Field(None, description="project -> manager")
    actions: list[ActionEntry] | None = None
    placement: list[PlacementEntry] | None = Field(
        None, description="server-group rules the cloud's scheduler enforces"
    )
    scheduler: SchedulerSection | None = None
    migrations: Migrations | None = None
    faults: FaultsSection | None = None
    session: SessionSection | None = None  # type: ignore[valid-type]


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of scenario files."""
    return ScenarioSchema.model_json_schema()
