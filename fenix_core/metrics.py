"""Prometheus metrics of an :class:`~fenix_core.engine.Engine` (needs the ``metrics`` extra).

::

    from prometheus_client import CollectorRegistry, generate_latest
    from fenix_core.metrics import EngineCollector

    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    generate_latest(registry)  # the text format Prometheus scrapes

A scrape reads the engine's public views once: ``list_sessions`` (one view
per session), ``list_operations`` of the sessions still running (and of a
session once more when it ends, so its last operations are counted), and
``outbox_backlog``. Finished sessions count in ``fenix_sessions`` only, so
the work per scrape follows the running sessions, not the history.
docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .engine import Engine
from .model import SessionView
from .states import FINAL_SESSION_STATES, SessionState

__all__ = ["OPERATION_BUCKETS", "EngineCollector", "QueueBacklog", "waiting_reason"]

#: Upper bounds (seconds) of the operation duration histogram's buckets:
#: migrations take seconds to minutes, host maintenance up to hours.
OPERATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
_FINISHED = frozenset({"done", "failed", "abandoned"})


class QueueBacklog(Protocol):
    """What has a backlog: ``WebhookOutbox`` of fenix-api."""

    def backlog(self) -> tuple[int, datetime | None]: ...


def waiting_reason(waiting: str) -> str:
    """The label of a session's ``waiting`` text: ``paused``, ``gate`` (a
    health gate before the next host), ``approval`` (a session awaiting the
    admin's approval of its plan) or ``admission`` (windows, pacing,
    parallelism)."""
    if waiting.startswith("paused"):
        return "paused"
    if waiting.startswith("awaiting approval"):
        return "approval"
    if waiting.startswith("gate "):
        return "gate"
    return "admission"


class _Histogram:
    """Cumulative counts of finished operation durations by (kind, status)."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = {}

    def observe(self, kind: str, status: str, seconds: float) -> None:
        counts = self.buckets.setdefault((kind, status), [0] * (len(OPERATION_BUCKETS) + 1))
        for i, bound in enumerate(OPERATION_BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[(kind, status)] = self.sums.get((kind, status), 0.0) + seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "fenix_operation_duration_seconds",
            "Finished operations (start to finish) since this process started.",
            labels=["kind", "status"],
        )
        for (kind, status), counts in sorted(self.buckets.items()):
            bounds = [str(b) for b in OPERATION_BUCKETS] + ["+Inf"]
            family.add_metric(
                [kind, status], list(zip(bounds, counts, strict=True)), self.sums[(kind, status)]
            )
        return family


