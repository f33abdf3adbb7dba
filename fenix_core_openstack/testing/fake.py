"""``FakeOpenStack``: a local Keystone + Nova + Placement for tests.

::

    from fenix_core.testing import SimClock
    from fenix_core_openstack.testing import FakeOpenStack

    clock = SimClock()
    fake = FakeOpenStack(clock=clock, live_migration_seconds=20)
    fake.add_host("cmp-0", vcpus=8); fake.add_host("cmp-1", vcpus=8)
    fake.add_server("vm-1", project_id="p1", host="cmp-0", vcpus=2)
    with fake:                                   # serves HTTP on a free loopback port
        cloud = OpenStackCloud(connection=fake.connect())
        engine = Engine(clock=clock, plugins=[cloud])
        ...
    fake.events                                  # what happened, in time order
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fenix_core.clock import Clock
from fenix_core.errors import InvalidInput
from fenix_core.testing import CloudEvent
from fenix_core.testing.http_server import LoopbackServer

from .api import FakeOpenStackApp, RecordedRequest
from .cloud import FakeCloudState, _Fault

if TYPE_CHECKING:
    import openstack.connection

__all__ = ["ADMIN_PASSWORD", "ADMIN_USER", "FakeOpenStack"]

ADMIN_USER = "admin"
ADMIN_PASSWORD = "fake-admin-password"
#: A user without the admin role (``connect(user=MEMBER_USER)``).
MEMBER_USER = "member"
MEMBER_PASSWORD = "fake-member-password"


class FakeOpenStack:
    """A fake OpenStack cloud answering openstacksdk over real HTTP.

    ``clock`` is the fenix clock migrations are timed with (default: real
    time); pass the engine's SimClock and a whole session finishes at once.
    Users ``admin`` (admin role) and ``member`` (no admin role) exist.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        live_migration_seconds: float = 20.0,
        migration_seconds: float = 30.0,
    ) -> None:
        self.state = FakeCloudState(
            clock,
            live_migration_seconds=live_migration_seconds,
            migration_seconds=migration_seconds,
        )
        self.state.add_user(ADMIN_USER, ADMIN_PASSWORD, "admin", admin=True)
        self.state.add_user(MEMBER_USER, MEMBER_PASSWORD, "demo", admin=False)
        self.app = FakeOpenStackApp(self.state)
        self._server: LoopbackServer | None = None

    # ------------------------------------------------------------------ serving

    def start(self) -> FakeOpenStack:
        """Serve on a free loopback port (``url``) until :meth:`stop`."""
        if self._server is None:
            self._server = LoopbackServer(self.app).start()
            self.app.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeOpenStack:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake is not serving: call start() or use it as a context")
        return self._server.url

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity/v3"

    def cloud_config(self, user: str = ADMIN_USER, password: str | None = None) -> dict[str, Any]:
        """A clouds.yaml entry for the fake (``clouds: {name: cloud_config()}``)."""
        if password is None:
            password = ADMIN_PASSWORD if user == ADMIN_USER else MEMBER_PASSWORD
        project = self.state.users[user]["project"] if user in self.state.users else "admin"
        return {
            "auth_type": "password",
            "auth": {
                "auth_url": self.auth_url,
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "identity_api_version": "3",
            "interface": "public",
        }

    def connect(
        self, user: str = ADMIN_USER, password: str | None = None
    ) -> openstack.connection.Connection:
        """An openstacksdk Connection to the fake (no clouds.yaml read)."""
        import openstack.config
        import openstack.connection

        config = openstack.config.get_cloud_region(
            load_yaml_config=False, load_envvars=False, **self.cloud_config(user, password)
        )
        return openstack.connection.Connection(config=config)

    # ------------------------------------------------------------------ building

    def add_host(
        self,
        host: str,
        vcpus: int = 8,
        *,
        enabled: bool = True,
        reserved_vcpus: int = 0,
        allocation_ratio: float = 1.0,
        memory_mb: int = 65536,
    ) -> None:
        """A nova-compute service with its hypervisor and resource provider,
        whose Placement inventories (VCPU: ``vcpus``, ``reserved_vcpus``,
        ``allocation_ratio``; MEMORY_MB: ``memory_mb``, 512 reserved) are the
        capacity the fake scheduler checks."""
        self.state.add_host(
            host,
            vcpus,
            enabled=enabled,
            reserved_vcpus=reserved_vcpus,
            allocation_ratio=allocation_ratio,
            memory_mb=memory_mb,
        )

    def add_server(
        self,
        server_id: str,
        project_id: str,
        host: str,
        vcpus: int = 1,
        *,
        name: str | None = None,
        status: str = "ACTIVE",
    ) -> None:
        """A server of ``project_id`` on ``host`` with a ``vcpus``-vcpu flavor
        (512 MB of RAM per vcpu); ``status`` ACTIVE, PAUSED, SUSPENDED, SHUTOFF,
        ERROR or SHELVED."""
        self.state.add_server(server_id, project_id, host, vcpus, name=name, status=status)

    def add_server_group(
        self,
        group_id: str,
        project_id: str,
        members: Sequence[str],
        *,
        policy: str = "anti-affinity",
        name: str | None = None,
        max_server_per_host: int | None = None,
    ) -> None:
        """A server group whose ``policy`` (anti-affinity, affinity,
        soft-anti-affinity, soft-affinity) the fake scheduler enforces on every
        migration; ``max_server_per_host`` is the anti-affinity rule (2.64)."""
        self.state.add_server_group(
            group_id, project_id, members, policy, name or group_id, max_server_per_host
        )

    def add_aggregate(
        self, name: str, hosts: Sequence[str], availability_zone: str | None = None
    ) -> None:
        """A host aggregate; with ``availability_zone`` it makes its hosts an
        availability zone (the zone their nova-compute services then report)."""
        self.state.add_aggregate(name, hosts, availability_zone)

    def delete_server(self, server_id: str) -> None:
        """Delete a server now (what its project may do during maintenance)."""
        self.state.delete_server(server_id)

    # ------------------------------------------------------------------ faults

    def fail_next_migration(
        self, server_id: str, error: str = "No valid host was found.", *, at_request: bool = False
    ) -> None:
        """The next migration of the server fails: at once with HTTP 400
        (``at_request``, what Nova does at microversion 2.30 when the scheduler
        finds no host) or later, the migration record ending in ``error`` with
        ``error`` in the instance action's event details."""
        self._require_server(server_id)
        self.state.faults.setdefault(server_id, []).append(_Fault(error, at_request))

    def error_next_migration(
        self, server_id: str, fault: str = "Unexpected error while migrating"
    ) -> None:
        """The next migration of the server puts it in ERROR (vm_state
        ``error``) with ``fault`` as its fault message; the migration record
        ends in ``error``."""
        self._require_server(server_id)
        self.state.faults.setdefault(server_id, []).append(
            _Fault(fault, at_request=False, server_error=True)
        )

    def conflict_next_action(self, server_id: str, message: str | None = None) -> None:
        """The next migration request for the server answers 409 conflictingRequest."""
        self._require_server(server_id)
        text = message or f"Cannot migrate instance {server_id} while it is locked"
        self.state.conflicts.setdefault(server_id, []).append(text)

    def delete_when_moved(self, server_id: str) -> None:
        """Delete the server right after its next migration was requested."""
        self._require_server(server_id)
        self.state.delete_on_move.add(server_id)

    def service_stays_down(self, host: str) -> None:
        """Once disabled for maintenance, the host's nova-compute stays ``down``."""
        if host not in self.state.services:
            raise InvalidInput("host", f"no host {host!r}")
        self.state.stays_down.add(host)

    # ------------------------------------------------------------------ inspection

    @property
    def events(self) -> list[CloudEvent]:
        """Everything that happened, in time order (kinds: host_added,
        instance_added, instance_removed, disable_host, enable_host,
        migration_started, migration_done, migration_failed, resize_confirmed)."""
        with self.state.lock:
            self.state.settle()
            return sorted(self.state.events, key=lambda e: e.time)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received: method, path, query, microversion, endpoint."""
        return list(self.app.requests)

    def host_of(self, server_id: str) -> str | None:
        with self.state.lock:
            self.state.settle()
            server = self.state.servers.get(server_id)
            return None if server is None else str(server["host"])

    def servers_on(self, host: str) -> list[str]:
        with self.state.lock:
            self.state.settle()
            return sorted(s["id"] for s in self.state.servers.values() if s["host"] == host)

    def server(self, server_id: str) -> dict[str, Any]:
        """A copy of the server's record (status, task_state, metadata, tags ...)."""
        with self.state.lock:
            self.state.settle()
            return dict(self._require_server(server_id))

    def service(self, host: str) -> dict[str, Any]:
        """A copy of the host's nova-compute service record."""
        with self.state.lock:
            return dict(self.state.services[host])

    def migrations(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in m.items() if not k.startswith("_")}
            for m in self.state.migrations_of(None)
        ]

    # What fenix_core.testing.violations() replays: the fake records its setup
    # as events, so the replay starts from an empty cloud.
    @property
    def baseline(self) -> dict[str, str]:
        return {}

    @property
    def baseline_disabled(self) -> list[str]:
        return []

    def size_of(self, server_id: str) -> int:
        return self.state.sizes[server_id]

    def host_capacity(self, host: str) -> int:
        """Usable vcpus, as Placement computes them."""
        return self.state.capacity(host, "VCPU")

    def _require_server(self, server_id: str) -> dict[str, Any]:
        server = self.state.servers.get(server_id)
        if server is None:
            raise InvalidInput("server_id", f"no server {server_id!r}")
        return server
