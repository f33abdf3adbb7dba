"""The whole extension surface of fenix-core: hooks, and what they return.

Plug-ins are plain objects (or modules) with methods marked ``@hookimpl``;
pass them to ``Engine(plugins=[...])`` or publish them in the ``fenix``
entry-point group. A hook implementation may accept fewer arguments than the
spec lists (pluggy passes only those it names).

Four hooks::

    @hookimpl
    def fenix_cloud_driver(clock):      # exactly one plug-in answers
        return MyDriver(...)             # a CloudDriver

    @hookimpl
    def fenix_actions(clock):            # all answers are collected
        return [UpgradeAction()]         # Action objects, each with a unique name

    @hookimpl
    def fenix_workflows():               # all answers are merged
        return {"mine": MyWorkflow}      # name -> Workflow subclass

    @hookimpl
    def fenix_gates():                   # all answers are collected
        return [MyHealthGate()]          # Gate objects, each with a unique name

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

from ..clock import Clock
from ..constraints import CloudConstraints
from ..model import ActionSpec, Host, Instance, OperationStatus

if TYPE_CHECKING:
    from ..contract import Workflow

__all__ = [
    "PROJECT_NAME",
    "Action",
    "ActionContext",
    "CloudDriver",
    "ConstraintSource",
    "Gate",
    "GateContext",
    "GateResult",
    "HostGuard",
    "HostQueue",
    "HostQueueChanges",
    "InstanceOwner",
    "InstanceReadiness",
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


@runtime_checkable
class InstanceOwner(Protocol):
    """Optional driver capability: which project owns one instance, per the cloud.

    The engine asks it when a constraint is written, so that a project can
    only set constraints of its own instances (``None``: the cloud has no such
    instance). Without it the engine falls back to the project a session's
    listing recorded for the instance, else accepts the writer's project: the
    row is keyed by that project, so it never governs or locks out another
    project's instance, and a session reports it as ignored when its listing
    says otherwise.
    """

    def instance_owner(self, instance_id: str) -> str | None: ...


@runtime_checkable
class InstanceReadiness(Protocol):
    """Optional driver capability: whether an instance is serving again.

    True when the instance is ACTIVE (OpenStack) / Ready (Kubernetes) after a
    move. The ``instances_back`` gate uses it; without it the gate only checks
    that the instance exists.
    """

    def instance_is_ready(self, instance_id: str) -> bool: ...


@runtime_checkable
class HostQueue(Protocol):
    """Optional driver capability: steer new instances away from hosts a
    session still has to maintain, so that what its cloud places meanwhile
    (a replacement pod) does not have to move again.

    ``hosts`` is the whole set of hosts session ``session_id`` still has to
    maintain, sent again each time it changes and empty once the session
    ended (done, failed or cancelled); a host left out is no longer steered
    around. Best effort: a failure is logged, the session goes on. The
    Kubernetes driver puts a ``PreferNoSchedule`` taint on those nodes.
    """

    def mark_queued(self, session_id: str, hosts: Sequence[str]) -> None: ...


@runtime_checkable
class HostQueueChanges(Protocol):
    """Optional, next to :class:`HostQueue`: one host joined (``queued``) or
    left session ``session_id``'s queue. A driver that has it is told of each
    change of one host instead of the whole set again, so a host leaving the
    queue touches only that host; the whole set (``HostQueue.mark_queued``)
    is still sent when the session starts and (empty) when it ends. Best
    effort, as ``mark_queued``. The Kubernetes driver has it.
    """

    def host_queued(self, session_id: str, host: str, queued: bool) -> None: ...


@runtime_checkable
class HostGuard(Protocol):
    """Optional driver capability: may this controller host be taken out of
    service now?

    Asked (through the built-in ``host_guard`` gate) before every controller
    host starts, until it answers ``None``: anything else is the reason to
    wait, shown in the session view (``SessionView.waiting``). The Kubernetes
    driver answers with its etcd quorum guard: a control-plane node waits
    while another control-plane node or etcd member is not Ready.
    """

    def host_guard(self, host: str) -> str | None: ...


@attrs.frozen
class GateResult:
    """A gate's answer: ``ok``, ``wait`` (not yet: ask again after
    ``retry_after`` seconds; the session waits with ``message`` in its view) or
    ``stop`` (the session pauses with ``message`` until the admin resumes it)."""

    verdict: str  # ok | wait | stop
    message: str = ""
    retry_after: float = 30.0

    @classmethod
    def ok(cls, message: str = "") -> GateResult:
        return cls("ok", message)

    @classmethod
    def wait(cls, message: str, retry_after: float = 30.0) -> GateResult:
        return cls("wait", message, max(0.0, float(retry_after)))

    @classmethod
    def stop(cls, message: str) -> GateResult:
        return cls("stop", message)


@attrs.define
class GateContext:
    """What a gate is told when it is asked whether the next host may start.

    ``host`` is the host about to start; ``last_host`` the host that finished
    last (None before the first) and ``moved_instances`` the instances moved
    off it. ``first_checked`` is when this gate was first asked about ``host``.
    ``memo`` is the gate's own JSON-serialisable scratch pad for this host,
    kept across checks (and restarts). ``driver`` is the cloud driver.
    """

    session_id: str
    gate: str
    params: Mapping[str, Any]
    host: str
    last_host: str | None
    moved_instances: tuple[str, ...]
    now: datetime
    first_checked: datetime
    memo: dict[str, Any]
    driver: CloudDriver | None


@runtime_checkable
class Gate(Protocol):
    """A health gate: asked before each host starts, until it says ok.

    ``check`` must not block for long (it runs in the engine's loop, like a
    driver call); raising counts as "not yet" with the error as the message.
    A session uses the gates its request names in ``controls.gates``.
    """

    name: str

    def check(self, context: GateContext) -> GateResult: ...


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
    def fenix_gates(self) -> Sequence[Gate]:  # type: ignore[empty-body]
        """Return the health gates this plug-in provides (``controls.gates``
        names them); two gates with the same name are an error. The built-in
        ``instances_back`` and ``http`` gates are always there."""

    @hookspec
    def fenix_workflows(self) -> Mapping[str, type[Workflow]]:  # type: ignore[empty-body]
        """Return workflows by name (``SessionRequest.workflow``)."""
