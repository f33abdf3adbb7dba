"""A new session's validation and initial records, as pure code.

``SessionFactory.build`` takes the request and what the caller read from the
cloud and the database (hosts, instances, allowed actions, the cloud's
constraints, the constraints in force, the subscribed projects) and returns
the session's rows as a :class:`~fenix_core.core.ports.NewSession`, or raises
``InvalidInput`` / ``CloudError`` naming what is wrong. It does no I/O: the
reads happen before (:meth:`CloudSnapshot.read` asks the driver), the insert
(with the check that no other running session maintains the hosts, and the
inventory sync) after, in the caller's transaction. Rows are tuples in the
column orders of :mod:`.records`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

from ..budgets import capped_labels, widest_host
from ..constraints import DEFAULT_GROUP, CloudConstraints, ConstraintSet, GroupConstraints
from ..errors import CloudError, Conflict, FenixError, InvalidInput
from ..model import Host, Instance, SessionRequest
from ..operations import cloud_constraints_dict
from ..planner import capacity_shortfall
from ..plugins.hookspecs import ConstraintSource, HostGuard
from ..scope_check import check_request
from ..states import HostState, InstanceAction, InstanceState, SessionState
from .ports import NewSession
from .records import (
    HOST_COLUMNS,
    INSTANCE_COLUMNS,
    PROJECT_COLUMNS,
    SESSION_COLUMNS,
    host_record,
    instance_record,
    project_record,
)

__all__ = [
    "HOST_COLUMNS",
    "INSTANCE_COLUMNS",
    "PROJECT_COLUMNS",
    "SESSION_COLUMNS",
    "CloudRead",
    "CloudSnapshot",
    "SessionFactory",
    "WorkflowClass",
    "default_group_rules",
    "topology_labels",
]


class WorkflowClass(Protocol):
    """What the factory asks of a workflow class."""

    @classmethod
    def validate_request(cls, request: SessionRequest, action_names: Iterable[str]) -> None: ...
    @classmethod
    def retiring(cls, request: SessionRequest) -> frozenset[str]: ...


@attrs.frozen
class CloudSnapshot:
    """What the cloud driver reported when the session was asked for."""

    hosts: Sequence[Host]
    instances: Sequence[Instance]
    allowed_actions: Sequence[str]
    constraints: CloudConstraints | None = None
    #: The driver guards its hosts (:class:`~fenix_core.hookspecs.HostGuard`).
    host_guard: bool = False

    @classmethod
    def read(cls, driver: Any) -> CloudSnapshot:
        """Ask the cloud driver (the caller's one read before ``build``);
        an error of the driver's becomes ``CloudError``."""
        try:
            hosts = list(driver.list_hosts())
            instances = list(driver.list_instances(None))
            allowed = [str(a) for a in driver.allowed_actions()]
            found = (
                driver.cloud_constraints(instances)
                if isinstance(driver, ConstraintSource)
                else None
            )
        except FenixError:
            raise
        except Exception as exc:
            raise CloudError(f"reading the cloud's inventory failed: {exc}") from exc
        return cls(hosts, instances, allowed, found, isinstance(driver, HostGuard))


@attrs.frozen
class CloudRead:
    """What the cloud listed for a session, checked against its request."""

    hosts: tuple[Host, ...]
    instances: tuple[Instance, ...]
    allowed: tuple[str, ...]
    found: CloudConstraints | None
    #: The hosts the session maintains, in order.
    scope: tuple[str, ...]
    #: Hosts the request names that the cloud no longer lists (approval only).
    gone: tuple[str, ...]
    host_guard: bool
    #: The labels of the scope's hosts that the request's topology caps name.
    topology: Mapping[str, Mapping[str, str | list[str]]] = attrs.field(factory=dict)

    @property
    def cloud(self) -> dict[str, Any] | None:
        return cloud_constraints_dict(self.found) if self.found is not None else None

    def session_data(self) -> dict[str, Any]:
        """What the session's data keeps of this read (written at creation
        and again when an approval re-plans)."""
        return (
            {"allowed_actions": list(self.allowed)}
            | ({"cloud_constraints": self.cloud} if self.cloud else {})
            | ({"host_guard": True} if self.host_guard else {})
            | ({"host_labels": dict(self.topology)} if self.topology else {})
        )


def default_group_rules(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The rules of instances in no group: ``value`` over the built-in
    :data:`~fenix_core.constraints.DEFAULT_GROUP`, checked (InvalidInput naming
    ``default_group_constraints.<key>``)."""
    rules = {**DEFAULT_GROUP, **(value or {})}
    for key in rules:
        if key not in DEFAULT_GROUP and key != "resource_mitigation":
            raise InvalidInput(f"default_group_constraints.{key}", "unknown field")
    try:
        GroupConstraints(group_id="default", project_id="default", **rules)
    except InvalidInput as exc:
        raise InvalidInput(f"default_group_constraints.{exc.field}", exc.reason) from None
    return rules


def topology_labels(
    req: SessionRequest, scope: Sequence[Host]
) -> dict[str, dict[str, str | list[str]]]:
    """The labels of the session's hosts that its topology caps name; a host
    in more domains than a cap allows could never start: refused here."""
    caps = req.controls.max_topology_in_maintenance
    if not caps:
        return {}
    labels = {h.name: h.labels for h in scope}
    widest = widest_host(caps, labels)
    if widest is not None:
        index, _host, message = widest
        raise InvalidInput(f"controls.max_topology_in_maintenance[{index}].max", message)
    return capped_labels(caps, labels)


class SessionFactory:
    """Validates session requests and builds their initial records."""

    def __init__(
        self,
        workflows: Mapping[str, WorkflowClass],
        actions: Collection[str],
        gates: Mapping[str, object],
    ) -> None:
        self._workflows = workflows
        self._actions = actions
        self._gates = gates

    def check(
        self,
        request: SessionRequest | Mapping[str, Any],
        *,
        default_group_constraints: Mapping[str, Any] | None = None,
    ) -> SessionRequest:
        """What can be checked before the cloud is read: the workflow, its
        actions and the gates. Returns the coerced request, its
        ``default_group_constraints`` made explicit: the request's over
        ``default_group_constraints`` (the engine's) over the built-in rules."""
        req = SessionRequest.coerce(request)
        self._workflow(req).validate_request(req, self._actions)
        self._check_gates(req)
        return attrs.evolve(
            req,
            default_group_constraints=default_group_rules(
                {**(default_group_constraints or {}), **(req.default_group_constraints or {})}
            ),
        )

    def build(
        self,
        request: SessionRequest | Mapping[str, Any],
        cloud: CloudSnapshot,
        *,
        constraints: ConstraintSet,
        subscribed: Collection[str],
        session_id: str,
        now: datetime,
        default_group_constraints: Mapping[str, Any] | None = None,
    ) -> NewSession:
        """The session's rows; raises InvalidInput / CloudError, builds nothing,
        if the request does not fit the cloud. ``constraints``: those in force
        with the cloud's defaults (used to check a decommission's capacity).
        :meth:`check`, :meth:`fit` and :meth:`records` in one call."""
        req = self.check(request, default_group_constraints=default_group_constraints)
        read = self.fit(req, cloud, constraints)
        return self.records(req, read, subscribed=subscribed, session_id=session_id, now=now)

    def fit(
        self,
        req: SessionRequest,
        cloud: CloudSnapshot,
        constraints: ConstraintSet,
        *,
        drop_gone: bool = False,
    ) -> CloudRead:
        """The cloud's listing checked against the request (InvalidInput naming
        the field, CloudError for a driver's unusable actions). ``drop_gone``:
        hosts the request names that the cloud no longer lists are left out of
        the scope (and returned as ``gone``) instead of refused (an approval's
        re-plan)."""
        workflow = self._workflow(req)
        by_name = {h.name: h for h in cloud.hosts}
        unknown = [h for h in req.hosts if h not in by_name]
        if unknown and not drop_gone:
            raise InvalidInput("hosts", "unknown to the cloud: " + ", ".join(unknown))
        if unknown:
            kept = [h for h in req.hosts if h in by_name]
            if not kept:
                raise Conflict(
                    "the cloud lists none of the session's hosts any more: "
                    + ", ".join(unknown)
                    + " (cancel it)"
                )
            req = attrs.evolve(
                req,
                hosts=kept,
                decommission_hosts=[h for h in req.decommission_hosts if h in by_name],
            )
        retiring = workflow.retiring(req)
        scope = check_request(req, retiring, by_name)
        if retiring and all(name in by_name for name in req.add_hosts):
            in_service = [
                Host(h.name, h.type, h.vcpus, h.enabled or h.name in req.add_hosts)
                for h in cloud.hosts
            ]
            shortfall = capacity_shortfall(in_service, cloud.instances, retiring, constraints)
            if shortfall is not None:
                raise InvalidInput(
                    "decommission_hosts" if req.decommission_hosts else "hosts", shortfall
                )
        if not scope:
            raise InvalidInput("hosts", "the cloud reports no hosts to maintain")
        topology = topology_labels(req, [by_name[name] for name in scope])
        allowed = [str(a) for a in cloud.allowed_actions]
        if sorted(set(allowed) - {a.value for a in InstanceAction}) or not allowed:
            raise CloudError(f"cloud driver offers unusable instance actions: {allowed}")
        return CloudRead(
            hosts=tuple(cloud.hosts),
            instances=tuple(cloud.instances),
            allowed=tuple(allowed),
            found=cloud.constraints,
            scope=tuple(scope),
            gone=tuple(unknown),
            host_guard=cloud.host_guard,
            topology=topology,
        )

    @staticmethod
    def records(
        req: SessionRequest,
        read: CloudRead,
        *,
        subscribed: Collection[str],
        session_id: str,
        now: datetime,
        approval: Mapping[str, Any] | None = None,
    ) -> NewSession:
        """The session's rows over ``read``. With ``approval`` (the plan
        record) the session waits in ``AWAITING_APPROVAL`` with nothing due:
        only an approval (or a cancel) wakes it."""
        data = read.session_data() | ({"approval": dict(approval)} if approval else {})
        waiting = approval is not None
        session = (
            session_id,
            req.workflow,
            req.to_dict(),
            (SessionState.AWAITING_APPROVAL if waiting else SessionState.MAINTENANCE).value,
            "",
            None,
            None,
            0,
            data,
            0,
            0,
            None if waiting else now,
            req.maintenance_at,
            now,
            now,
            None,
        )
        by_name = {h.name: h for h in read.hosts}
        scope = list(read.scope)
        in_scope = set(scope)
        scoped_or_added = in_scope | set(req.add_hosts)
        ordered = scope + [h.name for h in read.hosts if h.name not in scoped_or_added]
        hosts = [
            host_record(
                session_id,
                name,
                by_name[name].type,
                by_name[name].vcpus,
                by_name[name].enabled,
                HostState.PENDING if name in in_scope else HostState.OUT_OF_SCOPE,
                position,
            )
            for position, name in enumerate(ordered)
        ]
        for position, name in enumerate(req.add_hosts, start=len(ordered)):
            listed = by_name.get(name)
            kind, vcpus = (listed.type, listed.vcpus) if listed else ("compute", 0)
            hosts.append(
                host_record(session_id, name, kind, vcpus, False, HostState.ADDING, position)
            )
        for position, name in enumerate(read.gone, start=len(hosts)):
            gone = host_record(session_id, name, "compute", 0, False, HostState.REMOVED, position)
            hosts.append((*gone[:-1], "gone from the cloud before the session was approved"))
        instances = []
        projects: set[str] = set()
        for inst in read.instances:
            # Controllers too: a controller that runs instances (a
            # Kubernetes control-plane node with pods) is drained first.
            if inst.host not in by_name:
                continue
            affected = inst.host in in_scope
            if affected:
                projects.add(inst.project_id)
            state = InstanceState.PENDING if affected else InstanceState.OUT_OF_SCOPE
            instances.append(instance_record(session_id, inst, state))
        return NewSession(
            session=session,
            hosts=hosts,
            instances=instances,
            projects=[project_record(session_id, p, p in subscribed) for p in sorted(projects)],
        )

    def _workflow(self, req: SessionRequest) -> WorkflowClass:
        workflow = self._workflows.get(req.workflow)
        if workflow is None:
            raise InvalidInput(
                "workflow",
                f"unknown workflow {req.workflow!r}; known: " + ", ".join(sorted(self._workflows)),
            )
        return workflow

    def _check_gates(self, req: SessionRequest) -> None:
        for index, spec in enumerate(req.controls.gates):
            field = f"controls.gates[{index}]"
            gate = self._gates.get(spec.name)
            if gate is None:
                raise InvalidInput(
                    f"{field}.name",
                    f"no gate named {spec.name!r}; known: " + ", ".join(sorted(self._gates)),
                )
            validate = getattr(gate, "validate_params", None)
            if validate is None:
                continue
            try:
                validate(spec.params)
            except InvalidInput as exc:
                raise InvalidInput(f"{field}.{exc.field}", exc.reason) from None
