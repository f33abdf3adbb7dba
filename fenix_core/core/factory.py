"""A new session's validation and initial records, as pure code (plan §6).

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

from ..constraints import CloudConstraints, ConstraintSet
from ..errors import CloudError, FenixError, InvalidInput
from ..hookspecs import ConstraintSource
from ..model import Host, Instance, SessionRequest
from ..operations import cloud_constraints_dict
from ..states import HostState, InstanceAction, InstanceState, SessionState
from ..workflows.lifecycle import capacity_shortfall, check_request
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
    "CloudSnapshot",
    "SessionFactory",
    "WorkflowClass",
]


class WorkflowClass(Protocol):
    """What the factory asks of a workflow class (today's and the contract's)."""

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
        return cls(hosts, instances, allowed, found)


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

    def check(self, request: SessionRequest | Mapping[str, Any]) -> SessionRequest:
        """What can be checked before the cloud is read: the workflow, its
        actions and the gates. Returns the coerced request."""
        req = SessionRequest.coerce(request)
        self._workflow(req).validate_request(req, self._actions)
        self._check_gates(req)
        return req

    def build(
        self,
        request: SessionRequest | Mapping[str, Any],
        cloud: CloudSnapshot,
        *,
        constraints: ConstraintSet,
        subscribed: Collection[str],
        session_id: str,
        now: datetime,
    ) -> NewSession:
        """The session's rows; raises InvalidInput / CloudError, builds nothing,
        if the request does not fit the cloud. ``constraints``: those in force
        with the cloud's defaults (used to check a decommission's capacity)."""
        req = self.check(request)
        workflow = self._workflow(req)
        by_name = {h.name: h for h in cloud.hosts}
        unknown = [h for h in req.hosts if h not in by_name]
        if unknown:
            raise InvalidInput("hosts", "unknown to the cloud: " + ", ".join(unknown))
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
        allowed = [str(a) for a in cloud.allowed_actions]
        if sorted(set(allowed) - {a.value for a in InstanceAction}) or not allowed:
            raise CloudError(f"cloud driver offers unusable instance actions: {allowed}")
        data: dict[str, Any] = {"allowed_actions": allowed}
        if cloud.constraints is not None and (found := cloud_constraints_dict(cloud.constraints)):
            data["cloud_constraints"] = found
        session = (
            session_id,
            req.workflow,
            req.to_dict(),
            SessionState.MAINTENANCE.value,
            "",
            None,
            None,
            0,
            data,
            0,
            0,
            now,
            req.maintenance_at,
            now,
            now,
            None,
        )
        in_scope = set(scope)
        adds = set(req.add_hosts)
        ordered = scope + [h.name for h in cloud.hosts if h.name not in in_scope | adds]
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
        instances = []
        projects: set[str] = set()
        for inst in cloud.instances:
            where = by_name.get(inst.host)
            if where is None or where.type != "compute":
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
