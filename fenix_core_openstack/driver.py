"""``OpenStackDriver``: the fenix cloud driver on openstacksdk.

* hosts: nova-compute services (compute) plus the configured controllers;
  capacity from Placement (the VCPU inventory of each host's resource
  provider, found through its hypervisor) or from ``host_vcpus``;
* instances: servers on those hosts, all projects, with their flavor's vcpus;
* ``disable_host`` / ``enable_host``: the host's nova-compute service;
* ``LIVE_MIGRATE``: live migration, block migration "auto"; ``MIGRATE``: cold
  migration, confirmed once the server is in VERIFY_RESIZE;
* optional capabilities: :meth:`find_move` (the move recorded on the server,
  see :mod:`.moves`) and :meth:`cloud_constraints` (server groups: placement
  rules and ETSI defaults, see :mod:`.constraints`).

Every call goes through openstacksdk; the driver writes no REST by hand.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keystoneauth1.exceptions
from openstack import exceptions as sdk_exc
from openstack.compute.v2.server import Server

from fenix_core.constraints import CloudConstraints
from fenix_core.errors import CloudError, PluginError, TargetRefused
from fenix_core.model import Host, Instance, OperationStatus

from .constraints import server_group_constraints
from .moves import ACTIONS, MoveHandle, key_tag

if TYPE_CHECKING:
    from openstack.compute.v2.service import Service
    from openstack.connection import Connection

__all__ = ["OpenStackDriver"]

log = logging.getLogger(__name__)

PLUGIN = "openstack"
#: Migration statuses that end a move badly.
_FAILED = ("error", "failed", "cancelled", "reverted")
#: What Nova's scheduler says when no host passes its filters (NoValidHost).
_NO_VALID_HOST = "No valid host was found"
#: Server statuses while Nova works on a migration.
_MOVING = ("MIGRATING", "RESIZE", "VERIFY_RESIZE")


class OpenStackDriver:
    """A :class:`~fenix_core.hookspecs.CloudDriver` for an OpenStack cloud.

    ``connection`` must carry an admin token (the constructor checks: it
    authenticates and lists the compute services, an admin-only call, and
    raises :class:`~fenix_core.errors.PluginError` if either fails).
    ``controllers`` names controller hosts; ``controller_aggregate`` names a
    host aggregate whose hosts are controllers too. ``host_vcpus`` gives the
    capacity (one number for every host, or per host) instead of Placement.
    ``poll_interval`` is the seconds between polls of a migration.
    """

    name = PLUGIN

    def __init__(
        self,
        connection: Connection,
        *,
        controllers: Sequence[str] = (),
        controller_aggregate: str | None = None,
        host_vcpus: int | Mapping[str, int] | None = None,
        poll_interval: float = 5.0,
    ) -> None:
        self.conn = connection
        self.poll_interval = float(poll_interval)
        self._host_vcpus = host_vcpus
        self._verify_access()
        self.controllers = self._controllers(controllers, controller_aggregate)

    # ------------------------------------------------------------------ start-up checks

    def _verify_access(self) -> None:
        try:
            self.conn.authorize()
        except (sdk_exc.SDKException, keystoneauth1.exceptions.ClientException) as exc:
            raise PluginError(PLUGIN, f"cannot authenticate to the cloud: {exc}") from exc
        try:
            list(self.conn.compute.services(binary="nova-compute"))
        except sdk_exc.ForbiddenException as exc:
            raise PluginError(
                PLUGIN,
                "the user has no admin rights on compute (listing nova services was "
                f"refused): {exc.details or exc}",
            ) from exc
        except (sdk_exc.SDKException, keystoneauth1.exceptions.ClientException) as exc:
            raise PluginError(PLUGIN, f"cannot list the compute services: {exc}") from exc

    def _controllers(self, hosts: Sequence[str], aggregate: str | None) -> tuple[str, ...]:
        if isinstance(hosts, str):
            raise PluginError(PLUGIN, "controllers must be a list of host names, not a string")
        found = list(hosts)
        if aggregate is not None:
            try:
                found += self.conn.compute.find_aggregate(aggregate, ignore_missing=False).hosts
            except sdk_exc.NotFoundException as exc:
                raise PluginError(PLUGIN, f"no host aggregate named {aggregate!r}") from exc
        return tuple(dict.fromkeys(found))

    # ------------------------------------------------------------------ inventory

    def _compute_services(self, host: str | None = None) -> list[Service]:
        query: dict[str, Any] = {"binary": "nova-compute"}
        if host is not None:
            query["host"] = host
        return list(self.conn.compute.services(**query))

    def _service(self, host: str) -> Service:
        found = self._compute_services(host)
        if not found:
            raise CloudError(f"host {host} has no nova-compute service", host=host)
        return found[0]

    def list_hosts(self) -> list[Host]:
        services = {s.host: s for s in self._compute_services()}
        nodes = {
            (h.service_details or {}).get("host"): h.id
            for h in self.conn.compute.hypervisors(details=True)
        }
        in_aggregates: dict[str, list[str]] = {}
        for aggregate in self.conn.compute.aggregates():
            for host in aggregate.hosts or ():
                in_aggregates.setdefault(host, []).append(aggregate.name)
        hosts = [
            Host(
                name=name,
                type="controller",
                vcpus=0,
                enabled=True,
                labels=_labels(None, in_aggregates.get(name, [])),
            )
            for name in self.controllers
            if name not in services
        ]
        for name, service in sorted(services.items()):
            hosts.append(
                Host(
                    name=name,
                    type="controller" if name in self.controllers else "compute",
                    vcpus=self._capacity(name, nodes.get(name)),
                    enabled=service.status == "enabled",
                    details={
                        "service_id": service.id,
                        "state": service.state,
                        "disabled_reason": service.disabled_reason,
                        "availability_zone": service.availability_zone,
                    },
                    labels=_labels(service.availability_zone, in_aggregates.get(name, [])),
                )
            )
        return hosts

    def _capacity(self, host: str, node_id: str | None) -> int:
        configured = self._host_vcpus
        if isinstance(configured, int):
            return configured
        if configured is not None:
            return int(configured.get(host, 0))
        if node_id is None:
            raise CloudError(f"no hypervisor reports nova-compute host {host}", host=host)
        try:
            inventories = self.conn.placement.resource_provider_inventories(node_id)
            vcpu = next((i for i in inventories if i.resource_class == "VCPU"), None)
        except (sdk_exc.SDKException, keystoneauth1.exceptions.ClientException) as exc:
            raise CloudError(
                f"reading the capacity of {host} from Placement failed ({exc}); "
                "give host_vcpus= if Placement is not reachable",
                host=host,
            ) from exc
        if vcpu is None:
            return 0
        return int((vcpu.total - (vcpu.reserved or 0)) * (vcpu.allocation_ratio or 1.0))

    def _servers(self, **query: Any) -> Iterator[Server]:
        return self.conn.compute.servers(details=True, all_projects=True, **query)

    def list_instances(self, hosts: Sequence[str] | None = None) -> list[Instance]:
        if hosts is None:
            servers = list(self._servers())
        else:
            # compute_host= (query "host"): the sdk's own host= filter never matches.
            servers = [s for h in hosts for s in self._servers(compute_host=h)]
        return [self._instance(s) for s in servers if s.compute_host and s.status != "DELETED"]

    @staticmethod
    def _instance(server: Server) -> Instance:
        flavor = server.flavor
        vcpus = flavor.vcpus if flavor is not None and flavor.vcpus is not None else 1
        return Instance(
            instance_id=str(server.id),
            project_id=str(server.project_id),
            host=str(server.compute_host),
            vcpus=int(vcpus),
            name=str(server.name or ""),
            details={"status": server.status},
        )

    def locate(self, instance_id: str) -> str | None:
        server = self._get_server(instance_id)
        return None if server is None else server.compute_host

    def instance_owner(self, instance_id: str) -> str | None:
        """The server's project (``GET /servers/{id}``, which an admin may do
        for any project's server); None when Nova has no such server."""
        server = self._get_server(instance_id)
        if server is None or server.status == "DELETED":
            return None
        return str(server.project_id)

    def allowed_actions(self) -> list[str]:
        return ["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]

    # ------------------------------------------------------------------ hosts

    def disable_host(self, host: str, reason: str) -> None:
        self.conn.compute.disable_service(self._service(host), disabled_reason=reason)

    def enable_host(self, host: str) -> None:
        self.conn.compute.enable_service(self._service(host))

    def host_is_up(self, host: str) -> bool:
        services = list(self.conn.compute.services(host=host))
        return all(s.state == "up" and not s.is_forced_down for s in services)

    # ------------------------------------------------------------------ moves

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        if action not in ACTIONS:
            raise CloudError(f"action {action} is not supported", instance_id=instance_id)
        known = self.find_move(key)
        if known is not None:
            return known
        server = self._get_server(instance_id)
        if server is None:  # deleted meanwhile: the poll reports it gone
            return MoveHandle(action, instance_id, "", 0).encode()
        migration_type = ACTIONS[action]
        before = [int(m.id) for m in self.conn.compute.migrations(server_id=instance_id)]
        handle = MoveHandle(action, instance_id, str(server.compute_host), max(before, default=0))
        tag = key_tag(key)
        try:
            self.conn.compute.set_server_metadata(server, **{tag: handle.encode()})
            server.add_tag(self.conn.compute, tag)
            if migration_type == "live-migration":
                self.conn.compute.live_migrate_server(server, host=target, block_migration="auto")
            else:
                self.conn.compute.migrate_server(server, host=target)
        except sdk_exc.NotFoundException:
            return handle.encode()  # deleted meanwhile: the poll reports it gone
        except sdk_exc.HttpException as exc:
            self._forget(instance_id, tag)
            # 400: the scheduler refused the host (or found none); 409 and
            # others: the server or the request, not the target.
            error = TargetRefused if exc.status_code == 400 else CloudError
            raise error(
                f"nova refused {action} of {instance_id}"
                + (f" to {target}" if target else "")
                + f" (HTTP {exc.status_code}): {exc.details or exc}",
                instance_id=instance_id,
                host=target,
            ) from exc
        return handle.encode()

    def poll_move(self, handle: str) -> OperationStatus:
        move = MoveHandle.decode(handle)
        server = self._get_server(move.server_id)
        if server is None:
            return OperationStatus("done", gone=True, detail=f"{move.server_id} was deleted")
        tag = self._tag_of(server)
        if server.status == "ERROR":
            self._forget(move.server_id, tag)
            fault = (server.fault or {}).get("message") or "no fault message"
            return OperationStatus.failed(f"server {move.server_id} went into ERROR: {fault}")
        if move.action == "MIGRATE" and server.status == "VERIFY_RESIZE":
            try:
                self.conn.compute.confirm_server_resize(server)
            except sdk_exc.ConflictException as exc:
                log.info("confirming the resize of %s: %s", move.server_id, exc.details)
            return self._running("resize confirmed", retry_after=0.0)
        if server.status in _MOVING or server.task_state:
            # Still moving: the server says so, no need to read the migration yet.
            return self._running(f"{move.server_id} is {server.status}")
        migration = self._migration(move)
        if migration is None:
            self._forget(move.server_id, tag)
            if move.source and server.compute_host != move.source:
                return OperationStatus.done(server.compute_host)
            return OperationStatus.failed(
                f"no {move.migration_type} of {move.server_id} was recorded; it is "
                f"{server.status} on {server.compute_host}"
            )
        status = migration.status
        if status in _FAILED:
            self._forget(move.server_id, tag)
            why = self._failure_message(server, move) or f"migration {migration.id} ended"
            detail = (
                f"{move.migration_type} of {move.server_id} from {migration.source_compute} "
                f"failed (status {status}): {why}"
            )
            if _NO_VALID_HOST in why or "NoValidHost" in why:
                # From microversion 2.34 Nova's scheduler refuses a live
                # migration after answering 202: the same refusal of the
                # target as a 400 at the request (TargetRefused), nothing moved.
                return OperationStatus("failed", detail=detail, result={"refused": True})
            return OperationStatus.failed(detail)
        if status in ("completed", "confirmed"):
            self._forget(move.server_id, tag)
            return OperationStatus.done(server.compute_host)
        return self._running(f"{move.migration_type} {migration.id} is {status}")

    def find_move(self, key: str) -> str | None:
        """The handle of the move started with ``key``, or None if it never
        reached Nova (see :mod:`.moves` for where the key is kept)."""
        tag = key_tag(key)
        for server in self._servers(tags=tag):
            text = (server.metadata or {}).get(tag)
            if text is None:
                continue
            move = MoveHandle.decode(text)
            started = (
                self._migration(move) is not None
                or server.status in _MOVING
                or bool(server.task_state)
                or server.compute_host != move.source
            )
            return text if started else None
        return None

    def _running(self, detail: str, retry_after: float | None = None) -> OperationStatus:
        wait = self.poll_interval if retry_after is None else retry_after
        return OperationStatus.running(retry_after=wait, detail=detail)

    def _migration(self, move: MoveHandle) -> Any:
        found = [
            m
            for m in self.conn.compute.migrations(
                server_id=move.server_id, migration_type=move.migration_type
            )
            if int(m.id) > move.after
        ]
        return max(found, key=lambda m: int(m.id), default=None)

    def _failure_message(self, server: Server, move: MoveHandle) -> str | None:
        """Nova's own words: the failed event of the newest instance action."""
        try:
            actions = [
                a
                for a in self.conn.compute.server_actions(server)
                if a.action == move.migration_type
            ]
            if not actions:
                return None
            newest = max(actions, key=lambda a: str(a.start_time))
            detail = self.conn.compute.get_server_action(newest.request_id, server)
        except sdk_exc.SDKException:
            return None
        for event in detail.events or []:
            if event.result == "Error":
                return str(event.details or event.traceback or "") or None
        return None

    @staticmethod
    def _tag_of(server: Server) -> str | None:
        return next((t for t in server.tags or [] if t.startswith("fenix-move-")), None)

    def _forget(self, server_id: str, tag: str | None) -> None:
        """Remove the move's record from the server, best effort: cleanup never
        masks the move's outcome. Nova refuses the removal (409) while the
        server is in ERROR; the record then stays, naming this attempt's key
        only, and ``find_move`` of a later attempt never reads it."""
        if tag is None:
            return
        try:
            with contextlib.suppress(sdk_exc.NotFoundException):
                self.conn.compute.delete_server_metadata(server_id, [tag])
            with contextlib.suppress(sdk_exc.NotFoundException):
                Server.new(id=server_id).remove_tag(self.conn.compute, tag)
        except (sdk_exc.SDKException, keystoneauth1.exceptions.ClientException) as exc:
            log.warning(
                "could not remove the move record %s from server %s: %s",
                tag,
                server_id,
                getattr(exc, "details", None) or exc,
            )

    def _get_server(self, server_id: str) -> Server | None:
        try:
            return self.conn.compute.get_server(server_id)
        except sdk_exc.NotFoundException:
            return None

    # ------------------------------------------------------------------ constraints

    def cloud_constraints(self, instances: Sequence[Instance]) -> CloudConstraints:
        groups = self.conn.compute.server_groups(all_projects=True)
        return server_group_constraints(groups, {i.instance_id for i in instances})


def _labels(zone: str | None, aggregates: Sequence[str]) -> dict[str, str | tuple[str, ...]]:
    """A host's topology labels: ``zone`` (its availability zone) and
    ``aggregate`` (the host aggregates it is in, maybe several)."""
    labels: dict[str, str | tuple[str, ...]] = {}
    if zone:
        labels["zone"] = zone
    if aggregates:
        labels["aggregate"] = tuple(sorted(aggregates))
    return labels