class EngineCollector(Collector):
    """The engine's state as Prometheus metrics, read at each scrape.

    ``webhooks`` (fenix-api's ``WebhookOutbox``) adds the webhook queue's
    depth and lag. Operation durations and counts are cumulative from the
    first scrape: operations that finished in sessions already ended before
    then are not read back (that is what keeps a scrape bounded).
    """

    def __init__(self, engine: Engine, *, webhooks: QueueBacklog | None = None) -> None:
        self.engine = engine
        self.webhooks = webhooks
        self._histogram = _Histogram()
        self._counted: dict[str, set[int]] = {}  # session -> operation indexes counted
        self._totals: dict[tuple[str, str], int] = {}
        self._ended: set[str] = set()  # sessions whose operations are all counted
        self._started = False

    def describe(self) -> list[Metric]:
        # No read at registration: collect() is what scrapes call.
        return []

    def collect(self) -> Iterator[Metric]:
        now = self.engine.clock.now()
        views = self.engine.list_sessions()
        yield from self._session_metrics(views, now)
        self._count_operations(views)
        yield self._histogram.family()
        totals = CounterMetricFamily(
            "fenix_operations",
            "Operations that reached a final status, since this process started.",
            labels=["kind", "status"],
        )
        for (kind, status), value in sorted(self._totals.items()):
            totals.add_metric([kind, status], value)
        yield totals
        count, oldest = self.engine.outbox_backlog()
        yield from _backlog(
            "fenix_outbox",
            "notifications written by the engine, not yet handed to their receivers",
            count,
            oldest,
            now,
        )
        if self.webhooks is not None:
            count, oldest = self.webhooks.backlog()
            yield from _backlog(
                "fenix_webhook_queue",
                "webhook POSTs queued by fenix-api, not yet delivered",
                count,
                oldest,
                datetime.now(UTC),
            )

    def _session_metrics(self, views: list[SessionView], now: datetime) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("fenix_sessions", "Sessions by state.", labels=["state"])
        by_state = dict.fromkeys((s.value for s in SessionState), 0)
        for view in views:
            by_state[view.state] = by_state.get(view.state, 0) + 1
        for state, n in by_state.items():
            sessions.add_metric([state], n)
        yield sessions
        hosts = GaugeMetricFamily(
            "fenix_hosts",
            "Hosts of the running sessions by session and host state.",
            labels=["session_id", "state"],
        )
        paused = GaugeMetricFamily(
            "fenix_session_paused", "1 if the running session is paused.", labels=["session_id"]
        )
        waiting = GaugeMetricFamily(
            "fenix_session_waiting",
            "1 while the running session waits to start its next host, by reason.",
            labels=["session_id", "reason"],
        )
        stuck = GaugeMetricFamily(
            "fenix_stuck_work",
            "Work past its deadline in the running session, by kind.",
            labels=["session_id", "kind"],
        )
        stuck_age = GaugeMetricFamily(
            "fenix_stuck_work_oldest_seconds",
            "Seconds since the oldest stuck work of the running session passed its deadline.",
            labels=["session_id", "kind"],
        )
        for view in views:
            if view.state in FINAL_SESSION_STATES:
                continue
            sid = view.session_id
            counts: dict[str, int] = {}
            for host in view.hosts:
                counts[host.state] = counts.get(host.state, 0) + 1
            for state, n in sorted(counts.items()):
                hosts.add_metric([sid, state], n)
            paused.add_metric([sid], 1 if view.paused else 0)
            if view.waiting:
                waiting.add_metric([sid, waiting_reason(view.waiting)], 1)
            oldest: dict[str, datetime] = {}
            kinds: dict[str, int] = {}
            for work in view.stuck:
                kinds[work.kind] = kinds.get(work.kind, 0) + 1
                oldest[work.kind] = min(oldest.get(work.kind, work.since), work.since)
            for kind, n in sorted(kinds.items()):
                stuck.add_metric([sid, kind], n)
                stuck_age.add_metric([sid, kind], (now - oldest[kind]).total_seconds())
        yield from (hosts, paused, waiting, stuck, stuck_age)

    def _count_operations(self, views: list[SessionView]) -> None:
        """Add the operations finished since the last scrape to the counts."""
        first = not self._started
        self._started = True
        live = {v.session_id for v in views}
        self._ended &= live  # forget deleted sessions
        for sid in set(self._counted) - live:
            del self._counted[sid]
        for view in views:
            sid = view.session_id
            final = view.state in FINAL_SESSION_STATES
            if sid in self._ended or (final and first):
                self._ended.add(sid)  # ended before we looked: history, not read back
                continue
            counted = self._counted.setdefault(sid, set())
            for index, op in enumerate(self.engine.list_operations(sid)):
                if index in counted or op.finished_at is None or op.status not in _FINISHED:
                    continue
                counted.add(index)
                key = (op.kind, op.status)
                self._totals[key] = self._totals.get(key, 0) + 1
                if op.started_at is not None:
                    seconds = max(0.0, (op.finished_at - op.started_at).total_seconds())
                    self._histogram.observe(op.kind, op.status, seconds)
            if final:  # its last operations are counted now
                del self._counted[sid]
                self._ended.add(sid)


def _backlog(
    name: str, what: str, count: int, oldest: datetime | None, now: datetime
) -> Iterator[Metric]:
    depth = GaugeMetricFamily(f"{name}_depth", f"How many {what}.")
    depth.add_metric([], count)
    lag = GaugeMetricFamily(
        f"{name}_lag_seconds", f"Age of the oldest of the {what} (0 when there is none)."
    )
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    lag.add_metric([], 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()))
    yield depth
    yield lag
