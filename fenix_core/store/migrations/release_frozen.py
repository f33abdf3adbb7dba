"""What migration 0008 needs of the code of its own release, frozen here.

A migration runs on databases long after it was written, on whatever code is
installed then: it must not read the live classes (a field renamed in
``RollingState``, a stage added to the rolling workflow, a new session
state would silently change what the upgrade writes). So the pieces 0008
needs are copied as they were when it was written (release of 2026-12-05):

* the state names (strings, as stored);
* the few request fields it reads, straight from the stored request JSON
  (:class:`OldRequest`);
* the component bodies the core read then (:class:`PipelineState`,
  :class:`RollingState`, :class:`ConstrainedState`, schema version 1: a
  later release reads them through its ``from_json``, which converts what
  changed since);
* the contract rolling workflow's host stages, its timer names and the
  constrained waves' stage flags;
* :func:`resolve_cap`, :func:`domains`, :func:`host_action_types` and
  :func:`budget_hosts`.

Nothing here imports ``fenix_core`` outside ``fenix_core.store.migrations``
(tests/test_layers.py checks it). Change nothing here unless 0008 itself
was wrong; a later change of the core's state is a later migration's job."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs

# --------------------------------------------------------------------------- states

AWAITING_APPROVAL = "AWAITING_APPROVAL"
MAINTENANCE = "MAINTENANCE"
SCALE_IN = "SCALE_IN"
PREPARE_MAINTENANCE = "PREPARE_MAINTENANCE"
START_MAINTENANCE = "START_MAINTENANCE"
PLANNED_MAINTENANCE = "PLANNED_MAINTENANCE"
MAINTENANCE_COMPLETE = "MAINTENANCE_COMPLETE"
MAINTENANCE_DONE = "MAINTENANCE_DONE"
MAINTENANCE_FAILED = "MAINTENANCE_FAILED"
MAINTENANCE_CANCELLED = "MAINTENANCE_CANCELLED"
SESSION_STATES = frozenset(
    {
        AWAITING_APPROVAL,
        MAINTENANCE,
        SCALE_IN,
        PREPARE_MAINTENANCE,
        START_MAINTENANCE,
        PLANNED_MAINTENANCE,
        MAINTENANCE_COMPLETE,
        MAINTENANCE_DONE,
        MAINTENANCE_FAILED,
        MAINTENANCE_CANCELLED,
    }
)
FINAL_SESSION_STATES = frozenset({MAINTENANCE_DONE, MAINTENANCE_FAILED, MAINTENANCE_CANCELLED})

# Host states (``session_hosts.state``).
DRAINING = "DRAINING"
DRAINED = "DRAINED"
IN_MAINTENANCE = "IN_MAINTENANCE"
SKIPPED = "SKIPPED"
DECOMMISSIONED = "DECOMMISSIONED"
REMOVED = "REMOVED"
ADDING = "ADDING"
#: Host states a percent cap does not count.
UNBUDGETED_HOST_STATES = frozenset({"OUT_OF_SCOPE", ADDING, "ADDED", REMOVED})


def budget_hosts(states: Iterable[str]) -> int:
    """How many hosts a session's percent caps are a percent of."""
    return sum(1 for state in states if state not in UNBUDGETED_HOST_STATES)


# --------------------------------------------------------------------------- the request

#: Action types, in run order on a host of each type.
ACTION_TYPES = ("pre", "host", "compute", "controller", "post")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def host_action_types(host_type: str) -> tuple[str, ...]:
    """Action types that run on a host of this type, in order."""
    return ("host", host_type) if host_type in ACTION_TYPES else ("host",)


#: A cap as stored: a count, or a percent text such as ``"10%"``.
Cap = int | str


def resolve_cap(cap: Cap, hosts: int) -> int:
    """The number of hosts ``cap`` allows out of ``hosts``: a percent rounded
    down, and never below 1."""
    if isinstance(cap, str):
        match = _PERCENT.match(cap)
        if match is None:
            raise ValueError(f"not a cap: {cap!r}")
        return max(1, math.floor(hosts * float(match.group(1)) / 100 + 1e-9))
    return int(cap)


def domains(labels: Mapping[str, Any], key: str) -> frozenset[str]:
    """The domains of ``key`` a host with ``labels`` is in (none without the label)."""
    value = labels.get(key)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(value)


