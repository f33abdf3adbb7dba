"""The shared per-host pipeline: pause, maintenance windows,
pacing, health gates and the settle delay, applied to every host of every
workflow.

``HostPipeline`` wraps the pure decisions of :mod:`fenix_core.controls`
(:func:`~fenix_core.controls.admit`, :func:`~fenix_core.controls.estimate_end`)
around a :class:`PipelineState` of constant size: counters, the last finish,
the most recent start times (only as many as the rate caps look at), duration
sums, the gate in flight, the current wait, and how many hosts in flight
each topology domain has (at most as many domains as the topology caps
allow). Per-host facts (when a host started and finished) stay on the host
records: the caller passes them in and records what :meth:`HostPipeline.admit`
decides. No I/O: a gate check is handed back as a :class:`GateCheck` for the
engine to run as an operation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import attrs

from ..budgets import Labels, domains, resolve_cap
from ..contract import ComponentState, HostAdmission
from ..controls import HOST_GUARD, Controls, GateSpec, PacingHistory, admit, estimate_end

__all__ = ["GateCheck", "HostPipeline", "PipelineState"]


def _times(values: Sequence[Any]) -> list[datetime]:
    return [v if isinstance(v, datetime) else datetime.fromisoformat(v) for v in values]


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@attrs.define(slots=True)
class PipelineState(ComponentState):
    """What the pipeline keeps between steps. Its size does not grow with the
    fleet: ``recent_starts`` holds at most as many times as the larger rate
    cap (the only ones :func:`~fenix_core.controls.admit` can look at)."""

    component = "pipeline"

    paused: bool = False
    pause_reason: str | None = None
    in_maintenance: int = 0
    started: int = 0
    finished: int = 0
    recent_starts: list[str] = attrs.field(factory=list)
    last_finished: str | None = None
    last_host: str | None = None
    durations_count: int = 0
    durations_sum: float = 0.0
    durations_max: float = 0.0
    gate_host: str | None = None
    gate_passed: int = 0
    gate_running: bool = False
    waiting_cause: str | None = None
    waiting_reason: str | None = None
    waiting_until: str | None = None
    #: Topology key -> domain -> hosts in flight there (capped keys only): the
    #: busy labels a topology cap looks at, without reading the hosts.
    open_domains: dict[str, dict[str, int]] = attrs.field(factory=dict)


def _no_labels(_host: str) -> Labels:
    return {}


@attrs.frozen
class GateCheck:
    """A gate to run before ``host``: the engine starts it as an operation of
    kind ``OpKind.GATE`` and reports its end to :meth:`HostPipeline.gate_ended`."""

    host: str
    spec: GateSpec
    last_host: str | None
    timeout: float

    def params(self, moved_instances: Sequence[str]) -> dict[str, Any]:
        return {
            "gate": self.spec.name,
            "params": dict(self.spec.params),
            "host": self.host,
            "last_host": self.last_host,
            "moved_instances": list(moved_instances),
        }


class HostPipeline:
    """One session's pipeline over its ``PipelineState`` (changed in place).

    ``hosts``: how many hosts a percent cap is a percent of
    (:func:`~fenix_core.states.budget_hosts`); ``labels``: a host's topology
    labels (those the caps name, kept in the session's data)."""

    def __init__(
        self,
        controls: Controls,
        state: PipelineState,
        *,
        hosts: int = 0,
        labels: Callable[[str], Labels] = _no_labels,
    ) -> None:
        self.controls = controls
        self.state = state
        self.hosts = hosts
        self.labels = labels

    # ------------------------------------------------------------------ reading

    def _kept_starts(self) -> int:
        caps = (self.controls.max_hosts_per_hour, self.controls.max_hosts_per_day)
        return max((resolve_cap(c, self.hosts) for c in caps if c is not None), default=0)

    def _estimate(self) -> float | None:
        if self.state.durations_count:
            return self.state.durations_max  # never start what may not finish
        return self.controls.host_seconds

    def history(self) -> PacingHistory:
        return PacingHistory(
            started=tuple(_times(self.state.recent_starts)),
            in_maintenance=self.state.in_maintenance,
            last_finished=_time(self.state.last_finished),
            estimate_seconds=self._estimate(),
            hosts=self.hosts,
            busy_labels=tuple(
                {key: tuple(sorted(open_now))}
                for key, open_now in sorted(self.state.open_domains.items())
            ),
        )

    def mean_duration(self) -> float | None:
        s = self.state
        return s.durations_sum / s.durations_count if s.durations_count else None

    def next_check(self) -> datetime | None:
        """When an answer of "wait" may change by itself (a window opening,
        pacing); None when only an event can change it."""
        return _time(self.state.waiting_until)

    def estimate_end(
        self, now: datetime, *, in_progress: Sequence[datetime], pending: int
    ) -> datetime | None:
        mean, longest = self.mean_duration(), self.state.durations_max
        # estimate_end plays hosts at the mean and fits them by the longest:
        # two durations with that mean and that maximum carry both.
        durations = [] if mean is None else [2 * mean - longest, longest]
        return estimate_end(
            now,
            self.controls,
            self.history(),
            durations=durations,
            in_progress=in_progress,
            pending=pending,
        )

    # ------------------------------------------------------------------ admission

    def admit(
        self, host: str, now: datetime, *, guarded: bool = False
    ) -> tuple[HostAdmission, GateCheck | None]:
        """May ``host`` start now (the caller knows it is not in flight)? When
        admitted, the caller records ``now`` as the host's start. A gate to
        run comes back as a ``GateCheck`` (the host waits for it).
        ``guarded``: the cloud driver's own guard (``host_guard``) is asked
        before the request's gates (a controller of a driver that has one)."""
        s = self.state
        if s.paused:
            return self._wait(host, "paused", f"paused: {s.pause_reason or 'by the admin'}", None)
        answer = admit(now, self.controls, self.history(), self._capped_labels(host))
        if not answer.ok:
            self._drop_gate()
            cause = "window" if answer.wait_until is None else f"pace:{answer.wait_until}"
            return self._wait(host, cause, f"{host} waits: {answer.reason}", answer.wait_until)
        gates = self.controls.gates
        if guarded:
            gates = (GateSpec(HOST_GUARD), *gates)
        if gates:
            if s.gate_host != host:
                self._drop_gate()
                s.gate_host, s.gate_passed = host, 0
            if s.gate_passed < len(gates):
                spec = gates[s.gate_passed]
                reason = f"gate {spec.name} before {host}: checking"
                admission, _ = self._wait(host, f"gate:{spec.name}:{host}", reason, None)
                if s.gate_running:
                    return admission, None
                s.gate_running = True
                return admission, GateCheck(host, spec, s.last_host, self.controls.gate_timeout)
        self._drop_gate()
        self._record_start(host, now)
        s.waiting_cause = s.waiting_reason = s.waiting_until = None
        return HostAdmission(host, True), None

    def _capped_labels(self, host: str) -> Labels:
        if not self.controls.max_topology_in_maintenance:
            return {}
        return self.labels(host)

    def _record_start(self, host: str, now: datetime) -> None:
        s = self.state
        s.in_maintenance += 1
        s.started += 1
        keep = self._kept_starts()
        if keep:
            s.recent_starts = [*s.recent_starts, now.isoformat()][-keep:]
        self._count_domains(host, 1)

    def _count_domains(self, host: str, delta: int) -> None:
        """Open (``delta`` 1) or close (-1) the topology domains of ``host``.
        A new mapping each time: the stored body the state was read from
        must not change under it (a body equal to the stored one is not written)."""
        labels = self._capped_labels(host)
        if not labels:
            return
        found = {key: dict(counts) for key, counts in self.state.open_domains.items()}
        for cap in self.controls.max_topology_in_maintenance:
            counts = found.setdefault(cap.key, {})
            for domain in domains(labels, cap.key):
                left = counts.get(domain, 0) + delta
                if left > 0:
                    counts[domain] = left
                else:
                    counts.pop(domain, None)
            if not counts:
                del found[cap.key]
        self.state.open_domains = found

    def _wait(
        self, host: str, cause: str, reason: str, until: datetime | None
    ) -> tuple[HostAdmission, GateCheck | None]:
        s = self.state
        s.waiting_cause, s.waiting_reason, s.waiting_until = cause, reason, _iso(until)
        return HostAdmission(host, False, reason, until), None

    def _drop_gate(self) -> None:
        s = self.state
        s.gate_host, s.gate_passed, s.gate_running = None, 0, False

    def gate_ended(self, host: str, *, passed: bool, stop: str | None = None) -> None:
        """A gate check for ``host`` ended: passed, failed (asked again at the
        next admission), or said stop (the session pauses with ``stop``)."""
        s = self.state
        if s.gate_host != host:
            return  # a check no longer wanted
        s.gate_running = False
        if passed:
            s.gate_passed += 1
        elif stop is not None:
            self.pause(stop)

    # ------------------------------------------------------------------ hosts ending

    def finished(self, host: str, now: datetime, *, started_at: datetime) -> None:
        """An admitted host finished its work (maintained or decommissioned)."""
        s = self.state
        s.in_maintenance = max(0, s.in_maintenance - 1)
        self._count_domains(host, -1)
        s.finished += 1
        s.last_finished = now.isoformat()
        s.last_host = host
        seconds = (now - started_at).total_seconds()
        s.durations_count += 1
        s.durations_sum += seconds
        s.durations_max = max(s.durations_max, seconds)

    def released(self, host: str, *, settle_from: datetime | None = None) -> None:
        """An admitted host left the pipeline without a measured duration:
        skipped, or removed from the cloud (its work ended with it).
        ``settle_from``: the settle delay runs from then, as after a host
        that finished."""
        s = self.state
        s.in_maintenance = max(0, s.in_maintenance - 1)
        self._count_domains(host, -1)
        s.finished += 1
        if settle_from is not None:
            s.last_finished = settle_from.isoformat()
        if s.gate_host == host:
            self._drop_gate()

    # ------------------------------------------------------------------ pause

    def pause(self, reason: str) -> None:
        s = self.state
        s.paused, s.pause_reason = True, reason
        self._drop_gate()
        s.waiting_cause, s.waiting_reason, s.waiting_until = "paused", f"paused: {reason}", None

    def resume(self) -> None:
        s = self.state
        s.paused, s.pause_reason = False, None
        s.waiting_cause = s.waiting_reason = s.waiting_until = None
