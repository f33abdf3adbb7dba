"""ScriptedManager: an application manager (VNFM, operator) that follows a script.

It subscribes its project, listens to ``maintenance_planned`` for that project
and answers the way it is told: acknowledge, refuse, stay silent, answer late,
choose instance actions, scale in on SCALE_IN and back out on
MAINTENANCE_COMPLETE, move its own instances on OWN_ACTION.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from .. import signals
from ..states import InstanceAction

if TYPE_CHECKING:
    from ..engine import Engine
    from .cloud import SimulatedCloud

__all__ = ["ScriptedManager"]

_ANSWERED = (
    "MAINTENANCE",
    "SCALE_IN",
    "PREPARE_MAINTENANCE",
    "PLANNED_MAINTENANCE",
    "MAINTENANCE_COMPLETE",
)


class _Router:
    """One ``maintenance_planned`` receiver per engine that hands each payload
    to the managers of its project only: with a receiver per manager, every
    notification would call every project's manager (notifications x
    projects calls, which dominated the scale benchmarks)."""

    _routers: ClassVar[weakref.WeakKeyDictionary[Any, _Router]] = weakref.WeakKeyDictionary()

    def __init__(self, engine: Any) -> None:
        self.engine = weakref.ref(engine)
        self.managers: dict[str, list[ScriptedManager]] = {}

    @classmethod
    def of(cls, engine: Any) -> _Router:
        router = cls._routers.get(engine)
        if router is None:
            router = cls._routers[engine] = cls(engine)
        return router

    def add(self, manager: ScriptedManager) -> None:
        if not any(self.managers.values()):
            signals.maintenance_planned.connect(self.route, sender=manager.engine, weak=False)
        self.managers.setdefault(manager.project_id, []).append(manager)

    def remove(self, manager: ScriptedManager) -> None:
        mine = self.managers.get(manager.project_id, [])
        if manager in mine:
            mine.remove(manager)
        if not any(self.managers.values()):
            signals.maintenance_planned.disconnect(self.route, sender=manager.engine)

    def route(self, sender: Any, payload: dict[str, Any]) -> None:
        for manager in list(self.managers.get(payload.get("project_id", ""), ())):
            manager._on_planned(sender, payload)


class ScriptedManager:
    """A scripted application manager for ``project_id``.

    * ``action``: instance action for PREPARE/PLANNED_MAINTENANCE (``actions``
      overrides it per instance id); None leaves the choice to the engine and
      does what it proposes (``metadata.proposed_actions``) for OWN_ACTION.
    * ``nack`` / ``silent``: states it refuses (NACK) or never answers.
    * ``delay``: seconds of (clock) time before each answer.
    * ``scale_in``: on SCALE_IN, delete that many of its instances (needs
      ``cloud``); on MAINTENANCE_COMPLETE they are re-created (scale out).
    * OWN_ACTION instances are moved by the manager itself (``cloud.relocate``).
    * ``send``: how a reply reaches the engine, called as
      ``send(session_id, project_id, state, instance_actions)`` (default
      ``engine.reply``; a front end that records replies arriving together
      with ``engine.reply_many`` can stand in).

    ``received`` lists every payload it got, ``states`` their states, and
    ``sent`` the replies it made as ``(state, instance_actions)``; with
    ``history=False`` both stay empty (a long run, e.g. a benchmark's: they
    hold every notification of the project).
    """

    def __init__(
        self,
        engine: Engine,
        project_id: str,
        *,
        cloud: SimulatedCloud | None = None,
        action: str | None = InstanceAction.LIVE_MIGRATE.value,
        actions: Mapping[str, str] | None = None,
        nack: Iterable[str] = (),
        silent: Iterable[str] = (),
        delay: float = 0.0,
        scale_in: int = 0,
        on_payload: Callable[[dict[str, Any]], None] | None = None,
        send: Callable[[str, str, str, dict[str, str]], None] | None = None,
        history: bool = True,
    ) -> None:
        self.engine = engine
        self.project_id = project_id
        self.cloud = cloud
        self.action = action
        self.actions = dict(actions or {})
        self.nack = set(nack)
        self.silent = set(silent)
        self.delay = float(delay)
        self.scale_in = scale_in
        self.on_payload = on_payload
        self.send = send  # None: engine.reply, looked up at each reply
        self.history = history
        self.received: list[dict[str, Any]] = []
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.scaled_in: list[dict[str, Any]] = []
        self.errors: list[Exception] = []
        engine.subscribe(project_id)
        _Router.of(engine).add(self)

    @property
    def states(self) -> list[str]:
        return [p["state"] for p in self.received]

    def close(self) -> None:
        _Router.of(self.engine).remove(self)

    # ------------------------------------------------------------------ handling

    def _on_planned(self, sender: Engine, payload: dict[str, Any]) -> None:
        if payload["project_id"] != self.project_id:
            return
        if self.history:
            self.received.append(payload)
        if self.on_payload is not None:
            self.on_payload(payload)
        state = payload["state"]
        if state not in _ANSWERED or state in self.silent:
            return
        if self.delay > 0:
            when = self.engine.clock.now() + timedelta(seconds=self.delay)
            self.engine.clock.call_at(when, lambda: self._answer(payload))
        else:
            self._answer(payload)

    def _answer(self, payload: dict[str, Any]) -> None:
        state = payload["state"]
        session_id = payload["session_id"]
        if state in self.nack:
            self._reply(session_id, f"NACK_{state}", {})
            return
        instance_actions: dict[str, str] = {}
        own: list[str] = []
        if state in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE") and (
            self.action is not None and not self.actions
        ):
            # One action for every instance: what the loop below would choose.
            instance_actions = dict.fromkeys(payload["instance_ids"], self.action)
            if self.action == InstanceAction.OWN_ACTION:
                own = list(payload["instance_ids"])
        elif state in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"):
            for instance_id in payload["instance_ids"]:
                action = self.actions.get(instance_id, self.action)
                if action is None:
                    # Leave the choice to the engine, but do what it proposes
                    # for this manager itself to do.
                    proposed = payload.get("metadata", {}).get("proposed_actions", {})
                    if proposed.get(instance_id) != InstanceAction.OWN_ACTION:
                        continue
                    action = InstanceAction.OWN_ACTION.value
                instance_actions[instance_id] = action
                if action == InstanceAction.OWN_ACTION:
                    own.append(instance_id)
        elif state == "SCALE_IN":
            self._scale_in(payload["instance_ids"])
        elif state == "MAINTENANCE_COMPLETE":
            self._scale_out()
        self._reply(session_id, f"ACK_{state}", instance_actions)
        for instance_id in own:
            self._own_action(instance_id)

    def _reply(self, session_id: str, state: str, instance_actions: dict[str, str]) -> None:
        if self.history:
            self.sent.append((state, instance_actions))
        try:
            send = self.send if self.send is not None else self.engine.reply
            send(session_id, self.project_id, state, instance_actions)
        except Exception as exc:  # kept for the test to look at
            self.errors.append(exc)

    def _scale_in(self, instance_ids: list[str]) -> None:
        if self.cloud is None or self.scale_in <= 0:
            return
        for instance_id in sorted(instance_ids, reverse=True)[: self.scale_in]:
            host = self.cloud.host_of(instance_id)
            if host is None:
                continue
            vcpus = self.cloud.list_instances([host])
            size = next(i.vcpus for i in vcpus if i.instance_id == instance_id)
            self.cloud.remove_instance(instance_id)
            self.scaled_in.append({"instance_id": instance_id, "vcpus": size})

    def _scale_out(self) -> None:
        if self.cloud is None:
            return
        while self.scaled_in:
            spec = self.scaled_in.pop(0)
            target = self._roomiest(spec["vcpus"])
            if target is None:
                self.scaled_in.insert(0, spec)
                return
            self.cloud.add_instance(
                spec["instance_id"], self.project_id, target, vcpus=spec["vcpus"]
            )

    def _roomiest(self, vcpus: int) -> str | None:
        assert self.cloud is not None
        best = max(
            (
                (self.cloud.free_vcpus(h.name), h.name)
                for h in self.cloud.list_hosts()
                if h.type == "compute" and h.enabled
            ),
            default=None,
        )
        return best[1] if best is not None and best[0] >= vcpus else None

    def _own_action(self, instance_id: str) -> None:
        if self.cloud is None:
            return
        source = self.cloud.host_of(instance_id)
        candidates = [
            (self.cloud.free_vcpus(h.name), h.name)
            for h in self.cloud.list_hosts()
            if h.type == "compute" and h.enabled and h.name != source
        ]
        if candidates:
            self.cloud.relocate(instance_id, max(candidates)[1])
