"""Value objects: requests, replies, cloud inventory, operation status and views.

They are frozen attrs classes that validate themselves at the boundary. Every
request type also accepts a plain dict with the Fenix v1 JSON field names
(``from_dict``), checked against its one declaration in
:mod:`fenix_core.schema` (which the REST bodies are too); bad data raises one
:class:`~fenix_core.errors.InvalidInput` listing every problem (``errors``)
and naming the first (``field``), before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

import attrs

from .controls import Controls
from .errors import InvalidInput
from .schema import ActionSchema, SessionRequestSchema, SessionUpdateSchema, iso_time, validate

__all__ = [
    "ACTION_TYPES",
    "DEFAULT_REPLY_WINDOWS",
    "DEFAULT_TIMEOUTS",
    "ActionSpec",
    "ApprovalView",
    "Host",
    "HostChange",
    "HostView",
    "IgnoredConstraint",
    "Instance",
    "InstanceView",
    "OperationStatus",
    "OperationView",
    "Progress",
    "ProjectView",
    "Reply",
    "SessionRequest",
    "SessionUpdate",
    "SessionView",
    "StuckWork",
    "check_request_actions",
    "parse_time",
]

#: Action types the built-in workflows run, in the order they run them.
ACTION_TYPES = ("pre", "host", "compute", "controller", "post")

#: Seconds a project has to answer, per awaited state.
DEFAULT_REPLY_WINDOWS: Mapping[str, float] = {
    "MAINTENANCE": 600.0,
    "SCALE_IN": 600.0,
    "PREPARE_MAINTENANCE": 300.0,
    "PLANNED_MAINTENANCE": 300.0,
    "MAINTENANCE_COMPLETE": 600.0,
}

#: Seconds before an operation counts as stuck and fails.
DEFAULT_TIMEOUTS: Mapping[str, float] = {
    "migration": 3600.0,  # one migration, from start to confirmed
    "own_action": 3600.0,  # a manager moving its instance itself (OWN_ACTION)
    "action": 4 * 3600.0,  # one action plug-in run
    "host_up": 1800.0,  # a host coming back after its actions
    "host_added": 3600.0,  # the hosts named in add_hosts appearing in the cloud
}

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def parse_time(value: object, field: str) -> datetime | None:
    """Accept None, an aware/naive datetime (naive = UTC) or an ISO 8601 string."""
    if value is None:
        return None
    try:
        parsed = iso_time(value)
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from None
    if not isinstance(parsed, datetime):
        raise InvalidInput(field, f"expected a time, got {type(value).__name__}")
    return parsed


def _str(value: object, field: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"expected a string, got {type(value).__name__}")
    if not empty and not value.strip():
        raise InvalidInput(field, "must not be empty")
    if len(value) > 255:
        raise InvalidInput(field, "longer than 255 characters")
    if "\x00" in value:  # PostgreSQL text cannot hold it; no real name has it
        raise InvalidInput(field, "contains a NUL character")
    return value


def _mapping(value: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, f"expected an object, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidInput(field, f"keys must be strings, got {key!r}")
    return dict(value)


def _seq(value: object, field: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise InvalidInput(field, f"expected a list, got {type(value).__name__}")
    return list(value)


def _seconds(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, f"expected a number of seconds, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise InvalidInput(field, "too large") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(field, f"must be a positive number of seconds, got {value!r}")
    return seconds


def _int(value: object, field: str, *, minimum: int = 0, maximum: int = 10**6) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"expected an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise InvalidInput(field, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _check_bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(field, f"expected true or false, got {value!r}")
    return value


def _choice(value: object, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInput(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _unknown_keys(data: Mapping[str, Any], known: Iterable[str], prefix: str = "") -> None:
    extra = sorted(str(k) for k in set(data) - set(known))
    if extra:
        raise InvalidInput(f"{prefix}{extra[0]}", "unknown field")


def _as_mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInput(what, f"expected an object, got {type(data).__name__}")
    return data


# attrs converters (named functions, so that mypy's attrs plug-in can type them)


def _to_metadata(value: object) -> dict[str, Any]:
    return _mapping(value, "metadata")


def _to_hosts(value: object) -> tuple[str, ...]:
    return tuple(_seq(value, "hosts"))


def _to_add_hosts(value: object) -> tuple[str, ...]:
    return tuple(_seq(value, "add_hosts"))


def _to_decommission_hosts(value: object) -> tuple[str, ...]:
    return tuple(_seq(value, "decommission_hosts"))


def _to_maintenance_at(value: object) -> datetime | None:
    return parse_time(value, "maintenance_at")


def _to_download(value: object) -> tuple[str, ...]:
    return tuple(_str(d, f"download[{i}]") for i, d in enumerate(_seq(value, "download")))


def _to_reply_windows(value: object) -> dict[str, Any]:
    return _mapping(value, "reply_windows")


def _to_timeouts(value: object) -> dict[str, Any]:
    return _mapping(value, "timeouts")


def _to_instance_actions(value: object) -> dict[str, Any]:
    return _mapping(value, "instance_actions")


def _validated(name: str, check: Any) -> Any:
    """An attrs validator that runs ``check(value, field)`` (which raises InvalidInput)."""

    def validator(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
        check(value, name)

    return validator


# --------------------------------------------------------------------------- requests


@attrs.frozen
class ActionSpec:
    """One maintenance action of a session: which plug-in, of which type.

    ``type`` is when it runs: ``pre`` (once, before any host), ``host`` (on every
    host), ``compute`` / ``controller`` (on hosts of that type, after the ``host``
    actions), ``post`` (once, at the end). Actions of one type run ordered by
    ``order``, then by plug-in name, and receive ``metadata``.
    """

    plugin: str = attrs.field(validator=_validated("plugin", _str))
    type: str = attrs.field(validator=_validated("type", _str))
    order: int = attrs.field(default=0, validator=_validated("order", _int))
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_to_metadata)

    @classmethod
    def from_dict(cls, data: object, *, field: str = "action") -> ActionSpec:
        mapping = _as_mapping(data, field)
        validate(ActionSchema, mapping, prefix=field)
        return cls(
            plugin=_str(mapping["plugin"], f"{field}.plugin"),
            type=_str(mapping["type"], f"{field}.type"),
            order=_int(mapping.get("order", 0), f"{field}.order"),
            metadata=_mapping(mapping.get("metadata"), f"{field}.metadata"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "type": self.type,
            "order": self.order,
            "metadata": dict(self.metadata),
        }


ProjectPolicy = Literal["default", "fail"]
ReplyPolicy = Literal["fail", "default"]
Approval = Literal["none", "required"]


def _check_windows(value: Mapping[str, float], field: str) -> None:
    for key, seconds in value.items():
        _choice(key, f"{field}.{key}", tuple(DEFAULT_REPLY_WINDOWS))
        _seconds(seconds, f"{field}.{key}")


def _check_timeouts(value: Mapping[str, float], field: str) -> None:
    for key, seconds in value.items():
        _choice(key, f"{field}.{key}", tuple(DEFAULT_TIMEOUTS))
        _seconds(seconds, f"{field}.{key}")


def _check_hosts(value: tuple[str, ...], field: str) -> None:
    seen: set[str] = set()
    for index, host in enumerate(value):
        _str(host, f"{field}[{index}]")
        if host in seen:
            raise InvalidInput(f"{field}[{index}]", f"host {host!r} listed twice")
        seen.add(host)


def _to_default_group(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: v for k, v in _mapping(value, "default_group_constraints").items() if v is not None}


def _to_controls(value: object) -> Controls:
    return Controls.from_dict(value)


def _to_actions(value: object) -> tuple[ActionSpec, ...]:
    return tuple(
        a if isinstance(a, ActionSpec) else ActionSpec.from_dict(a, field=f"actions[{i}]")
        for i, a in enumerate(_seq(value, "actions"))
    )


def _check_actions(value: tuple[ActionSpec, ...], field: str) -> None:
    for index, action in enumerate(value):
        if not isinstance(action, ActionSpec):
            raise InvalidInput(f"{field}[{index}]", "expected an ActionSpec")


def _shape_of(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A request as plain data: value objects a Python caller put in it
    (ActionSpec, Controls) as their dict form, for the schema to check."""
    data = dict(mapping)
    actions = data.get("actions")
    if isinstance(actions, list | tuple):
        data["actions"] = [a.to_dict() if isinstance(a, ActionSpec) else a for a in actions]
    if isinstance(data.get("controls"), Controls):
        data["controls"] = data["controls"].to_dict()
    return data


