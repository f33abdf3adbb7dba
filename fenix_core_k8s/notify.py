"""Publish ``maintenance_host`` notifications on the cluster, for its tooling.

A :class:`NodeNotifier` connected to an engine turns each ``maintenance_host``
signal into:

* annotations on the Node: ``fenix-core/maintenance-state`` (IN_MAINTENANCE,
  MAINTENANCE_COMPLETE) and ``fenix-core/maintenance-session``;
* a Node condition ``FenixMaintenance`` (True while in maintenance), written
  through the ``/status`` subresource (``patch_node_status``), since status in
  a patch of the node itself is ignored by the apiserver;
* a Kubernetes Event on the Node (``kubectl describe node``, ``kubectl get
  events``), in namespace ``default`` as the kubelet does for nodes.

HOST_ADDED / HOST_REMOVED only give an Event. A failed call is logged and the
others still happen: publishing must never hold maintenance up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, V1ObjectReference
from kubernetes.client.exceptions import ApiException

from fenix_core import signals
from fenix_core.clock import Clock, RealClock

from .events import event
from .moves import api_message

__all__ = ["CONDITION_TYPE", "SESSION_ANNOTATION", "STATE_ANNOTATION", "NodeNotifier"]

log = logging.getLogger(__name__)

STATE_ANNOTATION = "fenix-core/maintenance-state"
SESSION_ANNOTATION = "fenix-core/maintenance-session"
CONDITION_TYPE = "FenixMaintenance"
_REASONS = {
    "IN_MAINTENANCE": "InMaintenance",
    "MAINTENANCE_COMPLETE": "MaintenanceComplete",
    "HOST_ADDED": "HostAdded",
    "HOST_REMOVED": "HostRemoved",
}


class NodeNotifier:
    """``NodeNotifier(api_client).connect(engine)``; ``disconnect()`` to stop."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        clock: Clock | None = None,
        event_namespace: str = "default",
    ) -> None:
        self.core = CoreV1Api(api_client)
        self.clock: Clock = clock if clock is not None else RealClock()
        self.event_namespace = event_namespace
        self._sender: object | None = None

    def connect(self, engine: object) -> NodeNotifier:
        self._sender = engine
        signals.maintenance_host.connect(self._receive, sender=engine)
        return self

    def disconnect(self) -> None:
        if self._sender is not None:
            signals.maintenance_host.disconnect(self._receive, sender=self._sender)
            self._sender = None

    def _receive(self, sender: object, payload: Mapping[str, Any]) -> None:
        self.publish(payload)

    def publish(self, payload: Mapping[str, Any]) -> None:
        """Publish one ``maintenance_host`` payload."""
        host, state = str(payload["host"]), str(payload["state"])
        session = str(payload.get("session_id", ""))
        reason = _REASONS.get(state, state.title().replace("_", ""))
        message = f"fenix-core session {session}: {state}"
        if state in ("IN_MAINTENANCE", "MAINTENANCE_COMPLETE"):
            annotations = {STATE_ANNOTATION: state, SESSION_ANNOTATION: session}
            self._try(
                f"annotating node {host}",
                lambda: self.core.patch_node(host, {"metadata": {"annotations": annotations}}),
            )
            condition = {
                "type": CONDITION_TYPE,
                "status": "True" if state == "IN_MAINTENANCE" else "False",
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": self._now(),
                "lastTransitionTime": self._now(),
            }
            self._try(
                f"setting the {CONDITION_TYPE} condition of node {host}",
                lambda: self.core.patch_node_status(host, {"status": {"conditions": [condition]}}),
            )
        record = event(
            name=f"{host[:200]}.fenix-{uuid.uuid4().hex[:12]}",
            about=V1ObjectReference(kind="Node", api_version="v1", name=host, uid=host),
            reason=reason,
            message=message,
            now=self.clock.now(),
        )
        self._try(
            f"recording an Event for node {host}",
            lambda: self.core.create_namespaced_event(self.event_namespace, record),
        )

    def _now(self) -> str:
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _try(what: str, call: Any) -> None:
        try:
            call()
        except ApiException as exc:
            log.warning("%s failed: %s", what, api_message(exc))
