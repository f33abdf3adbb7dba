"""Moving a pod off its node: the policy/v1 Eviction API, then its replacement.

A move is a small state machine that the engine polls; everything it needs
lives in the **handle** (``start`` returns it and the engine persists it), so a
new engine process after a crash polls it with a new driver and loses nothing
but the back-off count::

    evict|<namespace>|<pod>|<pod uid>|<controller kind>|<controller uid>|<ready before>

* the pod uid makes every eviction conditional on it (``deleteOptions.
  preconditions.uid``): a StatefulSet pod that came back under the same name
  is never evicted by an old handle;
* the controller kind and uid say what replacement to wait for: a StatefulSet
  brings back the same name with a new uid; a ReplicaSet (or
  ReplicationController) makes a pod with a new name. The driver remembers
  which pods of the set existed when the move started and waits for a Ready
  one that did not. After a crash (a new driver, nothing in memory) it waits
  instead until the set has as many Ready pods as it had before the move
  (``ready before``), which is what the application cares about, though a
  replacement made for a concurrent move of the same set can then end this
  one a little early (the budget still guards the next eviction).
  Other controllers (Jobs, operators' custom resources) are followed until
  the pod is gone: whether and where they recreate it is theirs to say.

Poll by poll: evict (a 429 from a PodDisruptionBudget is retried with the
driver's own back-off, 5 s doubling to 60 s, and reported as ``running`` with
the budget named; a 500 because several budgets select the pod fails the
move) -> wait until the pod is gone -> wait until the replacement is Ready
-> ``done(host=<its node>)``; a pod without a replacement to wait for ends as
``gone``. A pod with emptyDir volumes is not evicted unless the driver was
created with ``delete_emptydir_data=True`` (``kubectl drain
--delete-emptydir-data``): the move stays ``running`` and says why, until the
pod is gone (moved or deleted by someone) or the move times out.

``start`` evicts nothing: it checks the pod and writes the handle into a
Kubernetes Event on the pod (reason ``FenixEviction``, annotation
``fenix-core/move-key``). The node was cordoned before: the workflows disable
a host before the first move off it. ``find_move(key)``
reads that Event back, which covers a crash between ``start`` and the engine
persisting the handle. Without it (the Event expired, events are forbidden)
the engine starts the move again, which is safe: a pod already terminating is
evicted again without budget checks (and counted as Ready before), and a pod
already gone ends the move as ``gone``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from kubernetes.client import (
    CoreV1Api,
    V1DeleteOptions,
    V1Eviction,
    V1ObjectMeta,
    V1ObjectReference,
    V1Pod,
    V1Preconditions,
)
from kubernetes.client.exceptions import ApiException

from fenix_core.clock import Clock
from fenix_core.errors import CloudError
from fenix_core.model import OperationStatus

from .events import event
from .pods import controller_of, emptydir_volumes, is_instance, is_ready, split_instance_id

__all__ = ["EVENT_REASON", "MOVE_KEY_ANNOTATION", "Evictions", "MoveHandle", "UnmanagedPods"]

log = logging.getLogger(__name__)

UnmanagedPods = Literal["fail", "evict"]
EVENT_REASON = "FenixEviction"
MOVE_KEY_ANNOTATION = "fenix-core/move-key"
MOVE_HANDLE_ANNOTATION = "fenix-core/move-handle"
#: Controllers that replace an evicted pod with a new one under a new name.
NEW_NAME_CONTROLLERS = ("ReplicaSet", "ReplicationController")
#: Seconds between polls while a pod terminates or its replacement starts.
_POLL = 5.0
_BACKOFF_MIN, _BACKOFF_MAX = 5.0, 60.0
#: Seconds between checks of a pod held back by its emptyDir data.
_LOCAL_DATA_POLL = 60.0
_BUDGET_NAME = re.compile(r"disruption budget (\S+)")


@attrs.frozen
class MoveHandle:
    """What a move handle encodes (see the module docstring)."""

    namespace: str
    name: str
    uid: str | None  # None: the pod was already gone when the move started
    kind: str | None = None
    owner_uid: str | None = None
    ready_before: int = 0  # Ready pods of the controller when the move started

    def encode(self) -> str:
        fields = [self.namespace, self.name, self.uid, self.kind, self.owner_uid]
        text = "|".join(["evict", *(f or "-" for f in fields), str(self.ready_before)])
        if len(text) > 255:
            raise CloudError(
                f"pod {self.namespace}/{self.name}: names too long for a move handle",
                instance_id=f"{self.namespace}/{self.name}",
            )
        return text

    @classmethod
    def decode(cls, text: str) -> MoveHandle:
        parts = text.split("|")
        if len(parts) != 7 or parts[0] != "evict":
            raise CloudError(f"not a Kubernetes move handle: {text!r}")
        ns, name, uid, kind, owner_uid, ready = (None if p == "-" else p for p in parts[1:])
        assert ns is not None
        assert name is not None
        return cls(ns, name, uid, kind, owner_uid, int(ready or 0))

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.name}"


def api_message(exc: ApiException) -> str:
    """The ``message`` of a Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or f"HTTP {exc.status}")


