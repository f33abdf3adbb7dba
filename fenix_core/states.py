"""Session, host and instance states, and the tables of allowed changes.

The session lifecycle runs on one shared :class:`transitions.Machine`: each
loaded session adds a small model to it, and a workflow changes state only by
firing a trigger from :data:`SESSION_TRANSITIONS`. Hosts and instances are far
more numerous, so they are plain enum columns checked against
:data:`HOST_TRANSITIONS` / :data:`INSTANCE_TRANSITIONS` (a Machine per row would
cost about a millisecond and 25 KB each).

An illegal change raises :class:`~fenix_core.errors.IllegalTransition` naming
both states.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from transitions import Machine, MachineError

from .errors import IllegalTransition

__all__ = [
    "DONE_HOST_STATES",
    "FINAL_SESSION_STATES",
    "HOLDS_NO_HOSTS",
    "HOST_TRANSITIONS",
    "INSTANCE_TRANSITIONS",
    "PROJECT_NOTIFICATIONS",
    "SESSION_TRANSITIONS",
    "UNBUDGETED_HOST_STATES",
    "WORK_HOST_STATES",
    "HostState",
    "InstanceAction",
    "InstanceState",
    "SessionLifecycle",
    "SessionState",
    "budget_hosts",
    "check_host_transition",
    "check_instance_transition",
    "instance_action",
    "normalize_reply_state",
]


class SessionState(StrEnum):
    """The Fenix v1 session states, and fenix-core's own (commented)."""

    # fenix-core: created with ``approval: required``; its plan is stored and
    # shown, no host is touched or reserved until engine.approve_session.
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    MAINTENANCE = "MAINTENANCE"
    SCALE_IN = "SCALE_IN"
    PREPARE_MAINTENANCE = "PREPARE_MAINTENANCE"
    START_MAINTENANCE = "START_MAINTENANCE"
    PLANNED_MAINTENANCE = "PLANNED_MAINTENANCE"
    MAINTENANCE_COMPLETE = "MAINTENANCE_COMPLETE"
    MAINTENANCE_DONE = "MAINTENANCE_DONE"
    MAINTENANCE_FAILED = "MAINTENANCE_FAILED"
    # fenix-core: the admin cancelled it (engine.cancel); its hosts are back in service.
    MAINTENANCE_CANCELLED = "MAINTENANCE_CANCELLED"


FINAL_SESSION_STATES = frozenset(
    {
        SessionState.MAINTENANCE_DONE,
        SessionState.MAINTENANCE_FAILED,
        SessionState.MAINTENANCE_CANCELLED,
    }
)

#: States in which a session reserves none of its hosts: other sessions may
#: take them (it ended, or it waits for approval and re-checks them then).
HOLDS_NO_HOSTS = FINAL_SESSION_STATES | {SessionState.AWAITING_APPROVAL}

_S = SessionState
_RUNNING = [s for s in SessionState if s not in FINAL_SESSION_STATES]

#: The session lifecycle. ``trigger`` is what a workflow asks for.
SESSION_TRANSITIONS: list[dict[str, Any]] = [
    # The admin approved the stored plan and the cloud still matches it.
    {"trigger": "approve", "source": _S.AWAITING_APPROVAL, "dest": _S.MAINTENANCE},
    {
        "trigger": "scale_in",
        "source": [
            _S.MAINTENANCE,
            _S.SCALE_IN,
            _S.PREPARE_MAINTENANCE,
            _S.START_MAINTENANCE,
            _S.PLANNED_MAINTENANCE,
        ],
        "dest": _S.SCALE_IN,
    },
    {
        "trigger": "prepare",
        "source": [_S.MAINTENANCE, _S.SCALE_IN, _S.START_MAINTENANCE],
        "dest": _S.PREPARE_MAINTENANCE,
    },
    {
        "trigger": "start",
        "source": [
            _S.MAINTENANCE,
            _S.SCALE_IN,
            _S.PREPARE_MAINTENANCE,
            _S.PLANNED_MAINTENANCE,
            _S.START_MAINTENANCE,
        ],
        "dest": _S.START_MAINTENANCE,
    },
    {
        "trigger": "plan",
        "source": [_S.MAINTENANCE, _S.SCALE_IN, _S.START_MAINTENANCE],
        "dest": _S.PLANNED_MAINTENANCE,
    },
    {
        "trigger": "complete",
        "source": [
            _S.MAINTENANCE,
            _S.SCALE_IN,
            _S.PREPARE_MAINTENANCE,
            _S.START_MAINTENANCE,
            _S.PLANNED_MAINTENANCE,
        ],
        "dest": _S.MAINTENANCE_COMPLETE,
    },
    {"trigger": "done", "source": _S.MAINTENANCE_COMPLETE, "dest": _S.MAINTENANCE_DONE},
    {"trigger": "fail", "source": _RUNNING, "dest": _S.MAINTENANCE_FAILED},
    {"trigger": "retry", "source": _S.MAINTENANCE_FAILED, "dest": _S.MAINTENANCE},
    {"trigger": "cancel", "source": _RUNNING, "dest": _S.MAINTENANCE_CANCELLED},
]

