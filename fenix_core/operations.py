"""Starting and polling operations on the cloud driver and the action plug-ins.

An operation row says what to do (``kind`` + ``params``); this module is the
only place that turns it into driver or action calls. Whatever the plug-in
does, the answer comes back as an :class:`~fenix_core.model.OperationStatus`:
exceptions become ``failed`` with the error as the detail, so a misbehaving
plug-in fails one operation, never the engine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeGuard

import attrs

from .constraints import CloudConstraints
from .errors import PluginError, TargetRefused
from .inventory import host_to_dict
from .model import ActionSpec, Instance, OperationStatus, SessionRequest
from .plugins import Plugins
from .plugins.hookspecs import (
    ActionContext,
    ConstraintSource,
    GateContext,
    GateResult,
    HostQueue,
    HostQueueChanges,
    MoveLookup,
)
from .store.schema import OperationRow

__all__ = ["OperationRunner", "poll_interval", "record_status"]

log = logging.getLogger(__name__)

#: Seconds between polls when the plug-in gives no hint: grows with each poll.
_MIN_POLL, _MAX_POLL, _GROWTH = 5.0, 60.0, 1.5
#: The longest wait a plug-in's ``retry_after`` may ask for (a day).
_MAX_HINT = 86400.0
#: Action specs kept checked (a session has a few; the cache starts again past this).
_KEPT_SPECS = 256
#: Polls after which the interval has reached _MAX_POLL (5 * 1.5 ** 7 > 60).
_POLLS_TO_CAP = math.ceil(math.log(_MAX_POLL / _MIN_POLL, _GROWTH))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, PluginError) else f"{type(exc).__name__}: {text}"


def poll_interval(polls: int) -> float:
    """Seconds before the next poll of an operation polled ``polls`` times
    (the first poll is number 1): 5 s, growing by half each poll, up to 60 s.
    The exponent is capped, so an operation followed for weeks never
    overflows."""
    return min(_MAX_POLL, _MIN_POLL * _GROWTH ** min(max(0, polls - 1), _POLLS_TO_CAP))


def record_status(op: OperationRow, status: OperationStatus, now: datetime) -> None:
    """Write a status into the operation row."""
    op.polls += 1
    if status.state == "running":
        op.status = "running"
        hint = status.retry_after
        # A plug-in's hint is bounded too: a huge or non-finite one must not
        # overflow the next poll's time (nor put the operation to sleep for good).
        if hint is None or not math.isfinite(hint):
            wait = poll_interval(op.polls)
        else:
            wait = min(max(0.0, hint), _MAX_HINT)
        op.next_poll = now + timedelta(seconds=wait)
        if status.detail:
            op.detail = status.detail
        return
    op.status = status.state
    op.detail = status.detail or None
    op.next_poll = None
    op.finished_at = now
    op.result = {**dict(status.result), "host": status.host, "gone": status.gone}


class OperationRunner:
    """Maps operation kinds to driver / action calls."""

    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins
        self._specs: dict[str, ActionSpec] = {}  # repr of a stored action -> its spec
        # The driver last asked whether it is a ConstraintSource, and the answer.
        self._constraints_of: tuple[object, bool] | None = None
        self._start: dict[str, Callable[[OperationRow, SessionRequest, datetime], OperationStatus]]
        self._start = {
            "disable_host": self._disable_host,
            "enable_host": self._enable_host,
            "host_up": self._host_up,
            "inventory": self._inventory,
            "list_hosts": self._list_hosts,
            "locate": self._locate,
            "move": self._start_move,
            "watch": self._watch,
            "action": self._start_action,
            "gate": self._gate,
            "queue_hosts": self._queue_hosts,
        }
        self._poll: dict[str, Callable[[OperationRow, SessionRequest, datetime], OperationStatus]]
        self._poll = {
            "host_up": self._host_up,
            "list_hosts": self._list_hosts,
            "move": self._poll_move,
            "watch": self._watch,
            "action": self._poll_action,
            "gate": self._gate,
        }

    @property
    def kinds(self) -> frozenset[str]:
        """The operation kinds this runner starts (``operations.kind``)."""
        return frozenset(self._start)

    def start(
        self, op: OperationRow, request: SessionRequest, now: datetime, *, in_doubt: bool = False
    ) -> OperationStatus:
        """Start an operation. ``in_doubt``: it may have been started before
        (a crash between the call and recording its answer): a move is then
        looked up by its key (:class:`~fenix_core.hookspecs.MoveLookup`) and
        followed if found; everything else is asked again with the same key,
        which actions use to not repeat their effect."""
        op.started_at = op.started_at or now
        if in_doubt and op.kind == "move":
            status = self._call({"move": self._resume_move}, op, request, now)
        else:
            status = self._call(self._start, op, request, now)
        return self._with_hosts(op, status) if status.state == "failed" else status

    def poll(self, op: OperationRow, request: SessionRequest, now: datetime) -> OperationStatus:
        if op.deadline is not None and now >= op.deadline:
            started = op.started_at or op.created_at
            waited = int((now - started).total_seconds())
            status = OperationStatus.failed(
                f"timed out after {waited} s" + (f" ({op.detail})" if op.detail else "")
            )
        else:
            status = self._call(self._poll, op, request, now)
        return self._with_hosts(op, status) if status.state == "failed" else status

    def _with_hosts(self, op: OperationRow, status: OperationStatus) -> OperationStatus:
        """A move or host operation that failed (or timed out) may have lost
        its host: attach the host listing, so that the workflow learns at once
        if the cloud removed it (a removal, not a failure)."""
        if op.kind not in ("move", "watch") and op.host is None:
            return status
        if "hosts" in status.result:
            return status
        try:
            hosts = [host_to_dict(h) for h in self.plugins.require_driver().list_hosts()]
        except Exception as exc:
            log.warning("listing hosts after failed %s %s: %s", op.kind, op.key, exc)
            return status
        return attrs.evolve(status, result={**dict(status.result), "hosts": hosts})

    def _call(
        self,
        table: dict[str, Callable[[OperationRow, SessionRequest, datetime], OperationStatus]],
        op: OperationRow,
        request: SessionRequest,
        now: datetime,
    ) -> OperationStatus:
        handler = table.get(op.kind)
        if handler is None:
            return OperationStatus.failed(f"unknown operation kind {op.kind!r}")
        try:
            status: object = handler(op, request, now)
        except TargetRefused as exc:
            log.info("operation %s (%s): %s", op.key, op.kind, exc)
            return OperationStatus("failed", detail=_describe(exc), result={"refused": True})
        except Exception as exc:
            log.warning("operation %s (%s) raised: %s", op.key, op.kind, exc, exc_info=True)
            return OperationStatus.failed(_describe(exc))
        if not isinstance(status, OperationStatus):
            return OperationStatus.failed(
                f"plug-in returned {type(status).__name__}, not an OperationStatus"
            )
        return status

    # ------------------------------------------------------------------ cloud

    def _disable_host(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        assert op.host is not None
        self.plugins.require_driver().disable_host(op.host, str(op.params.get("reason", "")))
        return OperationStatus.done(op.host)

    def _enable_host(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        assert op.host is not None
        self.plugins.require_driver().enable_host(op.host)
        return OperationStatus.done(op.host)

    def _queue_hosts(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        """``hosts``: the whole set still queued; ``host`` and ``queued``: one
        host's change (for a driver with ``HostQueueChanges``)."""
        driver = self.plugins.require_driver()
        host = op.params.get("host")
        if host is not None and isinstance(driver, HostQueueChanges):
            driver.host_queued(op.session_id, str(host), bool(op.params.get("queued")))
        elif isinstance(driver, HostQueue) and "hosts" in op.params:
            driver.mark_queued(op.session_id, [str(h) for h in op.params["hosts"]])
        return OperationStatus.done()

    def _host_up(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        assert op.host is not None
        if self.plugins.require_driver().host_is_up(op.host):
            return OperationStatus.done(op.host)
        return OperationStatus.running(detail=f"host {op.host} is not up yet")

    def _inventory(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        hosts = op.params.get("hosts")
        driver = self.plugins.require_driver()
        found = list(driver.list_instances(hosts))
        result: dict[str, Any] = {"instances": [_instance_dict(i) for i in found]}
        if self._constraint_source(driver):
            # New instances (scale-out, replacement pods) get their cloud groups.
            result["cloud_constraints"] = cloud_constraints_dict(driver.cloud_constraints(found))
        # Sessions list the hosts with ListHosts and leave them out of an
        # inventory (``list_hosts`` False): a fleet-sized result per
        # inventoried host. True is what operations stored by earlier
        # releases ask for.
        if op.params.get("list_hosts", True):
            result["hosts"] = [host_to_dict(h) for h in driver.list_hosts()]
        return OperationStatus.done(**result)

    def _constraint_source(self, driver: object) -> TypeGuard[ConstraintSource]:
        """``isinstance(driver, ConstraintSource)``, worked out once per
        driver object (a driver's capabilities are those of its class and
        attributes when registered): a runtime protocol check looks each
        member up by name, ~7 us in Python 3.11, and every listing asked."""
        known = self._constraints_of
        if known is None or known[0] is not driver:
            known = self._constraints_of = (driver, isinstance(driver, ConstraintSource))
        return known[1]

    def _list_hosts(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        """The cloud's hosts; keeps polling while a host of ``wait_for`` is missing."""
        hosts = [host_to_dict(h) for h in self.plugins.require_driver().list_hosts()]
        missing = sorted(set(op.params.get("wait_for", ())) - {h["name"] for h in hosts})
        if missing:
            return OperationStatus.running(
                retry_after=30.0, detail="waiting for " + ", ".join(missing) + " to appear"
            )
        return OperationStatus.done(hosts=hosts)

    def _locate(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        """Where each of ``instance_ids`` is now (None: it no longer exists)."""
        driver = self.plugins.require_driver()
        return OperationStatus.done(
            where={str(i): driver.locate(str(i)) for i in op.params.get("instance_ids", ())}
        )

    def _start_move(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        assert op.instance_id is not None
        driver = self.plugins.require_driver()
        op.handle = driver.start_move(
            op.instance_id, str(op.params["action"]), op.params.get("target"), op.key
        )
        return driver.poll_move(op.handle)

    def _resume_move(self, op: OperationRow, r: SessionRequest, n: datetime) -> OperationStatus:
        driver = self.plugins.require_driver()
        # A driver may also say "not supported" with find_move = None.
        if isinstance(driver, MoveLookup) and callable(driver.find_move):
            handle = driver.find_move(op.key)
            if handle is not None:
                log.info("operation %s: move found by its key, following it", op.key)
                op.handle = str(handle)
                return driver.poll_move(op.handle)
        return self._start_move(op, r, n)

    def _poll_move(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        assert op.handle is not None
        return self.plugins.require_driver().poll_move(op.handle)

    def _watch(self, op: OperationRow, _r: SessionRequest, _n: datetime) -> OperationStatus:
        """OWN_ACTION: the manager moves the instance; done once it left its host."""
        assert op.instance_id is not None
        where = self.plugins.require_driver().locate(op.instance_id)
        if where is None:
            return OperationStatus("done", gone=True)
        if where != op.params.get("source"):
            return OperationStatus.done(where)
        return OperationStatus.running(
            detail=f"waiting for the manager to move {op.instance_id} off {where}"
        )

    # ------------------------------------------------------------------ gates

    def _gate(self, op: OperationRow, _r: SessionRequest, now: datetime) -> OperationStatus:
        """Ask a health gate: ok -> done, wait -> running (polled again after
        its retry_after), stop -> failed with ``result["verdict"] == "stop"``."""
        name = str(op.params["gate"])
        gate = self.plugins.gates.get(name)
        if gate is None:
            raise PluginError(name, "no gate plug-in with this name is registered")
        context = GateContext(
            session_id=op.session_id,
            gate=name,
            params=dict(op.params.get("params", {})),
            host=str(op.params["host"]),
            last_host=op.params.get("last_host"),
            moved_instances=tuple(op.params.get("moved_instances", ())),
            now=now,
            first_checked=op.started_at or op.created_at,
            memo=dict(op.params.get("memo", {})),
            driver=self.plugins.driver,
        )
        try:
            answer: object = gate.check(context)
        except Exception as exc:
            log.warning("gate %s raised: %s", name, exc, exc_info=True)
            return OperationStatus.running(detail=f"gate {name}: {_describe(exc)}")
        op.params = {**op.params, "memo": context.memo}
        if not isinstance(answer, GateResult):
            return OperationStatus.running(
                detail=f"gate {name} returned {type(answer).__name__}, not a GateResult"
            )
        if answer.verdict == "ok":
            return OperationStatus.done(detail=answer.message)
        if answer.verdict == "stop":
            return OperationStatus("failed", detail=answer.message, result={"verdict": "stop"})
        return OperationStatus.running(answer.retry_after, detail=answer.message or "not yet")

    # ------------------------------------------------------------------ actions

    def _context(self, op: OperationRow, request: SessionRequest, now: datetime) -> ActionContext:
        return ActionContext(
            session_id=op.session_id,
            key=op.key,
            spec=self._spec(op.params["action"]),
            host=op.host,
            host_type=op.params.get("host_type"),
            now=now,
            session_metadata=request.metadata,
            download=request.download,
        )

    def _spec(self, data: Any) -> ActionSpec:
        """``ActionSpec.from_dict(data)``, its schema check (pydantic, ~5 us)
        made once per content, where an action is asked at its start and at
        each poll; a new spec each time, with its own metadata dict, as an
        action may change the one it is given."""
        key = repr(data)  # (stored JSON: equal reprs, equal contents)
        spec = self._specs.get(key)
        if spec is None:
            spec = ActionSpec.from_dict(data)
            if len(self._specs) >= _KEPT_SPECS:
                self._specs.clear()
            self._specs[key] = spec
        return ActionSpec(spec.plugin, spec.type, spec.order, spec.metadata)

    def _action(self, op: OperationRow) -> Any:
        name = str(op.params["action"]["plugin"])
        action = self.plugins.actions.get(name)
        if action is None:
            raise PluginError(name, "no action plug-in with this name is registered")
        return action

    def _start_action(
        self, op: OperationRow, request: SessionRequest, now: datetime
    ) -> OperationStatus:
        status: OperationStatus = self._action(op).start(self._context(op, request, now))
        return status

    def _poll_action(
        self, op: OperationRow, request: SessionRequest, now: datetime
    ) -> OperationStatus:
        status: OperationStatus = self._action(op).poll(self._context(op, request, now))
        return status


def cloud_constraints_dict(found: CloudConstraints) -> dict[str, Any]:
    """A driver's constraints as stored in the session (JSON)."""
    return {
        "groups": [g.to_dict() for g in found.groups],
        "members": {str(k): str(v) for k, v in found.members.items()},
        "placement": [r.to_dict() for r in found.placement],
    }


def _instance_dict(instance: Any) -> dict[str, Any]:
    if type(instance) is Instance:
        # attrs.asdict's generic walk, written out for the plain fields (an
        # inventory of a host lists each of its instances: ~6 us apiece).
        return {
            "instance_id": instance.instance_id,
            "project_id": instance.project_id,
            "host": instance.host,
            "vcpus": instance.vcpus,
            "name": instance.name,
            "live_migratable": instance.live_migratable,
        }
    data = attrs.asdict(instance)  # a driver's subclass: its own fields too
    data.pop("details", None)
    return data
