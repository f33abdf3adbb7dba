"""Typed operations: what a workflow submits, and what comes back.

The kinds and statuses carry the strings the ``operations`` table
stores, so rows written by earlier releases read the same."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import attrs

from ..model import ActionSpec
from ..states import InstanceAction

__all__ = [
    "DisableHost",
    "EnableHost",
    "HostUp",
    "Inventory",
    "ListHosts",
    "Locate",
    "Move",
    "OpKind",
    "OpRef",
    "OpResult",
    "OpStatus",
    "Operation",
    "RunAction",
    "Watch",
    "host_of",
    "kind_of",
]


class OpKind(StrEnum):
    DISABLE_HOST = "disable_host"
    ENABLE_HOST = "enable_host"
    MOVE = "move"  # a migration the cloud driver runs
    WATCH = "watch"  # a move the project's manager makes itself (OWN_ACTION)
    ACTION = "action"  # an action plug-in's run
    HOST_UP = "host_up"  # wait until a host added to the session is in service
    INVENTORY = "inventory"  # list the instances on some hosts
    LIST_HOSTS = "list_hosts"  # list the cloud's hosts, waiting for some to appear
    LOCATE = "locate"  # where some instances are now
    GATE = "gate"  # a health gate's check: started by the host pipeline, never submitted
    QUEUE_HOSTS = "queue_hosts"  # steering (HostQueue): started by the core, never submitted


class OpStatus(StrEnum):
    PENDING = "pending"  # recorded, not started yet (started after the step commits)
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"  # no longer followed (the session failed or was cancelled)


@attrs.frozen
class DisableHost:
    host: str
    reason: str = "maintenance"


@attrs.frozen
class EnableHost:
    host: str


@attrs.frozen
class Move:
    """Move an instance off its host. ``target`` None lets the cloud choose;
    ``refused`` are targets the cloud refused earlier in this move;
    ``moves_again`` says why ``target`` is a host the instance will have to
    leave again (shown in the plan as ``moved_again``; None: it stays there)."""

    instance_id: str
    action: InstanceAction
    target: str | None = None
    refused: frozenset[str] = frozenset()
    moves_again: str | None = None


@attrs.frozen
class Watch:
    instance_id: str


@attrs.frozen
class RunAction:
    """Run an action plug-in; ``sequence`` names the run of actions it belongs
    to (a host's stages, the session's pre/post), ``host`` the host it works on."""

    spec: ActionSpec
    sequence: str
    host: str | None = None


@attrs.frozen
class HostUp:
    host: str


@attrs.frozen
class Inventory:
    hosts: tuple[str, ...]


@attrs.frozen
class ListHosts:
    wait_for: tuple[str, ...] = ()


@attrs.frozen
class Locate:
    instance_ids: tuple[str, ...]


Operation = (
    DisableHost | EnableHost | Move | Watch | RunAction | HostUp | Inventory | ListHosts | Locate
)

_KINDS: dict[type[Any], OpKind] = {
    DisableHost: OpKind.DISABLE_HOST,
    EnableHost: OpKind.ENABLE_HOST,
    Move: OpKind.MOVE,
    Watch: OpKind.WATCH,
    RunAction: OpKind.ACTION,
    HostUp: OpKind.HOST_UP,
    Inventory: OpKind.INVENTORY,
    ListHosts: OpKind.LIST_HOSTS,
    Locate: OpKind.LOCATE,
}


def kind_of(op: Operation) -> OpKind:
    return _KINDS[type(op)]


def host_of(op: Operation) -> str | None:
    """The host an operation works on (for Move and Watch: none by itself; the
    instance's host is the one it leaves)."""
    if isinstance(op, DisableHost | EnableHost | HostUp | RunAction):
        return op.host
    return None


@attrs.frozen
class OpRef:
    """What ``submit`` returns: the operation's idempotency key and kind."""

    key: str
    kind: OpKind


@attrs.frozen
class OpResult:
    """What ``Workflow.on_operation`` receives once an operation ended."""

    ref: OpRef
    op: Operation
    status: OpStatus
    detail: str | None = None
    result: Mapping[str, Any] = attrs.field(factory=dict)
    timed_out: bool = False