@attrs.frozen
class SessionRequest:
    """What an admin asks for: maintain these hosts with these actions.

    ``hosts`` empty means every host the cloud reports. ``maintenance_at``
    (aware, naive = UTC, or ISO 8601) is the earliest time host work may start.
    ``project_policy`` applies to projects without a manager: ``"default"`` (the
    engine moves their instances itself) or ``"fail"`` (the session fails before
    touching any host). ``reply_policy`` applies when a manager answers ``NACK_*``
    or not at all before its deadline: ``"fail"`` the session, or act by
    ``"default"`` as if the project had no manager. ``reply_windows`` and
    ``timeouts`` override :data:`DEFAULT_REPLY_WINDOWS` / :data:`DEFAULT_TIMEOUTS`.
    ``max_parallel_hosts`` caps how many hosts a parallel workflow
    (``"constrained"``) has out of service at once (None: as many as the
    constraints and capacity allow).
    ``controls`` (a :class:`~fenix_core.controls.Controls` or its dict form) sets
    maintenance windows, pacing, health gates and what to do with stuck work.
    ``default_group_constraints`` are the rules of instances that no group
    constraint covers (the constrained workflow holds each project's such
    instances as one implicit group); None: the engine's default, which
    ``create_session`` writes into the stored request, so that the session
    view and the plan show what applies.
    ``add_hosts`` are hosts the session brings into service (once the cloud
    lists them) and uses as migration targets; ``decommission_hosts`` are hosts
    of the scope that are emptied and then left out of service for good.
    ``approval``: ``"required"`` makes the session compute and store its plan
    and wait in ``AWAITING_APPROVAL``, touching no host, until
    ``engine.approve_session``; ``"none"`` (the default) starts at once.
    """

    hosts: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_hosts,
        validator=_validated("hosts", _check_hosts),
    )
    workflow: str = attrs.field(default="rolling", validator=_validated("workflow", _str))
    maintenance_at: datetime | None = attrs.field(default=None, converter=_to_maintenance_at)
    actions: tuple[ActionSpec, ...] = attrs.field(
        default=(),
        converter=_to_actions,
        validator=_validated("actions", _check_actions),
    )
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_to_metadata)
    project_policy: ProjectPolicy = attrs.field(
        default="default",
        validator=_validated("project_policy", lambda v, f: _choice(v, f, ("default", "fail"))),
    )
    reply_policy: ReplyPolicy = attrs.field(
        default="fail",
        validator=_validated("reply_policy", lambda v, f: _choice(v, f, ("fail", "default"))),
    )
    state: str = attrs.field(
        default="MAINTENANCE",
        validator=_validated("state", lambda v, f: _choice(v, f, ("MAINTENANCE",))),
    )
    download: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_download,
    )
    reply_windows: Mapping[str, float] = attrs.field(
        factory=dict,
        converter=_to_reply_windows,
        validator=_validated("reply_windows", _check_windows),
    )
    timeouts: Mapping[str, float] = attrs.field(
        factory=dict,
        converter=_to_timeouts,
        validator=_validated("timeouts", _check_timeouts),
    )
    max_migration_retries: int = attrs.field(
        default=2,
        validator=_validated("max_migration_retries", lambda v, f: _int(v, f, maximum=20)),
    )
    max_parallel_hosts: int | None = attrs.field(
        default=None,
        validator=_validated(
            "max_parallel_hosts", lambda v, f: v is None or _int(v, f, minimum=1, maximum=100_000)
        ),
    )
    #: Maintenance windows, pacing, health gates and escalation (fenix_core.controls).
    controls: Controls = attrs.field(factory=Controls, converter=_to_controls)
    #: Rules of the instances no group constraint covers (None: the engine's default).
    default_group_constraints: Mapping[str, Any] | None = attrs.field(
        default=None, converter=_to_default_group
    )
    add_hosts: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_add_hosts,
        validator=_validated("add_hosts", _check_hosts),
    )
    decommission_hosts: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_decommission_hosts,
        validator=_validated("decommission_hosts", _check_hosts),
    )
    approval: Approval = attrs.field(
        default="none",
        validator=_validated("approval", lambda v, f: _choice(v, f, ("none", "required"))),
    )

    @classmethod
    def from_dict(cls, data: object) -> SessionRequest:
        """Build from Fenix-style JSON (``hosts, state, maintenance_at, metadata,
        workflow, download, actions``) plus the fenix-core extensions."""
        mapping = _as_mapping(data, "request")
        validate(SessionRequestSchema, _shape_of(mapping))
        return cls(**{k: v for k, v in mapping.items() if v is not None})

    @classmethod
    def coerce(cls, value: object) -> SessionRequest:
        if isinstance(value, SessionRequest):
            return value
        return cls.from_dict(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hosts": list(self.hosts),
            "workflow": self.workflow,
            "maintenance_at": self.maintenance_at.isoformat() if self.maintenance_at else None,
            "actions": [a.to_dict() for a in self.actions],
            "metadata": dict(self.metadata),
            "project_policy": self.project_policy,
            "reply_policy": self.reply_policy,
            "state": self.state,
            "download": list(self.download),
            "reply_windows": dict(self.reply_windows),
            "timeouts": dict(self.timeouts),
            "max_migration_retries": self.max_migration_retries,
            "max_parallel_hosts": self.max_parallel_hosts,
            "controls": self.controls.to_dict(),
            "default_group_constraints": None
            if self.default_group_constraints is None
            else dict(self.default_group_constraints),
            "add_hosts": list(self.add_hosts),
            "decommission_hosts": list(self.decommission_hosts),
            "approval": self.approval,
        }

    def reply_window(self, state: str) -> float:
        return float(self.reply_windows.get(state, DEFAULT_REPLY_WINDOWS[state]))

    def timeout(self, kind: str) -> float:
        return float(self.timeouts.get(kind, DEFAULT_TIMEOUTS[kind]))


