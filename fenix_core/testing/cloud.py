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
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from ..clock import Clock, RealClock
from ..errors import CloudError, InvalidInput
from ..hookspecs import hookimpl
from ..model import Host, Instance, OperationStatus
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


_NOTHING_RUNNING = datetime.max.replace(tzinfo=UTC)


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
        # The earliest end of a running migration (None: not known, scan).
        self._next_end: datetime | None = None
        self._failures: dict[str, list[str]] = {}
        # Capacity of hosts removed since, so that events can still be replayed.
        self._removed: dict[str, int] = {}
        self._events: list[CloudEvent] = []
        # Placement and sizes when an engine attached: where replaying events starts.
        self._baseline: dict[str, str] = {}
        self._baseline_disabled: list[str] = []
        self._sizes: dict[str, int] = {}
        self._owners: dict[str, str] = {}
        if self._path is not None and self._path.exists():
            self._load()
            self._recording = True
        elif clock is not None:
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
        self, name: str, type: str = "compute", vcpus: int = 8, *, enabled: bool = True
    ) -> None:
        """Add a host (``type`` compute or controller) with ``vcpus`` capacity."""
        if type not in ("compute", "controller"):
            raise InvalidInput("type", f"must be compute or controller, got {type!r}")
        _check_vcpus(vcpus)
        if name in self._hosts:
            raise InvalidInput("name", f"host {name!r} exists already")
        self._hosts[name] = {
            "type": type,
            "vcpus": int(vcpus),
            "enabled": enabled,
            "stays_down": False,
            "went_down": False,
        }
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
        for migration in self._migrations.values():
            if migration["state"] == "running" and name in (
                migration["source"],
                migration["target"],
            ):
                migration["state"] = "failed"
                migration["error"] = f"host {name} was removed"
                self._event(
                    "migration_failed",
                    migration["source"],
                    migration["instance_id"],
                    migration["error"],
                )
        for instance_id in sorted(self._instances):
            if self._instances[instance_id]["host"] != name:
                continue
            if evacuate_to is None:
                del self._instances[instance_id]
                self._event("instance_removed", name, instance_id)
            else:
                self._instances[instance_id]["host"] = evacuate_to
                self._event("instance_relocated", evacuate_to, instance_id, name)
        self._removed[name] = int(self._hosts.pop(name)["vcpus"])
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
        self._event("instance_added", host, instance_id, project_id)
        self._save()

    def remove_instance(self, instance_id: str) -> None:
        """Delete an instance (what a manager does when it scales in)."""
        self._settle()
        inst = self._instances.pop(instance_id, None)
        if inst is None:
            raise InvalidInput("instance_id", f"no instance {instance_id!r}")
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
        inst["host"] = target
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
        return sorted(i for i, data in self._instances.items() if data["host"] == host)

    def is_enabled(self, host: str) -> bool:
        return bool(self._hosts[host]["enabled"])

    def free_vcpus(self, host: str) -> int:
        """Capacity minus the instances on the host and migrations heading to it."""
        self._settle()
        used = sum(i["vcpus"] for i in self._instances.values() if i["host"] == host)
        incoming = sum(
            self._instances[m["instance_id"]]["vcpus"]
            for m in self._migrations.values()
            if m["state"] == "running"
            and m["target"] == host
            and m["instance_id"] in self._instances
        )
        return int(self._hosts[host]["vcpus"]) - int(used) - int(incoming)

    @property
    def events(self) -> list[CloudEvent]:
        """Everything that happened since an engine attached, in time order."""
        self._settle()
        return list(self._events)

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
            Host(name=n, type=h["type"], vcpus=h["vcpus"], enabled=h["enabled"])
            for n, h in self._hosts.items()
        ]

    def list_instances(self, hosts: Sequence[str] | None = None) -> list[Instance]:
        self._settle()
        wanted = None if hosts is None else set(hosts)
        return [
            Instance(
                instance_id=iid,
                project_id=data["project_id"],
                host=data["host"],
                vcpus=data["vcpus"],
                name=data["name"],
                live_migratable=data["live_migratable"],
            )
            for iid, data in sorted(self._instances.items())
            if wanted is None or data["host"] in wanted
        ]

    def locate(self, instance_id: str) -> str | None:
        return self.host_of(instance_id)

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
        if self._hosts[host]["stays_down"]:
            self._hosts[host]["went_down"] = True
        self._hosts[host]["up_checked"] = False
        self._event("disable_host", host, None, reason)
        self._save()

    def enable_host(self, host: str) -> None:
        self._settle()
        self._require_host(host)["enabled"] = True
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
        self._settle()
        known = self._move_by_key(key)
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
        if any(
            m["instance_id"] == instance_id and m["state"] == "running"
            for m in self._migrations.values()
        ):
            raise CloudError(
                f"instance {instance_id} is already being migrated", instance_id=instance_id
            )
        source = inst["host"]
        if target is None:
            target = self._pick_target(inst["vcpus"], exclude=source)
        if target is None or target == source or target not in self._hosts:
            raise CloudError(f"no valid host for {instance_id}", instance_id=instance_id)
        if not self._hosts[target]["enabled"]:
            raise CloudError(f"host {target} is disabled", instance_id=instance_id, host=target)
        if self.free_vcpus(target) < inst["vcpus"]:
            raise CloudError(
                f"no valid host: {target} has {self.free_vcpus(target)} vcpus free, "
                f"{instance_id} needs {inst['vcpus']}",
                instance_id=instance_id,
                host=target,
            )
        now = self.clock.now()
        seconds = self._stalls.pop(instance_id, None) or (
            self.live_migration_seconds if action == "LIVE_MIGRATE" else self.migration_seconds
        )
        failures = self._failures.get(instance_id) or []
        handle = f"migration-{len(self._migrations) + 1}"
        self._migrations[handle] = {
            "key": key,
            "instance_id": instance_id,
            "action": action,
            "source": source,
            "target": target,
            "end": (now + timedelta(seconds=seconds)).isoformat(),
            "state": "running",
            "error": failures.pop(0) if failures else None,
        }
        end = datetime.fromisoformat(self._migrations[handle]["end"])
        if self._next_end is not None and end < self._next_end:
            self._next_end = end
        self._event("migration_started", source, instance_id, target)
        self._save()
        return handle

    def find_move(self, key: str) -> str | None:
        """The handle of the move started with idempotency ``key``, if any
        (:class:`~fenix_core.hookspecs.MoveLookup`; kept in ``state_path``)."""
        return self._move_by_key(key)

    def _move_by_key(self, key: str) -> str | None:
        self._refresh()
        for handle, migration in self._migrations.items():
            if migration["key"] == key:
                return handle
        return None

    def poll_move(self, handle: str) -> OperationStatus:
        self._settle()
        migration = self._migrations.get(handle)
        if migration is None:
            return OperationStatus.failed(f"unknown migration {handle}")
        if migration["state"] == "gone":
            return OperationStatus("done", gone=True)
        if migration["state"] == "failed":
            return OperationStatus.failed(str(migration["error"]))
        if migration["state"] == "done":
            return OperationStatus.done(migration["target"])
        remaining = (datetime.fromisoformat(migration["end"]) - self.clock.now()).total_seconds()
        return OperationStatus.running(
            retry_after=max(0.0, remaining),
            detail=f"{migration['action']} {migration['source']} -> {migration['target']} running",
        )

    # ------------------------------------------------------------------ internals

    def _require_host(self, host: str) -> dict[str, Any]:
        self._refresh()
        if host not in self._hosts:
            raise CloudError(f"host {host} not found", host=host)
        return self._hosts[host]

    def _pick_target(self, vcpus: int, *, exclude: str) -> str | None:
        candidates = [
            (self.free_vcpus(name), name)
            for name, h in self._hosts.items()
            if name != exclude and h["enabled"] and h["type"] == "compute"
        ]
        fitting = [c for c in candidates if c[0] >= vcpus]
        return max(fitting)[1] if fitting else None

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
        self._events.append(CloudEvent(self.clock.now(), kind, host, instance_id, detail))

    def _refresh(self) -> None:
        """Re-read the state file if another process wrote it since."""
        if self._path is not None and file_version(self._path) != self._version:
            self._load()

    def _settle(self) -> None:
        """Finish every migration whose time has come, in time order."""
        self._refresh()
        now = self.clock.now()
        if self._next_end is not None and now < self._next_end:
            return  # nothing can be due yet: skip scanning every migration
        self._next_end = None
        due = sorted(
            (
                (datetime.fromisoformat(m["end"]), handle)
                for handle, m in self._migrations.items()
                if m["state"] == "running"
            ),
        )
        changed = False
        for end, handle in due:
            if end > now:
                break
            migration = self._migrations[handle]
            inst = self._instances.get(migration["instance_id"])
            changed = True
            if inst is None:
                migration["state"] = "gone"
            elif migration["error"]:
                migration["state"] = "failed"
                self._events.append(
                    CloudEvent(
                        end,
                        "migration_failed",
                        migration["source"],
                        migration["instance_id"],
                        migration["error"],
                    )
                )
            else:
                migration["state"] = "done"
                inst["host"] = migration["target"]
                inst["ready_at"] = (end + timedelta(seconds=self.ready_seconds)).isoformat()
                self._events.append(
                    CloudEvent(
                        end,
                        "migration_done",
                        migration["target"],
                        migration["instance_id"],
                        migration["source"],
                    )
                )
        running = [
            datetime.fromisoformat(m["end"])
            for m in self._migrations.values()
            if m["state"] == "running"
        ]
        self._next_end = min(running) if running else _NOTHING_RUNNING
        if changed:
            self._save()

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
            "baseline": self._baseline,
            "baseline_disabled": self._baseline_disabled,
            "sizes": self._sizes,
            "owners": self._owners,
            "removed_hosts": self._removed,
            "events": [{**attrs.asdict(e), "time": e.time.isoformat()} for e in self._events],
        }
        write_json_atomically(self._path, state)
        self._version = file_version(self._path)

    def _load(self) -> None:
        self._next_end = None
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
        self._sizes = state["sizes"]
        self._owners = state.get("owners", {})
        self._removed = state.get("removed_hosts", {})
        self._events = [
            CloudEvent(**{**e, "time": datetime.fromisoformat(e["time"])}) for e in state["events"]
        ]
