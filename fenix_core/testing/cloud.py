"""A simulated cloud: hosts with vcpu capacity, instances, timed migrations,
fault injection, and a log of everything that happened.

It is a real :class:`~fenix_core.hookspecs.CloudDriver` (pass it to
``Engine(plugins=[cloud])``) and keeps its time with the engine's clock, so a
migration of ``live_migration_seconds`` takes exactly that much simulated time.
With ``state_path`` its whole state lives in a JSON file, rewritten atomically
after every change, so a new ``SimulatedCloud`` on the same file (another
process, after a crash) sees the same hosts, instances, migrations and events.
A cloud re-reads the file when another process wrote it since (several engine
workers sharing one simulated cloud, one at a time).

No call scans the fleet: the cloud keeps indexes next to its state (the
instances on each host, the vcpus used on and heading to each host, the end
times of running migrations in a heap, the move started with each key, and a
heap of the enabled computes by free vcpus for a move without a target). They
are derived, never saved: a cloud loaded from ``state_path`` rebuilds them.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import attrs

from ..budgets import check_labels
from ..clock import Clock, RealClock
from ..errors import CloudError, InvalidInput, TargetRefused
from ..model import Host, Instance, OperationStatus
from ..plugins.hookspecs import hookimpl
from ._state_file import file_version, write_json_atomically

__all__ = ["CloudEvent", "SimulatedCloud"]

#: Kinds of :class:`CloudEvent`.
EVENT_KINDS = (
    "host_added",
    "host_removed",
    "disable_host",
    "enable_host",
    "host_up_checked",
    "migration_started",
    "migration_done",
    "migration_failed",
    "instance_added",
    "instance_removed",
    "instance_relocated",
)


def _check_vcpus(vcpus: object) -> None:
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 0:
        raise InvalidInput("vcpus", f"must be a whole number >= 0, got {vcpus!r}")


@attrs.frozen
class CloudEvent:
    """Something that happened in the simulated cloud.

    ``host`` is where it happened: the source for migration_started and
    migration_failed, the destination for migration_done. ``detail`` is the
    other host of a migration, or the error.
    """

    time: datetime
    kind: str
    host: str | None
    instance_id: str | None = None
    detail: str | None = None


#: A :class:`CloudEvent`'s fields in order, as the cloud keeps it: a tuple of
#: a datetime, strings and None is left alone by the garbage collector (it
#: untracks such a tuple), an attrs instance is not; a long run records a few
#: events per migration, and each full collection walked all of them.
_EventRow: TypeAlias = tuple[datetime, str, str | None, str | None, str | None]


def _descending(name: str) -> tuple[int, ...]:
    """A key ordering host names backwards (``a > b`` exactly when
    ``_descending(a) < _descending(b)``): the negated code points, then 1,
    above them all, so a name comes after the longer names it begins. A
    tuple of ints, which the garbage collector stops tracking, where an
    object per heap entry was one more for every full collection to walk."""
    return (*(-ord(c) for c in name), 1)


class SimulatedCloud:
    """An in-memory (or file-backed) cloud for tests, examples and what-if runs."""

    name = "simulated"

    def __init__(
        self,
        migration_seconds: float = 30.0,
        live_migration_seconds: float = 20.0,
        state_path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        ready_seconds: float = 0.0,
    ) -> None:
        for field, value in (
            ("migration_seconds", migration_seconds),
            ("live_migration_seconds", live_migration_seconds),
            ("ready_seconds", ready_seconds),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInput(field, f"must be a number of seconds >= 0, got {value!r}")
        self.migration_seconds = float(migration_seconds)
        self.live_migration_seconds = float(live_migration_seconds)
        # An instance that arrived on a host is ACTIVE/Ready this long after.
        self.ready_seconds = float(ready_seconds)
        self._stalls: dict[str, float] = {}
        self.clock: Clock = clock or RealClock()
        # Setting up the cloud before an engine (or a clock) is given is not an
        # event of the run: events are recorded from then on, and the placement
        # at that moment is the baseline that replays start from.
        self._recording = False
        self._path = Path(state_path) if state_path is not None else None
        self._version: tuple[int, int] | None = None
        self._hosts: dict[str, dict[str, Any]] = {}
        self._instances: dict[str, dict[str, Any]] = {}
        self._migrations: dict[str, dict[str, Any]] = {}
        self._clear_indexes()
        self._failures: dict[str, list[str]] = {}
        # Capacity of hosts removed since, so that events can still be replayed.
        self._removed: dict[str, int] = {}
        self._events: list[_EventRow] = []
        # Placement and sizes when an engine attached: where replaying events starts.
        self._baseline: dict[str, str] = {}
        self._baseline_disabled: list[str] = []
        self._sizes: dict[str, int] = {}
        self._owners: dict[str, str] = {}
        if self._path is not None and self._path.exists():
            self._load()  # recording as the file says: only once an engine attached
        if clock is not None and not self._recording:
            self._start_recording()

    # ------------------------------------------------------------------ plug-in hook

    @hookimpl
    def fenix_cloud_driver(self, clock: Clock) -> SimulatedCloud:
        self.clock = clock
        if not self._recording:
            self._start_recording()
        return self

    def _start_recording(self) -> None:
        self._recording = True
        self._baseline = {i: str(d["host"]) for i, d in self._instances.items()}
        self._baseline_disabled = [n for n, h in self._hosts.items() if not h["enabled"]]
        self._save()

    # ------------------------------------------------------------------ building the cloud

    def add_host(
        self,
        name: str,
        type: str = "compute",
        vcpus: int = 8,
        *,
        enabled: bool = True,
        labels: Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        """Add a host (``type`` compute or controller) with ``vcpus`` capacity
        and topology ``labels`` (e.g. ``{"zone": "az1", "aggregate": ["a", "b"]}``)."""
        if type not in ("compute", "controller"):
            raise InvalidInput("type", f"must be compute or controller, got {type!r}")
        _check_vcpus(vcpus)
        checked = check_labels(labels, "labels")
        if name in self._hosts:
            raise InvalidInput("name", f"host {name!r} exists already")
        self._hosts[name] = {
            "type": type,
            "vcpus": int(vcpus),
            "enabled": enabled,
            "stays_down": False,
            "went_down": False,
            # JSON-friendly for the state file: lists, made tuples in list_hosts.
            "labels": {k: v if isinstance(v, str) else list(v) for k, v in checked.items()},
        }
        self._on_host[name], self._used[name], self._incoming[name] = set(), 0, 0
        self._offer(name)
        self._event("host_added", name, None, "enabled" if enabled else "disabled")
        self._save()

    def remove_host(self, name: str, *, evacuate_to: str | None = None) -> None:
        """Remove a host at once (hardware retired, or lost).

        Its instances are re-created on ``evacuate_to`` (``instance_relocated``
        events), or without it deleted with the host (``instance_removed``).
        Migrations from or to it fail with ``host <name> was removed``.
        """
        self._settle()
        if name not in self._hosts:
            raise InvalidInput("name", f"no host {name!r}")
        if evacuate_to is not None and (evacuate_to == name or evacuate_to not in self._hosts):
            raise InvalidInput("evacuate_to", f"no other host {evacuate_to!r}")
        # In the order they were started, as the migrations are kept.
        for handle in sorted(self._running.values(), key=_started):
            migration = self._migrations[handle]
            if name in (migration["source"], migration["target"]):
                self._stop(handle, "failed")
                migration["error"] = f"host {name} was removed"
                self._event(
                    "migration_failed",
                    migration["source"],
                    migration["instance_id"],
                    migration["error"],
                )
        for instance_id in sorted(self._on_host[name]):
            if evacuate_to is None:
                if instance_id in self._running:  # relocated here while moving
                    self._heading(self._running[instance_id], -1)
                self._unplace(instance_id)
                del self._instances[instance_id]
                self._event("instance_removed", name, instance_id)
            else:
                self._unplace(instance_id)
                self._place(instance_id, evacuate_to)
                self._event("instance_relocated", evacuate_to, instance_id, name)
        self._removed[name] = int(self._hosts.pop(name)["vcpus"])
        del self._on_host[name], self._used[name], self._incoming[name]
        self._event("host_removed", name)
        self._save()

    def add_instance(
        self,
        instance_id: str,
        project_id: str,
        host: str,
        vcpus: int = 1,
        *,
        name: str | None = None,
        live_migratable: bool = True,
    ) -> None:
        """Create an instance on ``host`` (no capacity check: set up what you want)."""
        self._settle()
        _check_vcpus(vcpus)
        if host not in self._hosts:
            raise InvalidInput("host", f"no host {host!r}")
        if instance_id in self._instances:
            raise InvalidInput("instance_id", f"instance {instance_id!r} exists already")
        self._sizes[instance_id] = int(vcpus)
        self._owners[instance_id] = project_id
        self._instances[instance_id] = {
            "project_id": project_id,
            "host": host,
            "vcpus": int(vcpus),
            "name": name or instance_id,
            "live_migratable": live_migratable,
        }
        self._place(instance_id, host)
        # A migration of a deleted instance of that id, still running, moves
        # (and counts against its target) the new one, as a real cloud would not
        # but this one always did.
        if instance_id in self._running:
            self._heading(self._running[instance_id], +1)
        self._event("instance_added", host, instance_id, project_id)
        self._save()

    def remove_instance(self, instance_id: str) -> None:
        """Delete an instance (what a manager does when it scales in)."""
        self._settle()
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InvalidInput("instance_id", f"no instance {instance_id!r}")
        if instance_id in self._running:
            self._heading(self._running[instance_id], -1)
        self._unplace(instance_id)
        del self._instances[instance_id]
        self._event("instance_removed", inst["host"], instance_id)
        self._save()

    def relocate(self, instance_id: str, host: str | None = None) -> str:
        """Move an instance at once, outside the engine (a manager's own action,
        e.g. re-creating it elsewhere). Without ``host``, the enabled compute
        with the most free vcpus is taken. Returns the new host."""
        self._settle()
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InvalidInput("instance_id", f"no instance {instance_id!r}")
        target = host or self._pick_target(inst["vcpus"], exclude=inst["host"])
        if target is None or target not in self._hosts:
            raise CloudError(f"no host can take {instance_id}", instance_id=instance_id)
        source = inst["host"]
        self._unplace(instance_id)
        self._place(instance_id, target)
        self._event("instance_relocated", target, instance_id, source)
        self._save()
        return target

    # ------------------------------------------------------------------ fault injection

    def fail_next_migration(self, instance_id: str, error: str = "no valid host") -> None:
        """The next migration of ``instance_id`` fails with ``error`` (call again
        to fail the one after too)."""
        self._failures.setdefault(instance_id, []).append(error)
        self._save()

    def stall_next_migration(self, instance_id: str, seconds: float) -> None:
        """The next migration of ``instance_id`` takes ``seconds`` (a stuck one)."""
        self._stalls[instance_id] = float(seconds)
        self._save()

    def host_stays_down(self, host: str) -> None:
        """Once taken into maintenance (disabled), ``host`` never comes back up."""
        if host not in self._hosts:
            raise InvalidInput("host", f"no host {host!r}")
        self._hosts[host]["stays_down"] = True
        self._save()

    # ------------------------------------------------------------------ inspection

    def host_of(self, instance_id: str) -> str | None:
        self._settle()
        inst = self._instances.get(instance_id)
        return None if inst is None else str(inst["host"])

    def instances_on(self, host: str) -> list[str]:
        self._settle()
        return sorted(self._on_host.get(host, ()))

    def is_enabled(self, host: str) -> bool:
        return bool(self._hosts[host]["enabled"])

    def free_vcpus(self, host: str) -> int:
        """Capacity minus the instances on the host and migrations heading to it."""
        self._settle()
        return self._free(host)

    @property
    def events(self) -> list[CloudEvent]:
        """Everything that happened since an engine attached, in time order."""
        self._settle()
        return [CloudEvent(*row) for row in self._events]

    @property
    def baseline(self) -> dict[str, str]:
        """Where each instance was when an engine attached (instance -> host)."""
        return dict(self._baseline)

    @property
    def baseline_disabled(self) -> list[str]:
        """Hosts that were disabled when an engine attached."""
        return list(self._baseline_disabled)

    def host_capacity(self, host: str) -> int:
        """vcpus of a host, also of one that was removed since."""
        if host in self._hosts:
            return int(self._hosts[host]["vcpus"])
        return self._removed[host]

    def size_of(self, instance_id: str) -> int:
        """vcpus of an instance, also of one that was deleted since."""
        return self._sizes[instance_id]

    def project_of(self, instance_id: str) -> str:
        """The project of an instance, also of one that was deleted since."""
        return self._owners[instance_id]

    # ------------------------------------------------------------------ CloudDriver

    def list_hosts(self) -> list[Host]:
        self._refresh()
        return [
            Host(
                name=n,
                type=h["type"],
                vcpus=h["vcpus"],
                enabled=h["enabled"],
                labels=check_labels(h.get("labels"), f"{n}.labels"),
            )
            for n, h in self._hosts.items()
        ]

    def list_instances(self, hosts: Sequence[str] | None = None) -> list[Instance]:
        self._settle()
        if hosts is None:
            ids = sorted(self._instances)
        else:
            ids = sorted(i for h in set(hosts) for i in self._on_host.get(h, ()))
        return [
            Instance(
                instance_id=iid,
                project_id=data["project_id"],
                host=data["host"],
                vcpus=data["vcpus"],
                name=data["name"],
                live_migratable=data["live_migratable"],
            )
            for iid, data in ((i, self._instances[i]) for i in ids)
        ]

    def locate(self, instance_id: str) -> str | None:
        return self.host_of(instance_id)

    def instance_owner(self, instance_id: str) -> str | None:
        """The project of an existing instance (None: no such instance)."""
        self._settle()
        data = self._instances.get(instance_id)
        return None if data is None else str(data["project_id"])

    def instance_is_ready(self, instance_id: str) -> bool:
        """ACTIVE again: ``ready_seconds`` after its last migration ended."""
        self._settle()
        inst = self._instances.get(instance_id)
        if inst is None:
            return False
        ready_at = inst.get("ready_at")
        return ready_at is None or datetime.fromisoformat(ready_at) <= self.clock.now()

    def allowed_actions(self) -> list[str]:
        return ["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]

    def disable_host(self, host: str, reason: str) -> None:
        self._settle()
        self._require_host(host)["enabled"] = False
        self._offer(host)
        if self._hosts[host]["stays_down"]:
            self._hosts[host]["went_down"] = True
        self._hosts[host]["up_checked"] = False
        self._event("disable_host", host, None, reason)
        self._save()

    def enable_host(self, host: str) -> None:
        self._settle()
        self._require_host(host)["enabled"] = True
        self._offer(host)
        self._event("enable_host", host)
        self._save()

    def host_is_up(self, host: str) -> bool:
        data = self._require_host(host)
        if data.get("up_checked") is False:
            # The engine asks once the host's maintenance actions are done: the
            # first ask after a disable marks the end of its maintenance.
            data["up_checked"] = True
            self._settle()
            self._event("host_up_checked", host)
            self._save()
        return not data["went_down"]

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        now = self._settle()
        known = self._by_key.get(key)  # (the state file was read by the settle)
        if known is not None:
            return known  # the same attempt asked again: idempotent
        inst = self._instances.get(instance_id)
        if inst is None:
            raise CloudError(f"instance {instance_id} not found", instance_id=instance_id)
        if action not in ("MIGRATE", "LIVE_MIGRATE"):
            raise CloudError(f"action {action} is not supported", instance_id=instance_id)
        if action == "LIVE_MIGRATE" and not inst["live_migratable"]:
            raise CloudError(
                f"instance {instance_id} cannot be live-migrated", instance_id=instance_id
            )
        if instance_id in self._running:
            raise CloudError(
                f"instance {instance_id} is already being migrated", instance_id=instance_id
            )
        source = inst["host"]
        # Like Nova's scheduler (HTTP 400 "No valid host was found", also for
        # a requested host from 2.30): no host found, a disabled target or one
        # without room is a refusal of the target (TargetRefused), not a fault.
        if target is None:
            target = self._pick_target(inst["vcpus"], exclude=source)
            if target is None:
                raise TargetRefused(f"no valid host for {instance_id}", instance_id=instance_id)
        if target == source or target not in self._hosts:
            raise CloudError(f"no valid host for {instance_id}", instance_id=instance_id)
        if not self._hosts[target]["enabled"]:
            raise TargetRefused(
                f"no valid host: {target} is disabled", instance_id=instance_id, host=target
            )
        vcpus = inst["vcpus"]
        free = self._free(target)  # settled above
        if free < vcpus:
            raise TargetRefused(
                f"no valid host: {target} has {free} vcpus free, {instance_id} needs {vcpus}",
                instance_id=instance_id,
                host=target,
            )
        seconds = self._stalls.pop(instance_id, None) or (
            self.live_migration_seconds if action == "LIVE_MIGRATE" else self.migration_seconds
        )
        failures = self._failures.get(instance_id)
        handle = f"migration-{len(self._migrations) + 1}"
        end = self._end_at[handle] = now + timedelta(seconds=seconds)
        self._migrations[handle] = {
            "key": key,
            "instance_id": instance_id,
            "action": action,
            "source": source,
            "target": target,
            "end": end.isoformat(),
            "state": "running",
            "error": failures.pop(0) if failures else None,
        }
        # Indexed as _begin does, with what is at hand (the instance exists).
        self._by_key.setdefault(key, handle)
        self._running[instance_id] = handle
        heapq.heappush(self._ends, (end, handle))
        self._heading(handle, +1)
        self._events.append((now, "migration_started", source, instance_id, target))
        if self._path is not None:
            self._save()
        return handle

    def find_move(self, key: str) -> str | None:
        """The handle of the move started with idempotency ``key``, if any
        (:class:`~fenix_core.hookspecs.MoveLookup`; kept in ``state_path``)."""
        return self._move_by_key(key)

    def _move_by_key(self, key: str) -> str | None:
        self._refresh()
        return self._by_key.get(key)

    def poll_move(self, handle: str) -> OperationStatus:
        now = self._settle()
        migration = self._migrations.get(handle)
        if migration is None:
            return OperationStatus.failed(f"unknown migration {handle}")
        state = migration["state"]
        if state == "running":
            return _running(migration, self._end_at.get(handle) or self._end_of(handle), now)
        if state == "done":
            return OperationStatus("done", host=migration["target"])
        if state == "gone":
            return OperationStatus("done", gone=True)
        return OperationStatus.failed(str(migration["error"]))

    # ------------------------------------------------------------------ internals

    def _require_host(self, host: str) -> dict[str, Any]:
        self._refresh()
        if host not in self._hosts:
            raise CloudError(f"host {host} not found", host=host)
        return self._hosts[host]

    def _pick_target(self, vcpus: int, *, exclude: str) -> str | None:
        """The enabled compute other than ``exclude`` with the most free vcpus
        (the greatest name among equals), if it has ``vcpus`` free."""
        self._offer_changed()
        result = None
        set_aside = []
        heap = self._by_free
        while heap:
            negative_free, _, name = heap[0]
            if not self._offered(name, -negative_free):
                heapq.heappop(heap)  # an outdated entry
            elif name == exclude:
                set_aside.append(heapq.heappop(heap))
            else:
                result = name if -negative_free >= vcpus else None
                break
        for entry in set_aside:
            heapq.heappush(heap, entry)
        return result

    # ------------------------------------------------------------------ indexes

    def _clear_indexes(self) -> None:
        self._on_host: dict[str, set[str]] = {}
        self._used: dict[str, int] = {}
        self._incoming: dict[str, int] = {}
        self._running: dict[str, str] = {}  # instance id -> its running migration
        self._ends: list[tuple[datetime, str]] = []  # heap of (end, handle), running
        self._by_key: dict[str, str] = {}
        self._end_at: dict[str, datetime] = {}  # handle -> its migration's end, parsed
        # Heap of (-free vcpus, _descending(name), name) of enabled computes:
        # the most free first, then the greatest name; entries go out of date
        # when a host's free vcpus change and are dropped when they reach the top.
        self._by_free: list[tuple[int, tuple[int, ...], str]] = []
        self._descending: dict[str, tuple[int, ...]] = {}
        # Hosts whose figure may have changed since the heap was last offered
        # them: offered when a target is next picked (most runs name their
        # targets and pick none, and a migration changes figures four times).
        self._to_offer: set[str] = set()

    def _rebuild_indexes(self) -> None:
        self._clear_indexes()
        for name in self._hosts:
            self._on_host[name], self._used[name], self._incoming[name] = set(), 0, 0
        for instance_id, inst in self._instances.items():
            self._place(instance_id, inst["host"])
        for handle, migration in self._migrations.items():
            self._by_key.setdefault(migration["key"], handle)
            if migration["state"] == "running":
                self._begin(handle)
        for name in self._hosts:
            self._offer(name)

    def _place(self, instance_id: str, host: str) -> None:
        self._instances[instance_id]["host"] = host
        self._on_host[host].add(instance_id)
        self._used[host] += self._instances[instance_id]["vcpus"]
        self._to_offer.add(host)  # (_offer written out: a few times per migration)

    def _unplace(self, instance_id: str) -> None:
        host = self._instances[instance_id]["host"]
        self._on_host[host].discard(instance_id)
        self._used[host] -= self._instances[instance_id]["vcpus"]
        self._to_offer.add(host)

    def _begin(self, handle: str) -> None:
        """Index a running migration."""
        migration = self._migrations[handle]
        self._by_key.setdefault(migration["key"], handle)
        self._running[migration["instance_id"]] = handle
        heapq.heappush(self._ends, (self._end_of(handle), handle))
        if migration["instance_id"] in self._instances:
            self._heading(handle, +1)

    def _end_of(self, handle: str) -> datetime:
        """When a migration ends (its record keeps the ISO text for the
        state file): parsed once, not at each poll."""
        end = self._end_at.get(handle)
        if end is None:
            end = self._end_at[handle] = datetime.fromisoformat(self._migrations[handle]["end"])
        return end

    def _stop(self, handle: str, state: str) -> None:
        """A running migration ends in ``state`` (its heap entry is skipped later)."""
        migration = self._migrations[handle]
        if migration["instance_id"] in self._instances:
            self._heading(handle, -1)
        del self._running[migration["instance_id"]]
        self._end_at.pop(handle, None)
        migration["state"] = state

    def _heading(self, handle: str, sign: int) -> None:
        """Count (+1) or stop counting (-1) a running migration's instance
        against the free vcpus of its target."""
        migration = self._migrations[handle]
        target = migration["target"]
        self._incoming[target] += sign * self._instances[migration["instance_id"]]["vcpus"]
        self._to_offer.add(target)

    def _free(self, host: str) -> int:
        return int(self._hosts[host]["vcpus"]) - self._used[host] - self._incoming[host]

    def _offered(self, name: str, free: int) -> bool:
        host = self._hosts.get(name)
        return (
            host is not None
            and host["enabled"]
            and host["type"] == "compute"
            and self._free(name) == free
        )

    def _offer(self, name: str) -> None:
        """A host's free vcpus (or its being enabled) may have changed: its
        current figure goes on the heap of targets before the next pick."""
        self._to_offer.add(name)

    def _offer_changed(self) -> None:
        """Put the current free vcpus of the hosts offered since the last
        pick on the heap of targets (each enabled compute then has an entry
        with its current figure, as if each change had put one there)."""
        names, self._to_offer = self._to_offer, set()
        if not names:
            return
        if len(self._by_free) + len(names) > 2 * len(self._hosts) + 64:
            # Mostly outdated entries: start again from the current figures.
            self._by_free = [
                (-self._free(n), self._backwards(n), n)
                for n, h in self._hosts.items()
                if h["enabled"] and h["type"] == "compute"
            ]
            heapq.heapify(self._by_free)
            return
        for name in names:
            host = self._hosts.get(name)
            if host is not None and host["enabled"] and host["type"] == "compute":
                heapq.heappush(self._by_free, (-self._free(name), self._backwards(name), name))

    def _backwards(self, name: str) -> tuple[int, ...]:
        key = self._descending.get(name)
        if key is None:
            key = self._descending[name] = _descending(name)
        return key

    def _event(
        self, kind: str, host: str | None, instance_id: str | None = None, detail: str | None = None
    ) -> None:
        if not self._recording and kind in (
            "host_added",
            "host_removed",
            "instance_added",
            "instance_removed",
        ):
            return
        self._events.append((self.clock.now(), kind, host, instance_id, detail))

    def _refresh(self) -> None:
        """Re-read the state file if another process wrote it since."""
        if self._path is not None and file_version(self._path) != self._version:
            self._load()

    def _settle(self) -> datetime:
        """Finish every migration whose time has come, in time order; return
        the time it settled at (now)."""
        if self._path is not None:
            self._refresh()
        now = self.clock.now()
        if not self._ends or self._ends[0][0] > now:
            return now  # (most calls: nothing due)
        changed = False
        while self._ends and self._ends[0][0] <= now:
            end, handle = heapq.heappop(self._ends)
            migration = self._migrations[handle]
            if migration["state"] != "running":
                continue  # failed when its host was removed
            inst = self._instances.get(migration["instance_id"])
            changed = True
            if inst is None:
                self._stop(handle, "gone")
            elif migration["error"]:
                self._stop(handle, "failed")
                self._events.append(
                    (
                        end,
                        "migration_failed",
                        migration["source"],
                        migration["instance_id"],
                        migration["error"],
                    )
                )
            else:
                self._stop(handle, "done")
                self._unplace(migration["instance_id"])
                self._place(migration["instance_id"], migration["target"])
                inst["ready_at"] = (end + timedelta(seconds=self.ready_seconds)).isoformat()
                self._events.append(
                    (
                        end,
                        "migration_done",
                        migration["target"],
                        migration["instance_id"],
                        migration["source"],
                    )
                )
        if changed and self._path is not None:  # (_save keeps nothing without a file)
            self._save()
        return now

    def _save(self) -> None:
        if self._path is None:
            return
        state = {
            "migration_seconds": self.migration_seconds,
            "live_migration_seconds": self.live_migration_seconds,
            "ready_seconds": self.ready_seconds,
            "stalls": self._stalls,
            "hosts": self._hosts,
            "instances": self._instances,
            "migrations": self._migrations,
            "failures": self._failures,
            "recording": self._recording,
            "baseline": self._baseline,
            "baseline_disabled": self._baseline_disabled,
            "sizes": self._sizes,
            "owners": self._owners,
            "removed_hosts": self._removed,
            "events": [
                {**attrs.asdict(CloudEvent(*row)), "time": row[0].isoformat()}
                for row in self._events
            ],
        }
        write_json_atomically(self._path, state)
        self._version = file_version(self._path)

    def _load(self) -> None:
        assert self._path is not None
        self._version = file_version(self._path)
        state = json.loads(self._path.read_text())
        # The file is the cloud: its migration times win over the constructor's.
        self.migration_seconds = float(state["migration_seconds"])
        self.live_migration_seconds = float(state["live_migration_seconds"])
        self.ready_seconds = float(state.get("ready_seconds", 0.0))
        self._stalls = dict(state.get("stalls", {}))
        self._hosts = state["hosts"]
        self._instances = state["instances"]
        self._migrations = state["migrations"]
        self._failures = state["failures"]
        self._baseline = state["baseline"]
        self._baseline_disabled = state["baseline_disabled"]
        # Files written before "recording" was kept: recording if anything was.
        self._recording = bool(
            state.get("recording", state["events"] or self._baseline or self._baseline_disabled)
        )
        self._sizes = state["sizes"]
        self._owners = state.get("owners", {})
        self._removed = state.get("removed_hosts", {})
        self._events = [
            (
                datetime.fromisoformat(e["time"]),
                e["kind"],
                e["host"],
                e.get("instance_id"),
                e.get("detail"),
            )
            for e in state["events"]
        ]
        self._rebuild_indexes()


def _started(handle: str) -> int:
    """The order of a migration's start: its handle is ``migration-<n>``."""
    return int(handle.rsplit("-", 1)[1])


def _running(migration: dict[str, Any], end: datetime, now: datetime) -> OperationStatus:
    """A running migration's status: asked again when it ends."""
    return OperationStatus(
        "running",
        detail=f"{migration['action']} {migration['source']} -> {migration['target']} running",
        retry_after=max(0.0, (end - now).total_seconds()),
    )