# transitions logs every state entry at INFO; thousands of sessions would flood
# an application's logs with it. Quieten it unless the application chose a level.
if logging.getLogger("transitions.core").level == logging.NOTSET:
    logging.getLogger("transitions.core").setLevel(logging.WARNING)

_machine_lock = threading.Lock()
_machine = Machine(
    model=None,
    states=[s.value for s in SessionState],
    transitions=[
        {
            "trigger": t["trigger"],
            "source": [str(s) for s in t["source"]]
            if isinstance(t["source"], list)
            else str(t["source"]),
            "dest": str(t["dest"]),
        }
        for t in SESSION_TRANSITIONS
    ],
    initial=SessionState.MAINTENANCE.value,
    auto_transitions=False,
)


class SessionLifecycle:
    """The model a session adds to the shared Machine while it is loaded."""

    state: str

    def __init__(self, session_id: str, state: str) -> None:
        self.session_id = session_id
        with _machine_lock:
            _machine.add_model(self, initial=state)

    def fire(self, trigger: str) -> SessionState:
        """Fire ``trigger``; return the new state or raise IllegalTransition."""
        source = self.state
        with _machine_lock:
            try:
                allowed = _machine.get_triggers(source)
                if trigger not in allowed:
                    raise MachineError(f"{trigger} not allowed from {source}")
                self.trigger(trigger)  # type: ignore[attr-defined]
            except MachineError:
                dest = _trigger_dest(trigger)
                raise IllegalTransition(
                    "session", source, dest, session_id=self.session_id
                ) from None
        return SessionState(self.state)

    def allowed_triggers(self) -> list[str]:
        with _machine_lock:
            return list(_machine.get_triggers(self.state))

    def release(self) -> None:
        """Remove the model from the shared Machine (session unloaded)."""
        with _machine_lock:
            _machine.remove_model(self)


def _trigger_dest(trigger: str) -> str:
    for t in SESSION_TRANSITIONS:
        if t["trigger"] == trigger:
            return str(t["dest"])
    return f"<unknown trigger {trigger}>"


class HostState(StrEnum):
    PENDING = "PENDING"  # waiting for its turn
    DRAINING = "DRAINING"  # disabled, its instances are being moved away
    DRAINED = "DRAINED"  # empty, about to be maintained
    IN_MAINTENANCE = "IN_MAINTENANCE"  # disabled, actions running
    MAINTAINED = "MAINTAINED"  # back in service
    FAILED = "FAILED"
    # Work on it got stuck and the escalation policy said skip_host: left as it
    # was (disabled if it was), not maintained, the session went on.
    SKIPPED = "SKIPPED"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"  # not maintained by this session; a migration target only
    ADDING = "ADDING"  # named in add_hosts; waiting for it to appear and be in service
    ADDED = "ADDED"  # brought into service during the session; a migration target only
    DECOMMISSIONED = "DECOMMISSIONED"  # emptied, actions run, left disabled for good
    REMOVED = "REMOVED"  # gone from the cloud during the session; its pending work dropped


_H = HostState
#: The host states each host state may become.
HOST_TRANSITIONS: dict[HostState, frozenset[HostState]] = {
    _H.PENDING: frozenset(
        {_H.DRAINING, _H.DRAINED, _H.IN_MAINTENANCE, _H.FAILED, _H.SKIPPED, _H.REMOVED}
    ),
    _H.DRAINING: frozenset({_H.DRAINED, _H.PENDING, _H.FAILED, _H.SKIPPED, _H.REMOVED}),
    _H.DRAINED: frozenset({_H.IN_MAINTENANCE, _H.PENDING, _H.FAILED, _H.SKIPPED, _H.REMOVED}),
    _H.IN_MAINTENANCE: frozenset(
        {_H.MAINTAINED, _H.DECOMMISSIONED, _H.FAILED, _H.SKIPPED, _H.REMOVED}
    ),
    _H.MAINTAINED: frozenset({_H.REMOVED}),
    _H.FAILED: frozenset({_H.PENDING, _H.REMOVED}),
    _H.SKIPPED: frozenset({_H.REMOVED}),
    _H.OUT_OF_SCOPE: frozenset({_H.REMOVED}),
    _H.ADDING: frozenset({_H.ADDED}),
    _H.ADDED: frozenset({_H.REMOVED}),
    _H.DECOMMISSIONED: frozenset(),
    _H.REMOVED: frozenset(),
}

#: Host states that count towards a session's ``percent_done`` (the hosts it
#: maintains or decommissions); the others are targets, or work that was dropped.
WORK_HOST_STATES = frozenset(
    {_H.PENDING, _H.DRAINING, _H.DRAINED, _H.IN_MAINTENANCE, _H.MAINTAINED, _H.FAILED}
    | {_H.DECOMMISSIONED}
)
#: Host states whose work is finished.
DONE_HOST_STATES = frozenset({_H.MAINTAINED, _H.DECOMMISSIONED})
#: Host states that are not part of a session's work for its budgets (a cap
#: in percent is a percent of the other hosts): targets, and hosts the cloud lost.
UNBUDGETED_HOST_STATES = frozenset({_H.OUT_OF_SCOPE, _H.ADDING, _H.ADDED, _H.REMOVED})


