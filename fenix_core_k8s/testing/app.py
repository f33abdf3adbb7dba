"""The HTTP face of the fake apiserver: the requests the official client sends.

Routes (everything else answers 404 with a ``Status`` body, as the real server):

=========  ==================================================  ======================
GET        /api/v1/nodes, /api/v1/nodes/{name}                 list / read nodes
PATCH      /api/v1/nodes/{name}                                spec + metadata only
PATCH      /api/v1/nodes/{name}/status                         status only
GET        /api/v1/pods, /api/v1/namespaces/{ns}/pods          fieldSelector, labelSelector
GET        /api/v1/namespaces/{ns}/pods/{name}                 read a pod
DELETE     /api/v1/namespaces/{ns}/pods/{name}                 delete (recorded)
POST       /api/v1/namespaces/{ns}/pods/{name}/eviction        policy/v1 Eviction
GET        /apis/policy/v1/poddisruptionbudgets (+ namespaced) with live status
POST/GET   /api/v1/namespaces/{ns}/events, GET /api/v1/events  core/v1 Events
=========  ==================================================  ======================

Patches accept the content types the client sends for an object body
(``application/strategic-merge-patch+json``, which it picks for a dict, and
``application/merge-patch+json``); a strategic merge merges ``conditions``
lists by ``type`` as the apiserver's patch strategy for them says. JSON Patch
(a list body) answers 415: the plug-in never sends one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .cluster import ApiError, FakeCluster, Obj

__all__ = ["FakeApiApp"]

_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")

#: Fields a selector may name, per resource, with how to read them.
_POD_FIELDS: Mapping[str, Callable[[Obj], str]] = {
    "spec.nodeName": lambda o: str(o["spec"].get("nodeName", "")),
    "metadata.name": lambda o: str(o["metadata"]["name"]),
    "metadata.namespace": lambda o: str(o["metadata"]["namespace"]),
    "status.phase": lambda o: str(o["status"].get("phase", "")),
}
_EVENT_FIELDS: Mapping[str, Callable[[Obj], str]] = {
    "reason": lambda o: str(o.get("reason", "")),
    "type": lambda o: str(o.get("type", "")),
    "metadata.name": lambda o: str(o["metadata"]["name"]),
    "involvedObject.kind": lambda o: str(o.get("involvedObject", {}).get("kind", "")),
    "involvedObject.name": lambda o: str(o.get("involvedObject", {}).get("name", "")),
    "involvedObject.namespace": lambda o: str(o.get("involvedObject", {}).get("namespace", "")),
}


def _parse_selector(text: str, what: str) -> list[tuple[str, str, str]]:
    """``a=b,c!=d`` -> [(a, "=", b), (c, "!=", d)] (the equality-based form)."""
    terms = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        for op in ("!=", "==", "="):
            if op in part:
                key, value = part.split(op, 1)
                terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            if what == "label":
                terms.append((part, "exists", ""))
            else:
                raise ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
    return terms


def _filter_fields(
    items: Iterable[Obj], text: str | None, fields: Mapping[str, Callable[[Obj], str]], kind: str
) -> list[Obj]:
    terms = _parse_selector(text or "", "field")
    for key, _, _ in terms:
        if key not in fields:
            raise ApiError(
                400,
                "BadRequest",
                f'field label not supported: {key}: "{key}" is not a known field selector '
                f"for {kind}",
            )
    return [
        item for item in items if all((fields[k](item) == v) == (op == "=") for k, op, v in terms)
    ]


def _filter_labels(items: Iterable[Obj], text: str | None) -> list[Obj]:
    terms = _parse_selector(text or "", "label")

    def matches(item: Obj) -> bool:
        labels = item["metadata"].get("labels") or {}
        for key, op, value in terms:
            if op == "exists" and key not in labels:
                return False
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
        return True

    return [item for item in items if matches(item)]


def merge_patch(target: Any, patch: Any, *, strategic: bool, path: str = "") -> Any:
    """RFC 7386 JSON merge patch; with ``strategic``, ``conditions`` lists merge by type."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        here = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif strategic and key == "conditions" and isinstance(value, list):
            merged = {c.get("type"): c for c in result.get(key) or ()}
            for cond in value:
                merged[cond.get("type")] = {**merged.get(cond.get("type"), {}), **cond}
            result[key] = list(merged.values())
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic, path=here)
    return result


