"""The HTTP face of the fake cloud: a werkzeug WSGI application answering
what openstacksdk 4.x sends for the calls the driver makes.

* Keystone v3: version discovery, ``POST /identity/v3/auth/tokens`` (password
  method, project scope) with a service catalog (identity, compute, placement).
* Nova v2.1 (microversions up to :data:`NOVA_MAX_VERSION`): version discovery,
  os-services list and update (UUID ids, 2.53+), hypervisors detail (2.88
  shape: no vcpus), servers detail with ``all_tenants`` / ``host`` / ``tags``
  filters, server show (with the ``fault`` of a server in ERROR), server
  actions (os-migrateLive, migrate, confirmResize), server metadata and tags
  (2.26+; writes answer 409 in a vm_state other than active, paused,
  suspended or stopped, and metadata writes also while a task runs),
  instance actions, os-migrations and ``/servers/{id}/migrations``, server
  groups, aggregates. Migrations are scheduled as :mod:`.cloud` describes.
* Placement: version discovery, resource provider inventories and usages.

Every request is checked for a valid token; the admin-only calls answer 403
to a token without the admin role, as Nova's default policy does.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .cloud import COLD, LIVE, FakeCloudState, NovaError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["NOVA_MAX_VERSION", "PLACEMENT_MAX_VERSION", "FakeOpenStackApp", "RecordedRequest"]

NOVA_MAX_VERSION = "2.96"
PLACEMENT_MAX_VERSION = "1.39"
_ADMIN_ONLY = {
    "services",
    "service_update",
    "hypervisors",
    "migrations",
    "server_migrations",
    "server_groups",
    "aggregates",
    "inventories",
    "usages",
}

Handler = Callable[..., Response]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


def _version_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


class RecordedRequest(dict[str, Any]):
    """One request as the fake saw it: method, path, query, microversion,
    endpoint (the fake's route name) and the JSON body."""


class FakeOpenStackApp:
    """WSGI application over a :class:`FakeCloudState`."""

    def __init__(self, state: FakeCloudState) -> None:
        self.state = state
        self.url = ""  # set by the server once it knows its port
        self.requests: list[RecordedRequest] = []
        self._routes = Map(
            [
                Rule("/identity", endpoint="identity_versions"),
                Rule("/identity/", endpoint="identity_versions"),
                Rule("/identity/v3", endpoint="identity_version"),
                Rule("/identity/v3/", endpoint="identity_version"),
                Rule("/identity/v3/auth/tokens", endpoint="tokens", methods=["POST"]),
                Rule("/compute", endpoint="compute_versions"),
                Rule("/compute/", endpoint="compute_versions"),
                Rule("/compute/v2.1", endpoint="compute_version"),
                Rule("/compute/v2.1/", endpoint="compute_version"),
                Rule("/compute/v2.1/os-services", endpoint="services"),
                Rule("/compute/v2.1/os-services/<sid>", endpoint="service_update", methods=["PUT"]),
                Rule("/compute/v2.1/os-hypervisors/detail", endpoint="hypervisors"),
                Rule("/compute/v2.1/servers/detail", endpoint="servers"),
                Rule("/compute/v2.1/servers/<sid>", endpoint="server"),
                Rule("/compute/v2.1/servers/<sid>/action", endpoint="action", methods=["POST"]),
                Rule("/compute/v2.1/servers/<sid>/metadata", endpoint="metadata", methods=["POST"]),
                Rule(
                    "/compute/v2.1/servers/<sid>/metadata/<key>",
                    endpoint="metadata_item",
                    methods=["DELETE"],
                ),
                Rule(
                    "/compute/v2.1/servers/<sid>/tags/<tag>",
                    endpoint="tag",
                    methods=["PUT", "DELETE"],
                ),
                Rule("/compute/v2.1/servers/<sid>/os-instance-actions", endpoint="actions"),
                Rule(
                    "/compute/v2.1/servers/<sid>/os-instance-actions/<rid>",
                    endpoint="instance_action",
                ),
                Rule("/compute/v2.1/servers/<sid>/migrations", endpoint="server_migrations"),
                Rule("/compute/v2.1/os-migrations", endpoint="migrations"),
                Rule("/compute/v2.1/os-server-groups", endpoint="server_groups"),
                Rule("/compute/v2.1/os-aggregates", endpoint="aggregates"),
                Rule("/placement", endpoint="placement_versions"),
                Rule("/placement/", endpoint="placement_versions"),
                Rule(
                    "/placement/resource_providers/<rp>/inventories",
                    endpoint="inventories",
                ),
                Rule("/placement/resource_providers/<rp>/usages", endpoint="usages"),
            ],
            strict_slashes=False,
        )

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self._dispatch(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        adapter = self._routes.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return self._error(404, "itemNotFound", f"No route for {request.path}")
        except MethodNotAllowed:
            return self._error(405, "badMethod", f"{request.method} not allowed on {request.path}")
        except HTTPException as exc:  # pragma: no cover - werkzeug redirects
            return exc.get_response()
        service = str(endpoint).split("_")[0]
        microversion = self._microversion(
            request, "placement" if service in ("placement", "inventories", "usages") else "compute"
        )
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=request.args.to_dict(flat=False),
                microversion=microversion,
                endpoint=endpoint,
                body=request.get_json(silent=True),
            )
        )
        if not str(endpoint).endswith(("versions", "version")) and endpoint != "tokens":
            token = self.state.tokens.get(request.headers.get("X-Auth-Token", ""))
            if token is None:
                return self._error(
                    401, "unauthorized", "The request you have made requires authentication."
                )
            if endpoint in _ADMIN_ONLY and "admin" not in token["roles"]:
                return self._error(
                    403,
                    "forbidden",
                    f"Policy doesn't allow os_compute_api:{endpoint} to be performed.",
                )
        handler: Handler = getattr(self, f"_{endpoint}")
        try:
            response = handler(request, **args)
        except NovaError as exc:
            response = self._error(exc.status, exc.kind, exc.message)
        if microversion is not None:
            if endpoint in ("inventories", "usages"):
                response.headers["OpenStack-API-Version"] = f"placement {microversion}"
            else:
                response.headers["OpenStack-API-Version"] = f"compute {microversion}"
                response.headers["X-OpenStack-Nova-API-Version"] = microversion
                response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        response.headers["X-OpenStack-Request-Id"] = f"req-{uuid.uuid4()}"
        return response

    def _microversion(self, request: Request, service: str) -> str | None:
        header = request.headers.get("OpenStack-API-Version", "")
        match = re.match(rf"\s*{service}\s+(\S+)", header)
        if match:
            return match.group(1)
        if service == "compute":
            legacy = request.headers.get("X-OpenStack-Nova-API-Version")
            return legacy or "2.1"
        return None

    def _error(self, status: int, kind: str, message: str) -> Response:
        if kind == "unauthorized":
            body = {"error": {"code": status, "title": "Unauthorized", "message": message}}
            return _json(
                body, status, {"WWW-Authenticate": 'Keystone uri="' + self.url + '/identity"'}
            )
        return _json({kind: {"code": status, "message": message}}, status)

    def _since(self, request: Request, minimum: str) -> bool:
        version = self._microversion(request, "compute") or "2.1"
        return _version_tuple(version) >= _version_tuple(minimum)

    # ------------------------------------------------------------------ keystone

    def _identity_versions(self, _request: Request) -> Response:
        return _json(
            {"versions": {"values": [self._identity_doc()]}},
            300,
        )

    def _identity_version(self, _request: Request) -> Response:
        return _json({"version": self._identity_doc()})

    def _identity_doc(self) -> dict[str, Any]:
        return {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{self.url}/identity/v3/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }

    def _tokens(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        auth = body.get("auth", {})
        password = auth.get("identity", {}).get("password", {}).get("user", {})
        user = self.state.users.get(str(password.get("name")))
        if user is None or user["password"] != password.get("password"):
            return self._error(
                401, "unauthorized", "The request you have made requires authentication."
            )
        token_id = uuid.uuid4().hex
        now = self.state.clock.now()
        self.state.tokens[token_id] = {"user": password.get("name"), "roles": user["roles"]}
        project = {
            "id": user["project_id"],
            "name": user["project"],
            "domain": {"id": "default", "name": "Default"},
        }
        token = {
            "methods": ["password"],
            "user": {
                "id": user["id"],
                "name": password.get("name"),
                "domain": {"id": "default", "name": "Default"},
                "password_expires_at": None,
            },
            "project": project,
            "roles": [
                {"id": uuid.uuid5(uuid.NAMESPACE_DNS, r).hex, "name": r} for r in user["roles"]
            ],
            "is_domain": False,
            "audit_ids": [uuid.uuid4().hex[:22]],
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            # Far in the future of any clock: a SimClock run of days never expires it.
            "expires_at": (now + timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "catalog": [
                self._catalog_entry("identity", "keystone", f"{self.url}/identity"),
                self._catalog_entry("compute", "nova", f"{self.url}/compute/v2.1"),
                self._catalog_entry("placement", "placement", f"{self.url}/placement"),
            ],
        }
        return _json({"token": token}, 201, {"X-Subject-Token": token_id})

    @staticmethod
    def _catalog_entry(kind: str, name: str, url: str) -> dict[str, Any]:
        return {
            "type": kind,
            "name": name,
            "id": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
            "endpoints": [
                {
                    "id": uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.{interface}").hex,
                    "interface": interface,
                    "region": "RegionOne",
                    "region_id": "RegionOne",
                    "url": url,
                }
                for interface in ("public", "internal", "admin")
            ],
        }

    # ------------------------------------------------------------------ nova: discovery

    def _compute_doc(self) -> dict[str, Any]:
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": NOVA_MAX_VERSION,
            "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/"}],
            "media-types": [
                {
                    "base": "application/json",
                    "type": "application/vnd.openstack.compute+json;version=2.1",
                }
            ],
        }

    def _compute_versions(self, _request: Request) -> Response:
        return _json({"versions": [self._compute_doc()]})

    def _compute_version(self, _request: Request) -> Response:
        return _json({"version": self._compute_doc()})

    # ------------------------------------------------------------------ nova: services

    def _service_body(self, service: dict[str, Any]) -> dict[str, Any]:
        body = {
            k: service[k]
            for k in (
                "id",
                "binary",
                "host",
                "status",
                "state",
                "disabled_reason",
                "forced_down",
                "updated_at",
            )
        }
        # Nova computes a compute service's zone from the aggregates holding its host.
        body["zone"] = self.state.zone_of(service["host"])
        return body

    def _services(self, request: Request) -> Response:
        binary = request.args.get("binary")
        host = request.args.get("host")
        with self.state.lock:
            found = [
                self._service_body(s)
                for s in self.state.services.values()
                if binary in (None, s["binary"]) and host in (None, s["host"])
            ]
        return _json({"services": found})

    def _service_update(self, request: Request, sid: str) -> Response:
        if not self._since(request, "2.53"):
            raise NovaError(404, "itemNotFound", "Service ids are UUIDs from microversion 2.53")
        changes = request.get_json(silent=True) or {}
        unknown = set(changes) - {"status", "disabled_reason", "forced_down"}
        if unknown:
            raise NovaError(
                400,
                "badRequest",
                f"Additional properties are not allowed ({', '.join(sorted(unknown))})",
            )
        if changes.get("disabled_reason") and changes.get("status") != "disabled":
            raise NovaError(
                400, "badRequest", "Specifying 'disabled_reason' with status 'enabled' is invalid."
            )
        service = self.state.set_service(sid, changes)
        return _json({"service": self._service_body(service)})

    def _hypervisors(self, _request: Request) -> Response:
        with self.state.lock:
            found = [
                {
                    "id": s["node_id"],
                    "hypervisor_hostname": s["node_name"],
                    "hypervisor_type": "QEMU",
                    "hypervisor_version": 8002000,
                    "host_ip": "192.0.2.10",
                    "state": s["state"],
                    "status": s["status"],
                    "uptime": None,
                    "service": {
                        "host": s["host"],
                        "id": s["id"],
                        "disabled_reason": s["disabled_reason"],
                    },
                }
                for s in self.state.services.values()
            ]
        return _json({"hypervisors": found})

    def _provider(self, rp: str) -> dict[str, Any] | None:
        return next((s for s in self.state.services.values() if s["node_id"] == rp), None)

    @staticmethod
    def _no_provider(rp: str) -> Response:
        body = {
            "errors": [
                {
                    "status": 404,
                    "title": "Not Found",
                    "detail": f"No resource provider with uuid {rp} found",
                }
            ]
        }
        return _json(body, 404)

    def _usages(self, _request: Request, rp: str) -> Response:
        with self.state.lock:
            self.state.settle()
            service = self._provider(rp)
            if service is None:
                return self._no_provider(rp)
            usages = self.state.usage(service["host"])
        return _json({"resource_provider_generation": 1, "usages": usages})

    def _inventories(self, _request: Request, rp: str) -> Response:
        with self.state.lock:
            service = self._provider(rp)
            if service is None:
                return self._no_provider(rp)
            inventories = {
                rc: {
                    "total": inv["total"],
                    "reserved": inv["reserved"],
                    "min_unit": 1,
                    "max_unit": inv["total"],
                    "step_size": 1,
                    "allocation_ratio": inv["ratio"],
                }
                for rc, inv in service["inventories"].items()
            }
        return _json({"resource_provider_generation": 1, "inventories": inventories})

    def _placement_versions(self, _request: Request) -> Response:
        return _json(
            {
                "versions": [
                    {
                        "id": "v1.0",
                        "max_version": PLACEMENT_MAX_VERSION,
                        "min_version": "1.0",
                        "status": "CURRENT",
                        "links": [{"rel": "self", "href": ""}],
                    }
                ]
            }
        )

    # ------------------------------------------------------------------ nova: servers

    def _server_body(self, server: dict[str, Any], request: Request) -> dict[str, Any]:
        service = self.state.services.get(server["host"], {})
        body = {
            "id": server["id"],
            "name": server["name"],
            "status": server["status"],
            "tenant_id": server["tenant_id"],
            "user_id": server["user_id"],
            "metadata": dict(server["metadata"]),
            "created": server["created"],
            "updated": server["updated"],
            "addresses": {},
            "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/servers/{server['id']}"}],
            "OS-EXT-SRV-ATTR:host": server["host"],
            "OS-EXT-SRV-ATTR:hypervisor_hostname": service.get("node_name"),
            "OS-EXT-SRV-ATTR:instance_name": f"instance-{server['id']}",
            "OS-EXT-STS:vm_state": server["vm_state"],
            "OS-EXT-STS:task_state": server["task_state"],
            "OS-EXT-STS:power_state": 1,
            "OS-EXT-AZ:availability_zone": "nova",
        }
        if server["fault"] is not None and server["status"] in ("ERROR", "DELETED"):
            body["fault"] = dict(server["fault"])  # Nova shows it for these statuses only
        if self._since(request, "2.47"):
            body["flavor"] = dict(server["flavor"])
        else:
            body["flavor"] = {"id": server["flavor"]["original_name"], "links": []}
        if self._since(request, "2.26"):
            body["tags"] = list(server["tags"])
        return body

    def _servers(self, request: Request) -> Response:
        all_tenants = request.args.get("all_tenants", "").lower() in ("1", "true", "yes")
        host = request.args.get("host")
        tags = [t for t in request.args.get("tags", "").split(",") if t]
        token = self.state.tokens[request.headers["X-Auth-Token"]]
        if (all_tenants or host) and "admin" not in token["roles"]:
            raise NovaError(
                403,
                "forbidden",
                "Policy doesn't allow os_compute_api:servers:index:get_all_tenants "
                "to be performed.",
            )
        if not all_tenants:
            return _json({"servers": []})  # the fake's admin project owns no server
        with self.state.lock:
            found = [
                self._server_body(s, request)
                for s in self.state.servers_matching([host] if host else None, tags)
            ]
        return _json({"servers": found})

    def _server(self, request: Request, sid: str) -> Response:
        with self.state.lock:
            self.state.settle()
            server = self.state.servers.get(sid)
            if server is None:
                raise NovaError(404, "itemNotFound", f"Instance {sid} could not be found.")
            return _json({"server": self._server_body(server, request)})

    def _action(self, request: Request, sid: str) -> Response:
        body = request.get_json(silent=True) or {}
        if "os-migrateLive" in body:
            args = body["os-migrateLive"] or {}
            if args.get("block_migration") not in (True, False, "auto"):
                raise NovaError(
                    400, "badRequest", "Invalid input for field/attribute block_migration."
                )
            self._admin_only(request, "os-migrate-server:migrate_live")
            self.state.request_migration(sid, LIVE, args.get("host"))
            return Response(status=202)
        if "migrate" in body:
            args = body["migrate"] or {}
            if args.get("host") and not self._since(request, "2.56"):
                raise NovaError(
                    400,
                    "badRequest",
                    "Additional properties are not allowed ('host' was unexpected)",
                )
            self._admin_only(request, "os-migrate-server:migrate")
            self.state.request_migration(sid, COLD, args.get("host"))
            return Response(status=202)
        if "confirmResize" in body:
            self.state.confirm_resize(sid)
            return Response(status=204)
        raise NovaError(400, "badRequest", f"Unsupported server action {sorted(body)}")

    def _admin_only(self, request: Request, rule: str) -> None:
        token = self.state.tokens[request.headers["X-Auth-Token"]]
        if "admin" not in token["roles"]:
            raise NovaError(
                403, "forbidden", f"Policy doesn't allow os_compute_api:{rule} to be performed."
            )

    def _require_server(self, sid: str) -> dict[str, Any]:
        server = self.state.servers.get(sid)
        if server is None:
            raise NovaError(404, "itemNotFound", f"Instance {sid} could not be found.")
        return server

    def _metadata(self, request: Request, sid: str) -> Response:
        with self.state.lock:
            self.state.settle()
            server = self._require_server(sid)
            self.state.check_writable(server, "update_instance_metadata", task_too=True)
            server["metadata"].update((request.get_json(silent=True) or {}).get("metadata", {}))
            return _json({"metadata": dict(server["metadata"])})

    def _metadata_item(self, _request: Request, sid: str, key: str) -> Response:
        with self.state.lock:
            self.state.settle()
            server = self._require_server(sid)
            self.state.check_writable(server, "delete_instance_metadata", task_too=True)
            if key not in server["metadata"]:
                raise NovaError(404, "itemNotFound", "Metadata item was not found")
            del server["metadata"][key]
        return Response(status=204)

    def _tag(self, request: Request, sid: str, tag: str) -> Response:
        if not self._since(request, "2.26"):
            raise NovaError(404, "itemNotFound", "The resource could not be found.")
        with self.state.lock:
            self.state.settle()
            server = self._require_server(sid)
            # Nova's server tags API checks the vm_state only (not the task_state).
            self.state.check_writable(
                server, "update tag" if request.method == "PUT" else "delete tag", task_too=False
            )
            if request.method == "PUT":
                if len(tag) > 60 or "/" in tag or "," in tag:
                    raise NovaError(400, "badRequest", f"Invalid tag {tag!r}")
                created = tag not in server["tags"]
                if created:
                    server["tags"].append(tag)
                return Response(status=201 if created else 204)
            if tag not in server["tags"]:
                raise NovaError(404, "itemNotFound", f"Tag {tag} could not be found.")
            server["tags"].remove(tag)
        return Response(status=204)

    def _actions(self, _request: Request, sid: str) -> Response:
        with self.state.lock:
            self.state.settle()
            self._require_server(sid)
            found = [
                {k: v for k, v in a.items() if k != "events"}
                for a in reversed(self.state.actions[sid])
            ]
        return _json({"instanceActions": found})

    def _instance_action(self, _request: Request, sid: str, rid: str) -> Response:
        with self.state.lock:
            self.state.settle()
            self._require_server(sid)
            for action in self.state.actions[sid]:
                if action["request_id"] == rid:
                    return _json({"instanceAction": {**action, "events": list(action["events"])}})
        raise NovaError(404, "itemNotFound", f"Action {rid} could not be found.")

    # ------------------------------------------------------------------ nova: migrations

    @staticmethod
    def _migration_body(m: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if not k.startswith("_")}

    def _migrations(self, request: Request) -> Response:
        server_id = request.args.get("instance_uuid")
        kind = request.args.get("migration_type")
        status = request.args.get("status")
        found = [
            self._migration_body(m)
            for m in self.state.migrations_of(server_id)
            if kind in (None, m["migration_type"]) and status in (None, m["status"])
        ]
        found.reverse()  # newest first, as Nova sorts them
        return _json({"migrations": found})

    def _server_migrations(self, _request: Request, sid: str) -> Response:
        with self.state.lock:
            self._require_server(sid)
            found = [
                {**self._migration_body(m), "server_uuid": sid}
                for m in self.state.migrations_of(sid)
                if m["migration_type"] == LIVE and m["status"] == "running"
            ]
        return _json({"migrations": found})

    def _server_groups(self, request: Request) -> Response:
        with self.state.lock:
            found = [dict(g) for g in self.state.server_groups.values()]
            if not self._since(request, "2.64"):
                for group in found:
                    group["policies"] = [group.pop("policy")]
                    group.pop("rules")
        return _json({"server_groups": found})

    def _aggregates(self, _request: Request) -> Response:
        with self.state.lock:
            return _json({"aggregates": [dict(a) for a in self.state.aggregates.values()]})