def budget_hosts(states: Iterable[str]) -> int:
    """How many hosts a session's percent caps are a percent of."""
    return sum(1 for state in states if state not in UNBUDGETED_HOST_STATES)


class InstanceState(StrEnum):
    PENDING = "PENDING"  # on a host that is not maintained yet
    ACTION_REQUESTED = "ACTION_REQUESTED"  # its project was asked how to move it
    ACTION_CHOSEN = "ACTION_CHOSEN"  # the action is known, waiting for its turn
    IN_ACTION = "IN_ACTION"  # being moved (migration, or the manager's own action)
    DONE = "DONE"  # on a host it does not have to leave again
    GONE = "GONE"  # deleted (scaled in, re-created elsewhere)
    FAILED = "FAILED"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"  # on a host that this session does not maintain


_I = InstanceState
#: The instance states each instance state may become.
INSTANCE_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    _I.PENDING: frozenset(
        {_I.ACTION_REQUESTED, _I.ACTION_CHOSEN, _I.DONE, _I.GONE, _I.FAILED, _I.OUT_OF_SCOPE}
    ),
    _I.ACTION_REQUESTED: frozenset({_I.ACTION_CHOSEN, _I.PENDING, _I.GONE, _I.FAILED, _I.DONE}),
    _I.ACTION_CHOSEN: frozenset({_I.IN_ACTION, _I.PENDING, _I.GONE, _I.FAILED, _I.DONE}),
    _I.IN_ACTION: frozenset({_I.DONE, _I.PENDING, _I.ACTION_CHOSEN, _I.GONE, _I.FAILED}),
    _I.DONE: frozenset({_I.PENDING, _I.GONE}),
    _I.GONE: frozenset({_I.PENDING}),
    _I.FAILED: frozenset({_I.PENDING, _I.GONE}),
    _I.OUT_OF_SCOPE: frozenset({_I.PENDING, _I.DONE, _I.GONE}),
}


def check_host_transition(source: HostState, dest: HostState, *, host: str = "") -> None:
    if source != dest and dest not in HOST_TRANSITIONS[source]:
        raise IllegalTransition(f"host {host}".strip(), source.value, dest.value)


def check_instance_transition(
    source: InstanceState, dest: InstanceState, *, instance_id: str = ""
) -> None:
    if source != dest and dest not in INSTANCE_TRANSITIONS[source]:
        raise IllegalTransition(f"instance {instance_id}".strip(), source.value, dest.value)


class InstanceAction(StrEnum):
    """How an instance leaves a host. A cloud driver says which it supports."""

    MIGRATE = "MIGRATE"
    LIVE_MIGRATE = "LIVE_MIGRATE"
    OWN_ACTION = "OWN_ACTION"
    EVICT = "EVICT"


_INSTANCE_ACTIONS = {a.value: a for a in InstanceAction}


def instance_action(value: str) -> InstanceAction:
    """``InstanceAction(value)`` by a dict lookup (an Enum call is a visible
    cost where every move converts its stored action); a value that names
    none (a stored one may be anything) raises ValueError as the call does."""
    found = _INSTANCE_ACTIONS.get(value) if isinstance(value, str) else None
    return found if found is not None else InstanceAction(value)


#: Notification states sent to projects in ``maintenance_planned``; those that
#: expect an answer map to the reply suffix they expect (``ACK_x`` / ``NACK_x``).
PROJECT_NOTIFICATIONS: dict[str, bool] = {
    "MAINTENANCE": True,
    "SCALE_IN": True,
    "PREPARE_MAINTENANCE": True,
    "PLANNED_MAINTENANCE": True,
    "INSTANCE_ACTION_DONE": False,
    "ADMIN_ACTION_DONE": False,
    "MAINTENANCE_COMPLETE": True,
}

_REPLY_ALIASES = {"IN_SCALE": "SCALE_IN"}


def normalize_reply_state(state: str) -> tuple[bool, str] | None:
    """Split a reply state into (acknowledged, awaited state).

    ``"ACK_PLANNED_MAINTENANCE"`` -> ``(True, "PLANNED_MAINTENANCE")``;
    ``"NACK_IN_SCALE"`` -> ``(False, "SCALE_IN")``. ``None`` if not a reply state.
    """
    found = _SPLIT.get(state)
    if found is not None:
        return found
    for prefix, ack in (("ACK_", True), ("NACK_", False)):
        if state.startswith(prefix):
            awaited = _REPLY_ALIASES.get(state[len(prefix) :], state[len(prefix) :])
            if PROJECT_NOTIFICATIONS.get(awaited):
                found = _SPLIT[state] = (ack, awaited)
                return found
    return None


#: The reply states split so far: a reply is split when it arrives, when it is
#: checked and when its step takes it. Only valid ones are kept (a dozen at
#: most), so what a caller sends cannot grow it.
_SPLIT: dict[str, tuple[bool, str]] = {}