_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _check_version(obj: Obj, patch: Obj, resource: str, name: str) -> None:
    """A patch carrying metadata.resourceVersion applies only to that version
    (optimistic concurrency): else 409 Conflict, as the apiserver answers."""
    wanted = (patch.get("metadata") or {}).get("resourceVersion")
    if wanted is not None and str(wanted) != obj["metadata"].get("resourceVersion"):
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
        )


def _check_taints(patch: Obj) -> None:
    """spec.taints as the apiserver validates it: a key, a known effect, and
    no two taints with the same key and effect (422 Invalid)."""
    taints = (patch.get("spec") or {}).get("taints")
    if taints is None:
        return
    seen: set[tuple[str, str]] = set()
    for index, taint in enumerate(taints):
        field = f"spec.taints[{index}]"
        if not taint.get("key"):
            raise ApiError(422, "Invalid", f"Node is invalid: {field}.key: Required value")
        if taint.get("effect") not in _TAINT_EFFECTS:
            raise ApiError(
                422,
                "Invalid",
                f"Node is invalid: {field}.effect: Unsupported value: "
                f"{taint.get('effect')!r}: supported values: " + ", ".join(_TAINT_EFFECTS),
            )
        pair = (taint["key"], taint["effect"])
        if pair in seen:
            raise ApiError(
                422,
                "Invalid",
                f"Node is invalid: {field}: Duplicate value: taints must be unique by key "
                "and effect pair",
            )
        seen.add(pair)


def _list(kind: str, api_version: str, items: list[Obj], rv: str) -> Obj:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": rv},
        "items": items,
    }


