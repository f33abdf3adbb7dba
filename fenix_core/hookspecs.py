"""The whole extension surface of fenix-core: hooks, and what they return.

Plug-ins are plain objects (or modules) with methods marked ``@hookimpl``;
pass them to ``Engine(plugins=[...])`` or publish them in the ``fenix``
entry-point group. A hook implementation may accept fewer arguments than the
spec lists (pluggy passes only those it names).

Three hooks::

    @hookimpl
    def fenix_cloud_driver(clock):      # exactly one plug-in answers
        return MyDriver(...)             # a CloudDriver

    @hookimpl
    def fenix_actions(clock):            # all answers are collected
        return [UpgradeAction()]         # Action objects, each with a unique name

    @hookimpl
    def fenix_workflows():               # all answers are merged
        return {"mine": MyWorkflow}      # name -> Workflow subclass

A cloud driver and an action never block for long: what takes time is started
and then polled, with :class:`~fenix_core.model.OperationStatus` saying when to
ask again. That is what lets the engine run thousands of hosts without a thread
each, and resume after a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import pluggy

from .clock import Clock
from .constraints import CloudConstraints
from .model import ActionSpec, Host, Instance, OperationStatus

if TYPE_CHECKING:
    from .workflows.base import Workflow

__all__ = [
    "PROJECT_NAME",
    "Action",
    "ActionContext",
    "CloudDriver",
    "ConstraintSource",
    "MoveLookup",
    "hookimpl",
    "hookspec",
]

PROJECT_NAME = "fenix"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@runtime_checkable
class CloudDriver(Protocol):
    """What the engine needs from a cloud (OpenStack, Kubernetes, a simulator).

    Instance ids, host names and project ids are the cloud's own. Methods raise
    :class:`~fenix_core.errors.CloudError` (or any exception, which the engine
    wraps in one) when the cloud refuses.
    """

    name: str

    def list_hosts(self) -> Sequence[Host]:
        """Every host the cloud has, compute and controller."""

    def list_instances(self, hosts: Sequence[str] | None = None) -> Sequence[Instance]:
        """The instances on ``hosts`` (``None``: on every host)."""

    def locate(self, instance_id: str) -> str | None:
        """The host the instance is on now, or ``None`` if it no longer exists."""

    def allowed_actions(self) -> Sequence[str]:
        """Instance actions a project may choose (``allowed_actions`` in payloads).

        When the engine moves an instance itself it uses LIVE_MIGRATE where
        offered (and the instance allows it), else MIGRATE, else EVICT.
        """

    def disable_host(self, host: str, reason: str) -> None:
        """Stop scheduling onto ``host`` (nova-compute disabled, node cordoned)."""

    def enable_host(self, host: str) -> None:
        """Put ``host`` back into service."""

    def host_is_up(self, host: str) -> bool:
        """Whether ``host`` is up and usable again after its maintenance."""

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        """Start moving an instance off its host; return a handle to poll.

        ``action`` is one of :meth:`allowed_actions` (never OWN_ACTION), ``target``
        the preferred destination host (a driver may let its scheduler choose),
        ``key`` an idempotency key that is unique to this attempt.
        """

    def poll_move(self, handle: str) -> OperationStatus:
        """The state of a move; when done, ``host`` is where the instance is now."""


@runtime_checkable
class MoveLookup(Protocol):
    """Optional driver capability: find a move by its idempotency key.

    After a crash the engine knows it recorded a move's key but not whether
    the driver call happened. It asks ``find_move(key)`` first: a handle means
    the move was started (poll it), ``None`` means it never reached the cloud
    (start it). Drivers without this capability have the move started again.
    """

    def find_move(self, key: str) -> str | None: ...


@runtime_checkable
class ConstraintSource(Protocol):
    """Optional driver capability: default constraints from the cloud's objects.

    OpenStack anti-affinity server groups, Kubernetes PodDisruptionBudgets and
    pod anti-affinity become group constraints; constraints set through the
    engine's API win over them.
    """

    def cloud_constraints(self, instances: Sequence[Instance]) -> CloudConstraints: ...


@attrs.frozen
class ActionContext:
    """Everything an action plug-in is told about one run.

    ``key`` is unique to this run of this action on this host in this session
    and stays the same when the engine asks again (poll), so an action can keep
    its own bookkeeping by key and never repeat its effect.
    """

    session_id: str
    key: str
    spec: ActionSpec
    host: str | None
    host_type: str | None
    now: datetime
    session_metadata: Mapping[str, Any]
    download: tuple[str, ...] = ()

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The action's own metadata from the session request."""
        return self.spec.metadata


@runtime_checkable
class Action(Protocol):
    """A named maintenance action (upgrade, reboot, firmware ...).

    ``start`` begins a run and may finish it at once (return ``done``); when it
    returns ``running``, the engine calls ``poll`` with the same context after
    ``retry_after`` seconds until it is ``done`` or ``failed``. Raising counts
    as ``failed`` with the exception as the detail.
    """

    name: str

    def start(self, context: ActionContext) -> OperationStatus: ...

    def poll(self, context: ActionContext) -> OperationStatus: ...


class _Specs:
    """Hook specifications (collected by the plug-in manager)."""

    @hookspec
    def fenix_cloud_driver(self, clock: Clock) -> CloudDriver | None:
        """Return the cloud driver, or None.

        Exactly one plug-in may answer: two drivers are an error (the engine
        would otherwise pick one by registration order, silently).
        ``clock`` is the engine's clock: simulated clouds keep their time with it.
        """

    @hookspec
    def fenix_actions(self, clock: Clock) -> Sequence[Action]:  # type: ignore[empty-body]
        """Return the action plug-ins this plug-in provides.

        ``ActionSpec.plugin`` names one of them by its ``name``; two actions with
        the same name are an error.
        """

    @hookspec
    def fenix_workflows(self) -> Mapping[str, type[Workflow]]:  # type: ignore[empty-body]
        """Return workflows by name (``SessionRequest.workflow``)."""