@attrs.frozen
class OldRequest:
    """The fields of a stored session request (``sessions.request``) 0008 reads."""

    #: ``type`` of each action, in the request's order.
    action_types: tuple[str, ...] = ()
    decommission_hosts: tuple[str, ...] = ()
    max_hosts_per_hour: Cap | None = None
    max_hosts_per_day: Cap | None = None
    #: ``key`` of each ``controls.max_topology_in_maintenance`` cap.
    topology_keys: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> OldRequest:
        data = data or {}
        controls = data.get("controls") or {}
        return cls(
            action_types=tuple(str(a["type"]) for a in data.get("actions") or ()),
            decommission_hosts=tuple(data.get("decommission_hosts") or ()),
            max_hosts_per_hour=controls.get("max_hosts_per_hour"),
            max_hosts_per_day=controls.get("max_hosts_per_day"),
            topology_keys=tuple(
                str(c["key"]) for c in controls.get("max_topology_in_maintenance") or ()
            ),
        )

    def actions_on(self, host_type: str) -> int:
        """How many actions run on a host of ``host_type``."""
        types = host_action_types(host_type)
        return sum(1 for t in self.action_types if t in types)

    def count(self, action_type: str) -> int:
        return sum(1 for t in self.action_types if t == action_type)


# --------------------------------------------------------------------------- component bodies


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def _retries(value: object) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    out = []
    for item in value if isinstance(value, list | tuple) else ():
        iid, attempts, refused = item
        out.append((str(iid), int(attempts), tuple(str(r) for r in refused)))
    return tuple(out)


@attrs.define
class _Body:
    """A component's body as the core stored it (schema version 1)."""

    component: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class PipelineState(_Body):
    """The host pipeline's counters (``fenix_core.core.pipeline``)."""

    component: ClassVar[str] = "pipeline"

    paused: bool = False
    pause_reason: str | None = None
    in_maintenance: int = 0
    started: int = 0
    finished: int = 0
    recent_starts: list[str] = attrs.field(factory=list)
    last_finished: str | None = None
    last_host: str | None = None
    durations_count: int = 0
    durations_sum: float = 0.0
    durations_max: float = 0.0
    gate_host: str | None = None
    gate_passed: int = 0
    gate_running: bool = False
    waiting_cause: str | None = None
    waiting_reason: str | None = None
    waiting_until: str | None = None
    open_domains: dict[str, dict[str, int]] = attrs.field(factory=dict)


@attrs.define
class RollingState(_Body):
    """The contract rolling workflow's state (``fenix_core.workflows.rolling``)."""

    component: ClassVar[str] = "rolling"

    phase: str = "confirm"
    pre_done: int = 0
    post_done: int = 0
    action_running: bool = False
    drain_host: str | None = None
    we_disabled: str | None = None
    current_host: str | None = None
    stage: int = 0
    host_op: bool = False
    moving: str | None = None
    move_attempts: int = 0
    refused: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    refusals: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    retry_wait: bool = False
    scale_in_rounds: int = 0
    scale_in_load: int = 0
    scale_in_freed: int = 0
    listed: bool = False
    ended: bool = False
    locating: bool = False
    hosts_listed: bool = False
    adding: bool = False
    host_down: str | None = None


@attrs.define
class ConstrainedState(_Body):
    """The constrained waves' state (``fenix_core.workflows.constrained``)."""

    component: ClassVar[str] = "constrained"

    wave: int = 0
    stamp: int = 0
    recovering: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    retrying: tuple[tuple[str, int, tuple[str, ...]], ...] = attrs.field(
        default=(), converter=_retries
    )
    wake: str | None = None


# --------------------------------------------------------------------------- workflow facts

#: The rolling workflow's name for "the cloud's scheduler chose the target".
SCHEDULER = ""
#: Flags of an open host's stage in the constrained waves (``HostView.stage``).
WE_DISABLED = 1 << 16  # this session disabled it: enabled again at the end
BUSY = 1 << 17  # an operation of its current stage runs
DISABLING = 1 << 18  # its DisableHost (before the drain) runs
FIRST_DRAINED = 1 << 19  # a first drained host: its instances may move twice


def deadline_timer(project_id: str) -> str:
    """The timer of a project's reply deadline."""
    return "reply_deadline:" + project_id


def rolling_stages(request: OldRequest, name: str, host_type: str) -> list[str]:
    """The contract rolling workflow's stages of a host, in order (an action
    stage is ``action:<index>``); a host the request decommissions is not
    brought back."""
    stages = ["disable", "verify_empty", "notify_in"] if host_type == "compute" else ["notify_in"]
    stages += [f"action:{k}" for k in range(request.actions_on(host_type))]
    if name in request.decommission_hosts:
        return [*stages, "decommission"]
    return [*stages, "host_up", "enable", "notify_complete"]