class FakeApiApp:
    """A WSGI application serving a :class:`FakeCluster`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every request
        self._map = Map(
            [
                Rule("/api/v1/nodes", endpoint="nodes", methods=["GET"]),
                Rule("/api/v1/nodes/<name>", endpoint="node", methods=["GET", "PATCH"]),
                Rule("/api/v1/nodes/<name>/status", endpoint="node_status", methods=["PATCH"]),
                Rule("/api/v1/pods", endpoint="pods", methods=["GET"]),
                Rule("/api/v1/namespaces/<ns>/pods", endpoint="pods", methods=["GET"]),
                Rule(
                    "/api/v1/namespaces/<ns>/pods/<name>",
                    endpoint="pod",
                    methods=["GET", "DELETE"],
                ),
                Rule(
                    "/api/v1/namespaces/<ns>/pods/<name>/eviction",
                    endpoint="eviction",
                    methods=["POST"],
                ),
                Rule("/apis/policy/v1/poddisruptionbudgets", endpoint="pdbs", methods=["GET"]),
                Rule(
                    "/apis/policy/v1/namespaces/<ns>/poddisruptionbudgets",
                    endpoint="pdbs",
                    methods=["GET"],
                ),
                Rule("/api/v1/events", endpoint="events", methods=["GET"]),
                Rule("/api/v1/namespaces/<ns>/events", endpoint="events", methods=["GET", "POST"]),
            ],
            strict_slashes=False,
        )

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        self.requests.append((request.method, request.full_path.rstrip("?")))
        adapter = self._map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
            with self.cluster.lock:
                self.cluster.tick()
                handler = getattr(self, f"_{endpoint}")
                code, body = handler(request, **args)
        except ApiError as exc:
            code, body = exc.code, exc.status()
        except MethodNotAllowed:
            code, body = 405, ApiError(405, "MethodNotAllowed", "method not allowed").status()
        except NotFound:
            message = "the server could not find the requested resource"
            code, body = 404, ApiError(404, "NotFound", message).status()
        except HTTPException as exc:  # pragma: no cover - werkzeug's other answers
            code = exc.code or 500
            body = ApiError(code, "InternalError", str(exc)).status()
        return Response(json.dumps(body), status=code, content_type="application/json")

    # ------------------------------------------------------------------ helpers

    def _json(self, request: Request) -> Any:
        try:
            return json.loads(request.get_data() or b"null")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON: {exc}") from None

    def _node_obj(self, name: str) -> Obj:
        node = self.cluster.nodes.get(name)
        if node is None:
            raise ApiError(404, "NotFound", f'nodes "{name}" not found')
        return node

    def _patch(self, request: Request) -> tuple[Obj, bool]:
        content_type = (request.content_type or "").split(";")[0].strip()
        if content_type not in _MERGE_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(_MERGE_TYPES)}",
            )
        patch = self._json(request)
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        return patch, content_type.startswith("application/strategic")

    # ------------------------------------------------------------------ nodes

    def _nodes(self, request: Request) -> tuple[int, Obj]:
        items = _filter_labels(self.cluster.nodes.values(), request.args.get("labelSelector"))
        rv = self.cluster.resource_version()
        return 200, _list("NodeList", "v1", copy.deepcopy(items), rv)

    def _node(self, request: Request, name: str) -> tuple[int, Obj]:
        node = self._node_obj(name)
        if request.method == "PATCH":
            patch, strategic = self._patch(request)
            patch.pop("status", None)  # status changes go through /status only
            _check_version(node, patch, "nodes", name)
            _check_taints(patch)
            before = copy.deepcopy(node["spec"])
            updated = merge_patch(node, patch, strategic=strategic)
            node.clear()
            node.update(updated)
            node.setdefault("spec", {})
            self.cluster.node_changed(name, before)
        return 200, copy.deepcopy(node)

    def _node_status(self, request: Request, name: str) -> tuple[int, Obj]:
        node = self._node_obj(name)
        patch, strategic = self._patch(request)
        if "status" in patch:
            node["status"] = merge_patch(node.get("status"), patch["status"], strategic=strategic)
        if "metadata" in patch:
            node["metadata"] = merge_patch(node["metadata"], patch["metadata"], strategic=False)
        self.cluster.node_changed(name, node["spec"])
        return 200, copy.deepcopy(node)

    # ------------------------------------------------------------------ pods

    def _pods(self, request: Request, ns: str | None = None) -> tuple[int, Obj]:
        items = [
            p for p in self.cluster.pods.values() if ns is None or p["metadata"]["namespace"] == ns
        ]
        items = _filter_fields(items, request.args.get("fieldSelector"), _POD_FIELDS, "Pod")
        items = _filter_labels(items, request.args.get("labelSelector"))
        items.sort(key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
        rv = self.cluster.resource_version()
        return 200, _list("PodList", "v1", copy.deepcopy(items), rv)

    def _pod(self, request: Request, ns: str, name: str) -> tuple[int, Obj]:
        if request.method == "DELETE":
            return 200, copy.deepcopy(self.cluster.delete_pod(ns, name))
        return 200, copy.deepcopy(self.cluster._get_pod(ns, name))

    def _eviction(self, request: Request, ns: str, name: str) -> tuple[int, Obj]:
        body = self._json(request)
        if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
            raise ApiError(400, "BadRequest", "the body must be an Eviction")
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction")
        self.cluster.evict(ns, name, body)
        return 201, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    # ------------------------------------------------------------------ budgets, events

    def _pdbs(self, request: Request, ns: str | None = None) -> tuple[int, Obj]:
        items = [
            self.cluster.pdb_with_status(b)
            for (b_ns, _), b in sorted(self.cluster.pdbs.items())
            if ns is None or b_ns == ns
        ]
        rv = self.cluster.resource_version()
        return 200, _list("PodDisruptionBudgetList", "policy/v1", items, rv)

    def _events(self, request: Request, ns: str | None = None) -> tuple[int, Obj]:
        if request.method == "POST":
            assert ns is not None
            body = self._json(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be an Event")
            return 201, self.cluster.add_event(ns, body)
        items = [e for e in self.cluster.events if ns is None or e["metadata"]["namespace"] == ns]
        items = _filter_fields(items, request.args.get("fieldSelector"), _EVENT_FIELDS, "Event")
        rv = self.cluster.resource_version()
        return 200, _list("EventList", "v1", copy.deepcopy(items), rv)