def _causes(exc: ApiException) -> list[dict[str, Any]]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return []
    return list((body.get("details") or {}).get("causes") or [])


def _created(pod: V1Pod) -> datetime:
    stamp = pod.metadata.creation_timestamp if pod.metadata else None
    return stamp if stamp is not None else datetime.min.replace(tzinfo=UTC)


class Evictions:
    """Starts, polls and finds pod evictions for :class:`KubernetesDriver`."""

    def __init__(
        self,
        core: CoreV1Api,
        clock: Clock,
        *,
        unmanaged_pods: UnmanagedPods,
        delete_emptydir_data: bool = False,
    ) -> None:
        self.core = core
        self.clock = clock
        self.unmanaged_pods = unmanaged_pods
        self.delete_emptydir_data = delete_emptydir_data
        self._rejections: dict[str, int] = {}  # handle -> 429s in a row
        self._started: dict[str, str] = {}  # key -> handle, for this process
        self._existing: dict[str, set[str | None]] = {}  # handle -> uids of the set at start

    # ------------------------------------------------------------------ start

    def start(self, instance_id: str, key: str) -> str:
        try:
            namespace, name = split_instance_id(instance_id)
        except ValueError as exc:
            raise CloudError(str(exc), instance_id=instance_id) from None
        pod = self._read(namespace, name)
        if pod is None:
            handle = MoveHandle(namespace, name, None).encode()
            self._started[key] = handle
            return handle
        assert pod.metadata is not None
        assert pod.spec is not None
        if not is_instance(pod):
            raise CloudError(
                f"pod {instance_id} belongs to a DaemonSet, is a static pod's mirror or has "
                "finished: it is never evicted",
                instance_id=instance_id,
            )
        owner = controller_of(pod)
        if owner is None and self.unmanaged_pods != "evict":
            raise CloudError(
                f"pod {instance_id} has no controller: evicting it would delete it for good "
                "(nothing recreates it). Move it yourself (OWN_ACTION), give it a controller, "
                "or create the driver with unmanaged_pods='evict'",
                instance_id=instance_id,
            )
        node = pod.spec.node_name
        ready_before, existing = 0, None
        if owner is not None and owner.kind in NEW_NAME_CONTROLLERS:
            siblings = self._siblings(namespace, owner.uid, exclude=None)
            others = [p for p in siblings if p.metadata and p.metadata.uid != pod.metadata.uid]
            terminating = pod.metadata.deletion_timestamp is not None
            ready_before = sum(1 for p in others if is_ready(p)) + (
                1 if terminating or is_ready(pod) else 0
            )
            if not terminating:  # evicted before a crash: its replacement may exist already
                existing = {p.metadata.uid for p in siblings if p.metadata}
        handle = MoveHandle(
            namespace,
            name,
            pod.metadata.uid,
            owner.kind if owner else None,
            owner.uid if owner else None,
            ready_before,
        ).encode()
        if existing is not None:
            self._existing[handle] = existing
        self._record(pod, node, key, handle)
        self._started[key] = handle
        return handle

    def _siblings(self, namespace: str, owner_uid: str | None, exclude: str | None) -> list[V1Pod]:
        """The pods of one controller (by uid), but ``exclude``."""
        return [
            p
            for p in self.core.list_namespaced_pod(namespace).items
            if p.metadata is not None
            and p.metadata.uid != exclude
            and any(r.uid == owner_uid and r.controller for r in p.metadata.owner_references or ())
        ]

    def _record(self, pod: V1Pod, node: str | None, key: str, handle: str) -> None:
        """An Event on the pod holding the handle, so find_move survives a crash."""
        meta = pod.metadata
        assert meta is not None
        assert meta.name is not None
        assert meta.namespace is not None
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:12]
        record = event(
            name=f"{meta.name[:200]}.fenix-{digest}",
            about=V1ObjectReference(
                kind="Pod", api_version="v1", namespace=meta.namespace, name=meta.name, uid=meta.uid
            ),
            reason=EVENT_REASON,
            message=f"fenix-core evicts {meta.namespace}/{meta.name} from {node} for maintenance",
            now=self.clock.now(),
            annotations={MOVE_KEY_ANNOTATION: key, MOVE_HANDLE_ANNOTATION: handle},
        )
        try:
            self.core.create_namespaced_event(meta.namespace, record)
        except ApiException as exc:
            if exc.status != 409:  # 409: recorded already by an earlier attempt
                log.warning(
                    "could not record the eviction of %s/%s as an Event (%s): after a crash "
                    "the engine will start it again",
                    meta.namespace,
                    meta.name,
                    api_message(exc),
                )

    # ------------------------------------------------------------------ find

    def find(self, key: str) -> str | None:
        if key in self._started:
            return self._started[key]
        try:
            events = self.core.list_event_for_all_namespaces(
                field_selector=f"reason={EVENT_REASON}"
            ).items
        except ApiException as exc:
            log.warning("cannot look up move %s in the Events: %s", key, api_message(exc))
            return None
        for found in events:
            annotations = (found.metadata.annotations if found.metadata else None) or {}
            if annotations.get(MOVE_KEY_ANNOTATION) == key:
                return annotations.get(MOVE_HANDLE_ANNOTATION)
        return None

    # ------------------------------------------------------------------ poll

    def poll(self, text: str) -> OperationStatus:
        handle = MoveHandle.decode(text)
        if handle.uid is None:
            return OperationStatus("done", gone=True, detail=f"pod {handle.pod} was already gone")
        pod = self._read(handle.namespace, handle.name)
        if pod is not None and pod.metadata is not None and pod.metadata.uid == handle.uid:
            if pod.metadata.deletion_timestamp is not None:
                return OperationStatus.running(_POLL, f"pod {handle.pod} is terminating")
            local = emptydir_volumes(pod)
            if local and not self.delete_emptydir_data:
                return OperationStatus.running(
                    _LOCAL_DATA_POLL,
                    f"pod {handle.pod} has node-local data (emptyDir volumes: "
                    f"{', '.join(local)}) that eviction would delete: not evicted, as kubectl "
                    "drain refuses it. Move or delete the pod yourself, or create the "
                    "Kubernetes driver with delete_emptydir_data=True",
                )
            status = self._evict(text, handle)
            if status is not None:
                return status
        return self._replacement(text, handle)

    def _evict(self, text: str, handle: MoveHandle) -> OperationStatus | None:
        """Ask for the eviction; None when the pod turned out to be gone."""
        body = V1Eviction(
            metadata=V1ObjectMeta(name=handle.name, namespace=handle.namespace),
            delete_options=V1DeleteOptions(preconditions=V1Preconditions(uid=handle.uid)),
        )
        try:
            self.core.create_namespaced_pod_eviction(handle.name, handle.namespace, body)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or replaced under the same name
                return None
            if exc.status == 429:
                return self._rejected(text, handle, exc)
            return OperationStatus.failed(
                f"eviction of pod {handle.pod} refused (HTTP {exc.status}): {api_message(exc)}"
            )
        self._rejections.pop(text, None)
        return OperationStatus.running(_POLL, f"pod {handle.pod} evicted; waiting for it to end")

    def _rejected(self, text: str, handle: MoveHandle, exc: ApiException) -> OperationStatus:
        count = self._rejections.get(text, 0) + 1
        self._rejections[text] = count
        wait = min(_BACKOFF_MAX, _BACKOFF_MIN * 2 ** (count - 1))
        budget = next((c for c in _causes(exc) if c.get("reason") == "DisruptionBudget"), None)
        if budget is None:
            why = f"the apiserver is throttling requests: {api_message(exc)}"
        else:
            message = str(budget.get("message", ""))
            found = _BUDGET_NAME.search(message)
            name = found.group(1) if found else "?"
            why = f"waiting for PodDisruptionBudget {handle.namespace}/{name}: {message}"
        return OperationStatus.running(wait, f"{why} (evicting {handle.pod}, attempt {count})")

    def _replacement(self, text: str, handle: MoveHandle) -> OperationStatus:
        """The old pod is gone: wait for what replaces it, if anything does."""
        if handle.kind in NEW_NAME_CONTROLLERS:
            ready = sorted(
                (
                    p
                    for p in self._siblings(handle.namespace, handle.owner_uid, handle.uid)
                    if is_ready(p)
                ),
                key=_created,
                reverse=True,
            )
            existing = self._existing.get(text)
            if existing is not None:
                new = [p for p in ready if p.metadata and p.metadata.uid not in existing]
                if new:
                    del self._existing[text]
                    return self._replaced(handle, new[0])
            elif ready and len(ready) >= handle.ready_before:
                return self._replaced(handle, ready[0])
        elif handle.kind == "StatefulSet":
            pod = self._read(handle.namespace, handle.name)
            if (
                pod is not None
                and pod.metadata is not None
                and pod.metadata.uid != handle.uid
                and is_ready(pod)
            ):
                return self._replaced(handle, pod)
        else:
            return OperationStatus("done", gone=True, detail=f"pod {handle.pod} evicted")
        return OperationStatus.running(
            _POLL, f"pod {handle.pod} is gone; waiting for its {handle.kind} to replace it"
        )

    def _replaced(self, handle: MoveHandle, pod: V1Pod) -> OperationStatus:
        assert pod.metadata is not None
        assert pod.spec is not None
        node = pod.spec.node_name
        return OperationStatus.done(
            node,
            detail=f"pod {handle.pod} replaced by {pod.metadata.name} on {node}",
            replacement=f"{pod.metadata.namespace}/{pod.metadata.name}",
        )

    def _read(self, namespace: str, name: str) -> V1Pod | None:
        try:
            return self.core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise CloudError(
                f"reading pod {namespace}/{name} failed: {api_message(exc)}",
                instance_id=f"{namespace}/{name}",
            ) from None
