"""The state of the fake OpenStack cloud: users, nova-compute services,
hypervisors, servers, migrations, server groups, aggregates, and faults.

It knows nothing about HTTP (that is :mod:`.api`); it keeps its time with a
fenix :class:`~fenix_core.clock.Clock`, so a migration of
``live_migration_seconds`` takes that long on the clock the engine runs on,
and a test on :class:`~fenix_core.clock.SimClock` finishes at once.

Lifecycles follow Nova (see /docs/openstack.md): a live migration's record goes
``running`` → ``completed`` (or ``error``, the server staying ACTIVE on its
source); a cold migration's goes ``migrating`` → ``finished`` with the server
in VERIFY_RESIZE on the target, then ``confirmed`` when the resize is
confirmed and the server is ACTIVE again.

Where a server may go is decided as Nova's scheduler decides it, on a
requested host as well as on a host it picks itself (a requested host is no
bypass from microversion 2.30 unless forced, and ``force`` is not offered):

* ComputeFilter: the host's nova-compute service is enabled and up;
* capacity, from Placement: ``(total - reserved) * allocation_ratio`` of the
  host's VCPU and MEMORY_MB inventories minus the allocations of the servers
  on it and of the migrations heading to it;
* ServerGroupAntiAffinityFilter: fewer than ``max_server_per_host`` (default
  1) members of the server's anti-affinity group on the host;
* ServerGroupAffinityFilter: the host holds a member of the server's affinity
  group (the moving server's own host counts, so a member never leaves the
  others, and a lone member cannot move at all);
* soft-affinity / soft-anti-affinity only weigh the hosts the scheduler picks
  from (most / fewest members first), then the most free vcpus.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from fenix_core.clock import Clock, RealClock
from fenix_core.errors import InvalidInput
from fenix_core.testing import CloudEvent

__all__ = ["FakeCloudState", "NovaError"]

LIVE = "live-migration"
COLD = "migration"
#: Server groups' policies (Nova 2.64+ ``policy``).
POLICIES = ("anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity")
#: vm_states whose servers accept metadata and tag writes (Nova's compute API).
WRITABLE_VM_STATES = ("active", "paused", "suspended", "stopped")
#: Server status -> vm_state, as Nova derives the status from the vm_state.
VM_STATES = {
    "ACTIVE": "active",
    "PAUSED": "paused",
    "SUSPENDED": "suspended",
    "SHUTOFF": "stopped",
    "ERROR": "error",
    "SHELVED": "shelved",
}
#: Migration statuses after which nothing changes any more.
FINAL_MIGRATION_STATUSES = ("completed", "confirmed", "error", "failed", "cancelled")


class NovaError(Exception):
    """A refusal the API turns into Nova's error body (``kind`` is the body's key)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def _not_found(what: str, ident: str) -> NovaError:
    return NovaError(404, "itemNotFound", f"{what} {ident} could not be found.")


def _iso(when: datetime) -> str:
    return when.replace(tzinfo=None).isoformat(timespec="microseconds")


@attrs.define
class _Fault:
    """A failure waiting for the next migration of one server."""

    message: str
    at_request: bool  # True: HTTP 400 at once; False: the migration ends in ``error``
    server_error: bool = False  # the server itself goes to ERROR with this fault