def host_action_types(host_type: str) -> tuple[str, ...]:
    """Action types that run on a host of this type, in order."""
    return ("host", host_type) if host_type in ACTION_TYPES else ("host",)


def check_request_actions(
    request: SessionRequest, action_types: Iterable[str], action_names: Iterable[str]
) -> None:
    """Every action of ``request`` has one of ``action_types`` and names a
    registered action plug-in (raises InvalidInput naming the field)."""
    types = tuple(action_types)
    known = set(action_names)
    for index, action in enumerate(request.actions):
        if action.type not in types:
            raise InvalidInput(
                f"actions[{index}].type", f"{action.type!r} is not one of {', '.join(types)}"
            )
        if action.plugin not in known:
            raise InvalidInput(
                f"actions[{index}].plugin",
                f"no action plug-in named {action.plugin!r} is registered"
                + (f" (known: {', '.join(sorted(known))})" if known else ""),
            )


class _Unset:
    """Marks a field of an update that is not changed."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _to_new_start(value: object) -> datetime | None:
    return value if isinstance(value, _Unset) else parse_time(value, "maintenance_at")  # type: ignore[return-value]


@attrs.frozen
class SessionUpdate:
    """Changes an admin may make to a session (``engine.update_session``).

    ``maintenance_at``: move the start (only before host work has started);
    leave it out (``UNSET``) to keep it. ``retry``: restart a failed session
    from where it stopped; hosts already maintained are not maintained again.
    """

    maintenance_at: datetime | None = attrs.field(default=UNSET, converter=_to_new_start)
    retry: bool = attrs.field(default=False, validator=_validated("retry", _check_bool))

    @classmethod
    def from_dict(cls, data: object) -> SessionUpdate:
        mapping = _as_mapping(data, "update")
        validate(SessionUpdateSchema, mapping, what="update")
        retry = bool(mapping.get("retry"))
        if mapping.get("state") is not None:
            # Fenix-style: PUT {"state": "MAINTENANCE"} on a failed session retries it.
            retry = True
        maintenance_at = (
            parse_time(mapping["maintenance_at"], "maintenance_at")
            if "maintenance_at" in mapping
            else UNSET
        )
        if not retry and maintenance_at is UNSET:
            raise InvalidInput("update", "nothing to change: give maintenance_at or retry")
        return cls(maintenance_at=maintenance_at, retry=retry)

    @property
    def changes_start(self) -> bool:
        return self.maintenance_at is not UNSET


@attrs.frozen
class Reply:
    """A project's answer to a ``maintenance_planned`` notification.

    ``state`` is ``ACK_<state>`` or ``NACK_<state>``; ``instance_actions`` maps
    instance ids to MIGRATE / LIVE_MIGRATE / OWN_ACTION (and EVICT on
    Kubernetes) for PREPARE_MAINTENANCE and PLANNED_MAINTENANCE.
    """

    project_id: str = attrs.field(validator=_validated("project_id", _str))
    state: str = attrs.field(validator=_validated("state", _str))
    instance_actions: Mapping[str, str] = attrs.field(factory=dict, converter=_to_instance_actions)

    def __attrs_post_init__(self) -> None:
        for instance_id, action in self.instance_actions.items():
            _str(instance_id, "instance_actions")
            _str(action, f"instance_actions.{instance_id}")


# --------------------------------------------------------------------------- cloud inventory


@attrs.frozen
class Host:
    """A host as a cloud driver reports it. ``type`` is compute or controller.

    ``labels`` place it in the cloud's topology, for the session's topology
    caps (``controls.max_topology_in_maintenance``): label -> value, or a
    tuple of values when the host is in several domains of one key (an
    OpenStack host in two aggregates).
    """

    name: str
    type: str = "compute"
    vcpus: int = 0
    enabled: bool = True
    details: Mapping[str, Any] = attrs.field(factory=dict)
    labels: Mapping[str, str | tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen
class Instance:
    """An instance (VM, pod) as a cloud driver reports it."""

    instance_id: str
    project_id: str
    host: str
    vcpus: int = 1
    name: str = ""
    live_migratable: bool = True
    details: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class OperationStatus:
    """The state of an operation started on a cloud driver or an action plug-in.

    ``state`` is running, done or failed. ``retry_after`` (seconds) says when to
    ask again; ``host`` is where a moved instance ended up; ``gone`` says the
    instance no longer exists (deleted meanwhile), which is not a failure.
    """

    state: Literal["running", "done", "failed"]
    detail: str = ""
    retry_after: float | None = None
    host: str | None = None
    gone: bool = False
    result: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def running(cls, retry_after: float | None = None, detail: str = "") -> OperationStatus:
        return cls("running", detail=detail, retry_after=retry_after)

    @classmethod
    def done(cls, host: str | None = None, detail: str = "", **result: Any) -> OperationStatus:
        return cls("done", detail=detail, host=host, result=result)

    @classmethod
    def failed(cls, detail: str) -> OperationStatus:
        return cls("failed", detail=detail)


# --------------------------------------------------------------------------- views


@attrs.frozen
class HostChange:
    """A change of the cloud's host set, as ``engine.refresh_inventory()`` returns it.

    ``state`` is ``HOST_ADDED`` or ``HOST_REMOVED``; ``seq`` numbers the
    engine's host changes; ``session_id`` is the session that noticed it (None
    when noticed outside any session).
    """

    host: str
    state: str
    seq: int
    session_id: str | None = None


@attrs.frozen
class HostView:
    """A host in a :class:`SessionView`: its state and when its maintenance
    started and ended (``None`` until then)."""

    name: str
    type: str
    state: str
    started_at: datetime | None
    finished_at: datetime | None
    reason: str | None = None


@attrs.frozen
class StuckWork:
    """Work past its deadline: what it is, where, why, and what the session does."""

    kind: str  # migration, own_action, action, host_up, gate
    host: str | None
    instance_id: str | None
    detail: str
    since: datetime
    policy: str  # wait_and_notify, skip_host, fail, or "default" (the workflow's own handling)


@attrs.frozen
class IgnoredConstraint:
    """A stored constraint that the cloud contradicts, which no workflow applies.

    ``kind`` is ``instance`` (constraints stored under ``project_id`` for an
    instance the session's listing puts in ``cloud_project_id``) or ``group``
    (a group of ``project_id`` whose id is ``cloud_project_id``'s group in the
    cloud). The admin sees them in the session view; delete or rewrite them.
    """

    kind: str
    ident: str
    project_id: str
    cloud_project_id: str


@attrs.frozen
class Progress:
    """How far a session is, and when it should end.

    Each host of the session's work is counted once: ``hosts_done``
    (maintained or decommissioned), ``hosts_in_progress`` (admitted, not
    finished; none once the session has ended), ``hosts_waiting`` (not started
    yet; in an ended session, not done), ``hosts_skipped``, ``hosts_removed``
    (the cloud lost them during the session; targets lost are counted too, as
    they are listed ``REMOVED``) and ``hosts_failed``. Targets (``ADDING``,
    ``ADDED``) are not work and are not counted.

    ``durations`` are seconds per finished host, from its start (admission) to
    back in service, or to decommissioned; ``estimated_end`` plays the mean
    duration forward through the session's windows and pacing (None until
    something is known).
    """

    hosts_done: int
    hosts_in_progress: int
    hosts_waiting: int
    hosts_skipped: int
    durations: Mapping[str, float]
    estimated_end: datetime | None
    eta_seconds: float | None
    hosts_removed: int = 0
    hosts_failed: int = 0


@attrs.frozen
class ApprovalView:
    """The plan of a session created with ``approval: "required"``.

    ``plan_id`` names this plan (approve it with ``plan_id`` to refuse a plan
    that was replaced meanwhile); ``plan`` is the preview (the waves and the
    estimated makespan, as ``fenix_core.sim.simulation.Plan.to_dict()``, or
    ``{"unavailable": why}``); ``changes`` what differed from the previous plan
    when an approval re-planned (empty for the first plan); ``approved_at``
    when it was approved (None while it waits).
    """

    plan_id: str
    planned_at: datetime
    plan: Mapping[str, Any]
    changes: tuple[str, ...] = ()
    approved_at: datetime | None = None


@attrs.frozen
class SessionView:
    """What ``engine.get_session`` returns. ``state`` is the session state string."""

    session_id: str
    workflow: str
    state: str
    percent_done: int
    reason: str | None
    hosts: tuple[HostView, ...]
    #: project -> its dialogue state (last state sent or answered; None if never asked)
    projects: Mapping[str, str | None]
    created_at: datetime
    updated_at: datetime
    maintenance_at: datetime | None
    request: Mapping[str, Any]
    #: Paused (engine.pause or a gate that said stop): no new host or move starts.
    paused: bool = False
    #: Why the session is waiting to start its next host (window, pacing, gate), if it is.
    waiting: str | None = None
    stuck: tuple[StuckWork, ...] = ()
    progress: Progress | None = None
    #: Stored constraints the cloud contradicts (admin-only view; see IgnoredConstraint).
    ignored_constraints: tuple[IgnoredConstraint, ...] = ()
    #: The plan it was approved on, or awaits approval of (``approval: "required"``).
    approval: ApprovalView | None = None

    def host(self, name: str) -> HostView:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


@attrs.frozen
class InstanceView:
    """An instance in a project view. ``detail`` says what its move in progress
    is waiting for, as the cloud driver put it (e.g. a PodDisruptionBudget)."""

    instance_id: str
    instance_name: str
    host: str
    state: str
    action: str | None
    moves: int
    detail: str = ""


@attrs.frozen
class ProjectView:
    """One project's part of a session: its state and its instances only."""

    session_id: str
    project_id: str
    state: str | None
    reply_at: datetime | None
    instance_ids: tuple[str, ...]
    instances: tuple[InstanceView, ...]


@attrs.frozen
class OperationView:
    """One operation a session started (``engine.list_operations``), read-only.

    ``kind`` is ``move`` (a migration), ``watch`` (a manager's own action),
    ``action`` (an action plug-in run), ``disable_host``, ``enable_host``,
    ``host_up``, ``inventory`` or ``queue_hosts`` (the hosts still to
    maintain, told to a driver that steers new instances around them). For
    moves, ``source`` / ``target`` are the hosts, and ``moves_again`` says why
    a move lands on a host the instance will leave again (None when it stays
    there). ``status`` is pending, running, done, failed or abandoned.
    """

    kind: str
    status: str
    host: str | None
    instance_id: str | None
    source: str | None
    target: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    detail: str | None = None
    moves_again: str | None = None