class FakeCloudState:
    """Everything the fake Nova, Keystone and Placement know; thread-safe."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        live_migration_seconds: float = 20.0,
        migration_seconds: float = 30.0,
    ) -> None:
        for field, value in (
            ("live_migration_seconds", live_migration_seconds),
            ("migration_seconds", migration_seconds),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInput(field, f"must be a number of seconds >= 0, got {value!r}")
        self.clock: Clock = clock or RealClock()
        self.live_migration_seconds = float(live_migration_seconds)
        self.migration_seconds = float(migration_seconds)
        self.lock = threading.RLock()
        self.users: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}  # by host
        self.servers: dict[str, dict[str, Any]] = {}
        self.migrations: list[dict[str, Any]] = []
        self.actions: dict[str, list[dict[str, Any]]] = {}  # instance actions per server
        self.server_groups: dict[str, dict[str, Any]] = {}
        self.aggregates: dict[str, dict[str, Any]] = {}
        self.sizes: dict[str, int] = {}
        self.events: list[CloudEvent] = []
        self.faults: dict[str, list[_Fault]] = {}
        self.conflicts: dict[str, list[str]] = {}
        self.delete_on_move: set[str] = set()
        self.stays_down: set[str] = set()

    # ------------------------------------------------------------------ building

    def add_user(self, name: str, password: str, project: str, *, admin: bool) -> None:
        with self.lock:
            self.users[name] = {
                "id": uuid.uuid5(uuid.NAMESPACE_DNS, f"user.{name}").hex,
                "password": password,
                "project": project,
                "project_id": uuid.uuid5(uuid.NAMESPACE_DNS, f"project.{project}").hex,
                "roles": ["admin", "member", "reader"] if admin else ["member", "reader"],
            }

    def add_host(
        self,
        host: str,
        vcpus: int,
        *,
        enabled: bool = True,
        reserved_vcpus: int = 0,
        allocation_ratio: float = 1.0,
        memory_mb: int = 65536,
    ) -> None:
        for field, number in (
            ("vcpus", vcpus),
            ("reserved_vcpus", reserved_vcpus),
            ("memory_mb", memory_mb),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise InvalidInput(field, f"must be a whole number >= 0, got {number!r}")
        if (
            isinstance(allocation_ratio, bool)
            or not isinstance(allocation_ratio, int | float)
            or allocation_ratio <= 0
        ):
            raise InvalidInput(
                "allocation_ratio", f"must be a number > 0, got {allocation_ratio!r}"
            )
        with self.lock:
            if host in self.services:
                raise InvalidInput("host", f"host {host!r} exists already")
            self.services[host] = {
                "id": str(uuid.uuid4()),
                "binary": "nova-compute",
                "host": host,
                "status": "enabled" if enabled else "disabled",
                "state": "up",
                "disabled_reason": None if enabled else "disabled before the test",
                "forced_down": False,
                "updated_at": _iso(self.clock.now()),
                # The compute node: its uuid is the hypervisor id and the
                # resource provider uuid; its name differs from the service
                # host, as libvirt's FQDN does on real clouds.
                "node_id": str(uuid.uuid4()),
                "node_name": f"{host}.fake.local",
                "vcpus": vcpus,
                # The resource provider's inventories (Placement).
                "inventories": {
                    "VCPU": {"total": vcpus, "reserved": reserved_vcpus, "ratio": allocation_ratio},
                    "MEMORY_MB": {"total": memory_mb, "reserved": 512, "ratio": 1.0},
                },
            }
            self._event("host_added", host, None, "enabled" if enabled else "disabled")

    def add_server(
        self,
        server_id: str,
        project_id: str,
        host: str,
        vcpus: int,
        *,
        name: str | None = None,
        status: str = "ACTIVE",
    ) -> None:
        if status not in VM_STATES:
            raise InvalidInput("status", f"must be one of {', '.join(VM_STATES)}, got {status!r}")
        with self.lock:
            self.settle()
            if host not in self.services:
                raise InvalidInput("host", f"no host {host!r}")
            if server_id in self.servers:
                raise InvalidInput("server_id", f"server {server_id!r} exists already")
            now = _iso(self.clock.now())
            self.sizes[server_id] = vcpus
            self.servers[server_id] = {
                "id": server_id,
                "name": name or server_id,
                "tenant_id": project_id,
                "user_id": "fake-user",
                "host": host,
                "status": status,
                "vm_state": VM_STATES[status],
                "task_state": None,
                "fault": None,
                "flavor": {
                    "vcpus": vcpus,
                    "ram": 512 * vcpus,
                    "disk": 1,
                    "ephemeral": 0,
                    "swap": 0,
                    "original_name": f"fake.{vcpus}vcpu",
                    "extra_specs": {},
                },
                "metadata": {},
                "tags": [],
                "created": now,
                "updated": now,
            }
            self.actions[server_id] = []
            self._event("instance_added", host, server_id, project_id)

    def add_server_group(
        self,
        group_id: str,
        project_id: str,
        members: Sequence[str],
        policy: str,
        name: str,
        max_server_per_host: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise InvalidInput("policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
        rules: dict[str, int] = {}
        if max_server_per_host is not None:
            # Nova accepts the rule with the anti-affinity policy only (2.64).
            if policy != "anti-affinity":
                raise InvalidInput("max_server_per_host", "only with the anti-affinity policy")
            if (
                isinstance(max_server_per_host, bool)
                or not isinstance(max_server_per_host, int)
                or max_server_per_host < 1
            ):
                raise InvalidInput(
                    "max_server_per_host",
                    f"must be a whole number >= 1, got {max_server_per_host!r}",
                )
            rules["max_server_per_host"] = max_server_per_host
        with self.lock:
            if group_id in self.server_groups:
                raise InvalidInput("group_id", f"server group {group_id!r} exists already")
            for member in members:
                other = self._group_of(member)
                if other is not None:
                    # A server joins one group, when it is booted.
                    raise InvalidInput(
                        "members", f"server {member!r} is in server group {other['id']!r} already"
                    )
            self.server_groups[group_id] = {
                "id": group_id,
                "name": name,
                "policy": policy,
                "rules": rules,
                "members": list(members),
                "project_id": project_id,
                "user_id": "fake-user",
            }

    def add_aggregate(
        self, name: str, hosts: Sequence[str], availability_zone: str | None = None
    ) -> None:
        with self.lock:
            if availability_zone is not None:
                # Nova refuses a host in two availability zones (409 on add_host).
                for other in self.aggregates.values():
                    zone = other["availability_zone"]
                    clash = set(hosts) & set(other["hosts"])
                    if zone is not None and zone != availability_zone and clash:
                        raise InvalidInput(
                            "availability_zone",
                            f"host {sorted(clash)[0]} is in availability zone {zone} already",
                        )
            ident = len(self.aggregates) + 1
            now = _iso(self.clock.now())
            self.aggregates[name] = {
                "id": ident,
                "uuid": str(uuid.uuid4()),
                "name": name,
                # Nova shows the availability_zone metadata key as this field.
                "availability_zone": availability_zone,
                "hosts": list(hosts),
                "metadata": {}
                if availability_zone is None
                else {"availability_zone": availability_zone},
                "created_at": now,
                "updated_at": None,
                "deleted_at": None,
                "deleted": False,
            }

    def zone_of(self, host: str) -> str:
        """A compute host's availability zone as Nova computes it: the
        ``availability_zone`` of an aggregate holding it, else the default
        zone (``default_availability_zone``, "nova")."""
        for aggregate in self.aggregates.values():
            if aggregate["availability_zone"] is not None and host in aggregate["hosts"]:
                return str(aggregate["availability_zone"])
        return "nova"

    def delete_server(self, server_id: str) -> None:
        with self.lock:
            self.settle()
            server = self.servers.pop(server_id, None)
            if server is None:
                raise InvalidInput("server_id", f"no server {server_id!r}")
            for group in self.server_groups.values():
                if server_id in group["members"]:
                    group["members"].remove(server_id)
            self._event("instance_removed", server["host"], server_id)

    # ------------------------------------------------------------------ services

    def set_service(self, service_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            service = next((s for s in self.services.values() if s["id"] == service_id), None)
            if service is None:
                raise _not_found("Service", service_id)
            status = changes.get("status")
            if status not in (None, "enabled", "disabled"):
                raise NovaError(400, "badRequest", "Invalid input for field/attribute status.")
            if status == "disabled":
                service["status"] = "disabled"
                service["disabled_reason"] = changes.get("disabled_reason")
                if service["host"] in self.stays_down:
                    service["state"] = "down"
                self._event("disable_host", service["host"], None, service["disabled_reason"])
            elif status == "enabled":
                service["status"] = "enabled"
                service["disabled_reason"] = None
                self._event("enable_host", service["host"])
            service["updated_at"] = _iso(self.clock.now())
            return service

    # ------------------------------------------------------------------ migrations

    def request_migration(self, server_id: str, kind: str, host: str | None) -> None:
        """os-migrateLive (``kind`` LIVE) or migrate (COLD): refuse like Nova or start."""
        with self.lock:
            self.settle()
            server = self.servers.get(server_id)
            if server is None:
                raise _not_found("Instance", server_id)
            verb = "os-migrateLive" if kind == LIVE else "migrate"
            conflicts = self.conflicts.get(server_id)
            if conflicts:
                raise NovaError(409, "conflictingRequest", conflicts.pop(0))
            if server["status"] != "ACTIVE" or server["task_state"] is not None:
                state = server["task_state"] or server["vm_state"]
                field = "task_state" if server["task_state"] else "vm_state"
                raise NovaError(
                    409,
                    "conflictingRequest",
                    f"Cannot '{verb}' instance {server_id} while it is in {field} {state}",
                )
            faults = self.faults.get(server_id) or []
            if faults and faults[0].at_request:
                raise NovaError(400, "badRequest", faults.pop(0).message)
            target = self._check_target(server, host) if host else self._schedule(server)
            fault = faults.pop(0) if faults else None
            now = self.clock.now()
            seconds = self.live_migration_seconds if kind == LIVE else self.migration_seconds
            migration = {
                "id": len(self.migrations) + 1,
                "uuid": str(uuid.uuid4()),
                "instance_uuid": server_id,
                "migration_type": kind,
                "status": "running" if kind == LIVE else "migrating",
                "source_compute": server["host"],
                "source_node": self.services[server["host"]]["node_name"],
                "dest_compute": target,
                "dest_node": self.services[target]["node_name"],
                "dest_host": "192.0.2.1",
                "old_instance_type_id": 1,
                "new_instance_type_id": 1,
                "project_id": server["tenant_id"],
                "user_id": server["user_id"],
                "created_at": _iso(now),
                "updated_at": _iso(now),
                "_end": now + timedelta(seconds=seconds),
                "_error": fault.message if fault else None,
                "_server_error": bool(fault and fault.server_error),
            }
            self.migrations.append(migration)
            server["task_state"] = "migrating" if kind == LIVE else "resize_prep"
            server["status"] = "MIGRATING" if kind == LIVE else "RESIZE"
            self.actions[server_id].append(
                {
                    "action": kind,
                    "request_id": f"req-{uuid.uuid4()}",
                    "user_id": "fake-admin",
                    "project_id": server["tenant_id"],
                    "start_time": _iso(now),
                    "updated_at": _iso(now),
                    "message": None,
                    "events": [],
                }
            )
            self._event("migration_started", server["host"], server_id, target)
            if server_id in self.delete_on_move:
                self.delete_on_move.discard(server_id)
                self.delete_server(server_id)

    def confirm_resize(self, server_id: str) -> None:
        with self.lock:
            self.settle()
            server = self.servers.get(server_id)
            if server is None:
                raise _not_found("Instance", server_id)
            if server["status"] != "VERIFY_RESIZE":
                raise NovaError(
                    409,
                    "conflictingRequest",
                    f"Cannot 'confirmResize' instance {server_id} while it is in "
                    f"vm_state {server['vm_state']}",
                )
            migration = self._latest(server_id, "finished")
            if migration is not None:
                migration["status"] = "confirmed"
                migration["updated_at"] = _iso(self.clock.now())
            server["status"] = "ACTIVE"
            server["vm_state"] = "active"
            self._event("resize_confirmed", server["host"], server_id)

    def settle(self) -> None:
        """Move every migration whose time has come to its end, in time order."""
        with self.lock:
            now = self.clock.now()
            due = sorted(
                (m for m in self.migrations if m["status"] in ("running", "migrating")),
                key=lambda m: (m["_end"], m["id"]),
            )
            for migration in due:
                if migration["_end"] > now:
                    break
                self._finish(migration)

    def _finish(self, migration: dict[str, Any]) -> None:
        end: datetime = migration["_end"]
        migration["updated_at"] = _iso(end)
        server = self.servers.get(migration["instance_uuid"])
        if server is None:
            migration["status"] = "error"
            return
        server["task_state"] = None
        action = self.actions[server["id"]][-1]
        event_name = (
            "compute_live_migration" if migration["migration_type"] == LIVE else "compute_resize"
        )
        if migration["_error"]:
            migration["status"] = "error"
            if migration["_server_error"]:
                server["status"] = "ERROR"
                server["vm_state"] = "error"
                server["fault"] = {
                    "code": 500,
                    "message": migration["_error"],
                    "created": _iso(end),
                    "details": "Traceback (most recent call last): ...",
                }
            else:
                server["status"] = "ACTIVE"
            action["message"] = "Error"
            action["events"].append(
                {
                    "event": event_name,
                    "start_time": action["start_time"],
                    "finish_time": _iso(end),
                    "result": "Error",
                    "details": migration["_error"],
                    "host": migration["source_compute"],
                    "hostId": "",
                }
            )
            self.events.append(
                CloudEvent(
                    end,
                    "migration_failed",
                    migration["source_compute"],
                    server["id"],
                    migration["_error"],
                )
            )
            return
        server["host"] = migration["dest_compute"]
        action["events"].append(
            {
                "event": event_name,
                "start_time": action["start_time"],
                "finish_time": _iso(end),
                "result": "Success",
                "details": None,
                "host": migration["dest_compute"],
                "hostId": "",
            }
        )
        if migration["migration_type"] == LIVE:
            migration["status"] = "completed"
            server["status"] = "ACTIVE"
        else:
            migration["status"] = "finished"
            server["status"] = "VERIFY_RESIZE"
            server["vm_state"] = "resized"
        self.events.append(
            CloudEvent(
                end,
                "migration_done",
                migration["dest_compute"],
                server["id"],
                migration["source_compute"],
            )
        )

    def _latest(self, server_id: str, status: str) -> dict[str, Any] | None:
        found = [
            m for m in self.migrations if m["instance_uuid"] == server_id and m["status"] == status
        ]
        return found[-1] if found else None

    def capacity(self, host: str, resource_class: str) -> int:
        """Usable amount of a resource class, as Placement computes it."""
        inventory = self.services[host]["inventories"][resource_class]
        return int((inventory["total"] - inventory["reserved"]) * inventory["ratio"])

    def usage(self, host: str) -> dict[str, int]:
        """Placement usages of the host's resource provider: the servers on it
        and the migrations heading to it (Nova claims the target when the
        scheduler picks it)."""
        with self.lock:
            used = {"VCPU": 0, "MEMORY_MB": 0}
            flavors = [s["flavor"] for s in self.servers.values() if s["host"] == host]
            flavors += [
                self.servers[m["instance_uuid"]]["flavor"]
                for m in self.migrations
                if m["status"] in ("running", "migrating")
                and m["dest_compute"] == host
                and m["instance_uuid"] in self.servers
            ]
            for flavor in flavors:
                used["VCPU"] += int(flavor["vcpus"])
                used["MEMORY_MB"] += int(flavor["ram"])
            return used

    def free_vcpus(self, host: str) -> int:
        """Usable vcpus minus the servers on the host and migrations heading to it."""
        with self.lock:
            return self.capacity(host, "VCPU") - self.usage(host)["VCPU"]

    def _group_of(self, server_id: str) -> dict[str, Any] | None:
        return next((g for g in self.server_groups.values() if server_id in g["members"]), None)

    def _members_on(self, group: dict[str, Any], host: str, besides: str) -> int:
        """Members of ``group`` on ``host`` or heading to it, ``besides`` left out."""
        here = {s["id"] for s in self.servers.values() if s["host"] == host and s["id"] != besides}
        here |= {
            m["instance_uuid"]
            for m in self.migrations
            if m["status"] in ("running", "migrating")
            and m["dest_compute"] == host
            and m["instance_uuid"] != besides
        }
        return len(here & set(group["members"]))

    def _refusal(self, server: dict[str, Any], host: str) -> str | None:
        """Why Nova's scheduler filters reject ``host`` for ``server`` (None: it passes)."""
        service = self.services[host]
        if service["status"] != "enabled" or service["state"] != "up":
            return (
                f"ComputeFilter: nova-compute on {host} is {service['status']}/{service['state']}"
            )
        used = self.usage(host)
        for resource_class, need in (
            ("VCPU", int(server["flavor"]["vcpus"])),
            ("MEMORY_MB", int(server["flavor"]["ram"])),
        ):
            free = self.capacity(host, resource_class) - used[resource_class]
            if free < need:
                return f"{host} has {free} {resource_class} free, {need} needed"
        group = self._group_of(server["id"])
        if group is None:
            return None
        if group["policy"] == "anti-affinity":
            limit = int(group["rules"].get("max_server_per_host", 1))
            if self._members_on(group, host, server["id"]) >= limit:
                return (
                    f"ServerGroupAntiAffinityFilter: {host} holds {limit} member(s) of "
                    f"server group {group['id']}"
                )
        elif group["policy"] == "affinity":
            # The group's hosts are those of all its members, the moving one included.
            hosts = {self.servers[m]["host"] for m in group["members"] if m in self.servers}
            if host not in hosts:
                return (
                    f"ServerGroupAffinityFilter: {host} is not a host of server group "
                    f"{group['id']} ({', '.join(sorted(hosts))})"
                )
        return None

    def _check_target(self, server: dict[str, Any], host: str) -> str:
        if host not in self.services:
            raise NovaError(400, "badRequest", f"Compute host {host} could not be found.")
        if host == server["host"]:
            raise NovaError(
                400, "badRequest", f"No valid host was found. {host} is the server's own host."
            )
        why = self._refusal(server, host)
        if why is not None:
            raise NovaError(400, "badRequest", f"No valid host was found. {why}")
        return host

    def _schedule(self, server: dict[str, Any]) -> str:
        group = self._group_of(server["id"])
        policy = group["policy"] if group is not None else None
        weighed: list[tuple[int, int, str]] = []
        for host in self.services:
            if host == server["host"] or self._refusal(server, host) is not None:
                continue
            together = 0
            if group is not None and policy in ("soft-affinity", "soft-anti-affinity"):
                members = self._members_on(group, host, server["id"])
                together = members if policy == "soft-affinity" else -members
            weighed.append((together, self.free_vcpus(host), host))
        if not weighed:
            raise NovaError(
                400, "badRequest", "No valid host was found. There are not enough hosts available."
            )
        return max(weighed)[2]

    def check_writable(self, server: dict[str, Any], action: str, *, task_too: bool) -> None:
        """409 as Nova's compute API answers a metadata (``task_too``) or tag
        write on a server that is not ACTIVE, PAUSED, SUSPENDED or SHUTOFF, or
        (metadata) has a task in progress."""
        if server["vm_state"] not in WRITABLE_VM_STATES:
            raise NovaError(
                409,
                "conflictingRequest",
                f"Cannot '{action}' instance {server['id']} while it is in vm_state "
                f"{server['vm_state']}",
            )
        if task_too and server["task_state"] is not None:
            raise NovaError(
                409,
                "conflictingRequest",
                f"Cannot '{action}' instance {server['id']} while it is in task_state "
                f"{server['task_state']}",
            )

    # ------------------------------------------------------------------ reading

    def migrations_of(self, server_id: str | None) -> list[dict[str, Any]]:
        with self.lock:
            self.settle()
            return [m for m in self.migrations if server_id in (None, m["instance_uuid"])]

    def servers_matching(
        self, hosts: Iterable[str] | None, tags: Sequence[str]
    ) -> list[dict[str, Any]]:
        with self.lock:
            self.settle()
            wanted = None if hosts is None else set(hosts)
            return [
                s
                for s in self.servers.values()
                if (wanted is None or s["host"] in wanted) and all(t in s["tags"] for t in tags)
            ]

    def _event(
        self, kind: str, host: str | None, instance_id: str | None = None, detail: str | None = None
    ) -> None:
        self.events.append(CloudEvent(self.clock.now(), kind, host, instance_id, detail))
