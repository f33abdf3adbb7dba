"""Operational controls of a session: when a host may start, and how long the
rest will take.

Pure functions and value objects, no I/O: the workflows ask :func:`admit`
before they start a host, and the session view asks :func:`estimate_end`. A
session request carries a :class:`Controls` (``SessionRequest.controls``),
built from a Fenix-style dict with :meth:`Controls.from_dict`::

    {"windows": [{"days": ["mon", "tue"], "start": "22:00", "end": "04:00"}],
     "timezone": "Europe/Paris", "blackout_dates": ["2026-12-24"],
     "max_hosts_in_maintenance": "10%", "max_hosts_per_hour": 4, "max_hosts_per_day": 20,
     "max_topology_in_maintenance": [{"key": "zone", "max": 1}],
     "settle_seconds": 300, "host_seconds": 1800,
     "gates": [{"name": "instances_back", "soak_seconds": 300}],
     "gate_timeout": 3600, "escalation": {"migration": "wait_and_notify"}}

A window belongs to the day it opens on: ``22:00``-``04:00`` on Monday runs
into Tuesday morning, and a blackout date cancels the windows that open on it.
A window may also open when a cron expression fires or an RFC 5545 rule
recurs (``{"rrule": "FREQ=MONTHLY;BYDAY=2SU;BYHOUR=1", "duration": "4h"}``,
:mod:`fenix_core.recurrence`) and carry its own ``max_hosts_in_maintenance``.
Rates are over sliding periods: at most ``max_hosts_per_hour`` starts in any
60 minutes, ``max_hosts_per_day`` in any 24 hours. Host caps take a count or a
percent of the session's hosts; topology caps limit the zones, aggregates or
racks in maintenance at once (:mod:`fenix_core.budgets`).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .budgets import (
    Cap,
    Labels,
    TopologyCap,
    cap_text,
    describe_cap,
    parse_cap,
    resolve_cap,
    topology_refusal,
)
from .errors import InvalidInput
from .recurrence import check_cron, check_rrule, cron_starts, parse_duration, rrule_starts

__all__ = [
    "ACTION_SECONDS",
    "ESCALATIONS",
    "HOST_GUARD",
    "STUCK_KINDS",
    "STUCK_KIND_OF_OPERATION",
    "Admission",
    "Controls",
    "GateSpec",
    "Ledger",
    "PacingHistory",
    "Window",
    "admit",
    "budget_openings",
    "describe_stuck",
    "earliest_start",
    "estimate_end",
    "expected_host_seconds",
    "host_estimate",
    "jittered_backoff",
    "next_window_start",
    "window_occurrences",
]

Escalation = Literal["wait_and_notify", "skip_host", "fail"]
#: What a session may do when work is stuck past its deadline.
ESCALATIONS: tuple[str, ...] = ("wait_and_notify", "skip_host", "fail")
#: Kinds of work that can get stuck (the first four are DEFAULT_TIMEOUTS' keys).
STUCK_KINDS: tuple[str, ...] = ("migration", "own_action", "action", "host_up", "gate")

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOUR, _DAY = timedelta(hours=1), timedelta(days=1)
#: How far ahead to look for a window before concluding there is none.
_HORIZON_DAYS = 400


# --------------------------------------------------------------------------- parsing helpers


def _fail(field: str, message: str) -> InvalidInput:
    return InvalidInput(field, message)


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(field, f"expected an object, got {type(value).__name__}")
    return value


def _list(value: object, field: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise _fail(field, f"expected a list, got {type(value).__name__}")
    return list(value)


def _unknown(data: Mapping[str, Any], known: Sequence[str], prefix: str) -> None:
    extra = sorted(str(k) for k in set(data) - set(known))
    if extra:
        raise _fail(f"{prefix}{extra[0]}", "unknown field")


def _secs(value: object, field: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field, f"expected a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise _fail(
            field, f"must be a {'' if zero else 'positive '}number of seconds, got {value!r}"
        )
    return seconds


def _clock_time(value: object, field: str) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise _fail(field, f"expected a time of day like '22:30', got {type(value).__name__}")
    try:
        parsed = time.fromisoformat(value.strip())
    except ValueError:
        raise _fail(field, f"not a time of day like '22:30': {value!r}") from None
    if parsed.tzinfo is not None:
        raise _fail(field, "give the time zone in controls.timezone, not in the time")
    return parsed


def _day(value: object, field: str) -> int:
    if isinstance(value, str) and value.strip().lower()[:3] in _DAYS:
        return _DAYS.index(value.strip().lower()[:3])
    raise _fail(field, f"expected a weekday (mon ... sun), got {value!r}")


def _a_date(value: object, field: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise _fail(field, f"expected a date like '2026-12-24', got {type(value).__name__}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise _fail(field, f"not a date like '2026-12-24': {value!r}") from None


# --------------------------------------------------------------------------- values


_WEEKLY_FIELDS = ("days", "start", "end")
_WINDOW_FIELDS = (*_WEEKLY_FIELDS, "cron", "rrule", "duration", "max_hosts_in_maintenance")


@attrs.frozen
class Window:
    """A recurring window, local time, optionally with its own budget.

    Weekly: on each of ``days`` (0 = Monday) from ``start`` to ``end``; an
    ``end`` at or before ``start`` runs past midnight. Scheduled: it opens
    whenever ``cron`` fires or ``rrule`` recurs and lasts ``duration`` seconds
    (elapsed time), or until the next ``end`` on the wall clock.
    ``max_hosts_in_maintenance``: within this window, a host starts only
    while fewer hosts than that are in maintenance.
    """

    days: tuple[int, ...] = tuple(range(7))
    start: time = time(0, 0)
    end: time | None = time(0, 0)
    cron: str | None = None
    rrule: str | None = None
    duration: float | None = None
    max_hosts_in_maintenance: Cap | None = None

    @property
    def scheduled(self) -> bool:
        return self.cron is not None or self.rrule is not None

    @classmethod
    def from_dict(cls, data: object, field: str) -> Window:
        mapping = _mapping(data, field)
        _unknown(mapping, _WINDOW_FIELDS, f"{field}.")
        given = {k for k, v in mapping.items() if v is not None}
        budget = parse_cap(
            mapping.get("max_hosts_in_maintenance"), f"{field}.max_hosts_in_maintenance"
        )
        if "cron" in given or "rrule" in given:
            return cls._scheduled(mapping, given, field, budget)
        if "duration" in given:
            raise _fail(f"{field}.duration", "only a cron or rrule window has a duration")
        for required in ("start", "end"):
            if required not in given:
                raise _fail(f"{field}.{required}", "required")
        raw_days = mapping.get("days")
        days = (
            tuple(range(7))
            if raw_days in (None, "*")
            else tuple(
                sorted(
                    {
                        _day(d, f"{field}.days[{i}]")
                        for i, d in enumerate(_list(raw_days, f"{field}.days"))
                    }
                )
            )
        )
        if not days:
            raise _fail(f"{field}.days", "must name at least one weekday")
        return cls(
            days=days,
            start=_clock_time(mapping["start"], f"{field}.start"),
            end=_clock_time(mapping["end"], f"{field}.end"),
            max_hosts_in_maintenance=budget,
        )

    @classmethod
    def _scheduled(
        cls, mapping: Mapping[str, Any], given: set[str], field: str, budget: Cap | None
    ) -> Window:
        if {"cron", "rrule"} <= given:
            raise _fail(f"{field}.rrule", "give either cron or rrule, not both")
        for weekly in ("days", "start"):
            if weekly in given:
                raise _fail(
                    f"{field}.{weekly}",
                    "a cron or rrule window opens when its schedule says: no days or start",
                )
        if ("duration" in given) == ("end" in given):
            raise _fail(f"{field}.duration", "give either duration or end (a time of day)")
        return cls(
            cron=check_cron(mapping["cron"], f"{field}.cron") if "cron" in given else None,
            rrule=check_rrule(mapping["rrule"], f"{field}.rrule") if "rrule" in given else None,
            duration=parse_duration(mapping["duration"], f"{field}.duration")
            if "duration" in given
            else None,
            end=_clock_time(mapping["end"], f"{field}.end") if "end" in given else None,
            max_hosts_in_maintenance=budget,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any]
        if self.scheduled:
            out = {"cron": self.cron} if self.cron is not None else {"rrule": self.rrule}
            if self.duration is not None:
                out["duration"] = self.duration
            else:
                assert self.end is not None
                out["end"] = self.end.isoformat(timespec="minutes")
        else:
            assert self.end is not None
            out = {
                "days": [_DAYS[d] for d in self.days],
                "start": self.start.isoformat(timespec="minutes"),
                "end": self.end.isoformat(timespec="minutes"),
            }
        if self.max_hosts_in_maintenance is not None:
            out["max_hosts_in_maintenance"] = cap_text(self.max_hosts_in_maintenance)
        return out


#: The built-in gate that asks the cloud driver's HostGuard (fenix_core.plugins.gates);
#: named here so that workflows can name it without importing the gates.
HOST_GUARD = "host_guard"


@attrs.frozen
class GateSpec:
    """A health gate the session checks before each host: a registered gate's
    ``name`` and the parameters it gets (``GateContext.params``)."""

    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_dict(cls, data: object, field: str) -> GateSpec:
        mapping = dict(_mapping(data, field))
        name = mapping.pop("name", None)
        if not isinstance(name, str) or not name.strip():
            raise _fail(f"{field}.name", "required: the name of a registered gate")
        for key in mapping:
            if not isinstance(key, str):
                raise _fail(field, f"keys must be strings, got {key!r}")
        return cls(name=name, params=mapping)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.params)}


_CONTROL_FIELDS = (
    "windows",
    "timezone",
    "blackout_dates",
    "max_hosts_in_maintenance",
    "max_hosts_per_hour",
    "max_hosts_per_day",
    "max_topology_in_maintenance",
    "settle_seconds",
    "host_seconds",
    "gates",
    "gate_timeout",
    "escalation",
)


def _topology_caps(value: object, field: str) -> tuple[TopologyCap, ...]:
    caps = tuple(
        TopologyCap.from_dict(c, f"{field}[{i}]") for i, c in enumerate(_list(value, field))
    )
    for index, cap in enumerate(caps):
        if any(c.key == cap.key for c in caps[:index]):
            raise _fail(f"{field}[{index}].key", f"label {cap.key!r} is capped twice")
    return caps


@attrs.frozen
class Controls:
    """When and how fast a session may take hosts, and what it does when stuck.

    Every field is optional; the default controls change nothing. See the
    module docstring for the dict form.
    """

    windows: tuple[Window, ...] = ()
    timezone: str = "UTC"
    blackout_dates: tuple[date, ...] = ()
    #: Caps: a count, or a percent of the session's hosts (fenix_core.budgets).
    max_hosts_in_maintenance: Cap | None = None
    max_hosts_per_hour: Cap | None = None
    max_hosts_per_day: Cap | None = None
    #: At most N domains of a host label (zone, aggregate, rack) in maintenance at once.
    max_topology_in_maintenance: tuple[TopologyCap, ...] = ()
    settle_seconds: float = 0.0
    #: Declared duration of one host, used until durations have been measured.
    host_seconds: float | None = None
    gates: tuple[GateSpec, ...] = ()
    #: Seconds a gate may keep saying "not yet" before it counts as stuck.
    gate_timeout: float = 3600.0
    #: Stuck kind -> wait_and_notify | skip_host | fail; unset kinds keep the
    #: workflow's own handling (migrations are retried, the rest fails).
    escalation: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_dict(cls, data: object, prefix: str = "controls") -> Controls:
        if isinstance(data, Controls):
            return data
        if data is None:
            return cls()
        mapping = _mapping(data, prefix)
        _unknown(mapping, _CONTROL_FIELDS, f"{prefix}.")
        tz = mapping.get("timezone", "UTC")
        if not isinstance(tz, str):
            raise _fail(f"{prefix}.timezone", f"expected an IANA time zone name, got {tz!r}")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise _fail(f"{prefix}.timezone", f"unknown IANA time zone {tz!r}") from None
        escalation = dict(_mapping(mapping.get("escalation") or {}, f"{prefix}.escalation"))
        for kind, policy in escalation.items():
            if kind not in STUCK_KINDS:
                raise _fail(
                    f"{prefix}.escalation.{kind}", f"not a kind of work: {', '.join(STUCK_KINDS)}"
                )
            if policy not in ESCALATIONS:
                raise _fail(
                    f"{prefix}.escalation.{kind}",
                    f"must be one of {', '.join(ESCALATIONS)}, got {policy!r}",
                )
        host_seconds = mapping.get("host_seconds")
        return cls(
            windows=tuple(
                Window.from_dict(w, f"{prefix}.windows[{i}]")
                for i, w in enumerate(_list(mapping.get("windows"), f"{prefix}.windows"))
            ),
            timezone=tz,
            blackout_dates=tuple(
                sorted(
                    {
                        _a_date(d, f"{prefix}.blackout_dates[{i}]")
                        for i, d in enumerate(
                            _list(mapping.get("blackout_dates"), f"{prefix}.blackout_dates")
                        )
                    }
                )
            ),
            max_hosts_in_maintenance=parse_cap(
                mapping.get("max_hosts_in_maintenance"), f"{prefix}.max_hosts_in_maintenance"
            ),
            max_hosts_per_hour=parse_cap(
                mapping.get("max_hosts_per_hour"), f"{prefix}.max_hosts_per_hour"
            ),
            max_hosts_per_day=parse_cap(
                mapping.get("max_hosts_per_day"), f"{prefix}.max_hosts_per_day"
            ),
            max_topology_in_maintenance=_topology_caps(
                mapping.get("max_topology_in_maintenance"),
                f"{prefix}.max_topology_in_maintenance",
            ),
            settle_seconds=_secs(
                mapping.get("settle_seconds", 0.0), f"{prefix}.settle_seconds", zero=True
            ),
            host_seconds=None
            if host_seconds is None
            else _secs(host_seconds, f"{prefix}.host_seconds"),
            gates=tuple(
                GateSpec.from_dict(g, f"{prefix}.gates[{i}]")
                for i, g in enumerate(_list(mapping.get("gates"), f"{prefix}.gates"))
            ),
            gate_timeout=_secs(mapping.get("gate_timeout", 3600.0), f"{prefix}.gate_timeout"),
            escalation=escalation,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": [w.to_dict() for w in self.windows],
            "timezone": self.timezone,
            "blackout_dates": [d.isoformat() for d in self.blackout_dates],
            "max_hosts_in_maintenance": cap_text(self.max_hosts_in_maintenance),
            "max_hosts_per_hour": cap_text(self.max_hosts_per_hour),
            "max_hosts_per_day": cap_text(self.max_hosts_per_day),
            "max_topology_in_maintenance": [c.to_dict() for c in self.max_topology_in_maintenance],
            "settle_seconds": self.settle_seconds,
            "host_seconds": self.host_seconds,
            "gates": [g.to_dict() for g in self.gates],
            "gate_timeout": self.gate_timeout,
            "escalation": dict(self.escalation),
        }

    def policy(self, kind: str) -> str | None:
        """The escalation for stuck work of ``kind``; None: the workflow's own handling."""
        return self.escalation.get(kind)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@attrs.frozen
class PacingHistory:
    """What :func:`admit` needs to know about the session so far."""

    #: When each host that started so far was admitted.
    started: tuple[datetime, ...] = ()
    #: Hosts admitted and not finished yet.
    in_maintenance: int = 0
    #: When the last host finished (the settle delay runs from there).
    last_finished: datetime | None = None
    #: Expected seconds for the next host (None: unknown, only windows apply).
    estimate_seconds: float | None = None
    #: The session's hosts (what a percent cap is a percent of).
    hosts: int = 0
    #: The topology labels of each host in maintenance (for topology caps).
    busy_labels: tuple[Labels, ...] = ()


@attrs.frozen
class Admission:
    """The answer to "may a host start now?": if not, until when and why.

    ``wait_until`` is None when only an event can change the answer (a host
    in maintenance finishing) or when no window will ever fit.
    """

    ok: bool
    wait_until: datetime | None = None
    reason: str | None = None


# --------------------------------------------------------------------------- windows

#: An occurrence of a window: when it opens and closes (UTC), and its budget.
Opening = tuple[datetime, datetime, Cap | None]


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """``moment`` as a naive local wall-clock time."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time in UTC (RFC 5545: a skipped time takes the
    offset before the gap, a repeated one is the first; ``fold=0``)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _weekly(
    w: Window, zone: ZoneInfo, blackout: set[date], start: datetime, end: datetime
) -> Iterator[Opening]:
    assert w.end is not None
    day = start.astimezone(zone).date() - _DAY
    last = end.astimezone(zone).date()
    while day <= last:
        if day not in blackout and day.weekday() in w.days:
            opens = _utc(datetime.combine(day, w.start), zone)
            close_day = day + _DAY if w.end <= w.start else day
            closes = _utc(datetime.combine(close_day, w.end), zone)
            if closes > opens:
                yield opens, closes, w.max_hosts_in_maintenance
        day += _DAY


def _scheduled(
    w: Window, zone: ZoneInfo, blackout: set[date], start: datetime, end: datetime
) -> Iterator[Opening]:
    # Openings up to a window's length (and a day for DST) before ``start`` may still be open.
    reach = timedelta(seconds=w.duration) if w.duration is not None else _DAY
    first, last = _wall(start - reach - _DAY, zone), _wall(end, zone) + _DAY
    if w.cron is not None:
        walls: Iterable[datetime] = cron_starts(w.cron, first, last)
    else:
        assert w.rrule is not None
        walls = rrule_starts(w.rrule, first, last)
    for wall in walls:
        if wall.date() in blackout:
            continue
        opens = _utc(wall, zone)
        if w.duration is not None:
            closes = opens + timedelta(seconds=w.duration)
        else:
            assert w.end is not None
            close_wall = datetime.combine(wall.date(), w.end)
            if close_wall <= wall:
                close_wall += _DAY
            closes = _utc(close_wall, zone)
        if closes > opens:
            yield opens, closes, w.max_hosts_in_maintenance


def _raw_openings(controls: Controls, start: datetime, end: datetime) -> list[Opening]:
    zone, blackout = controls.zone, set(controls.blackout_dates)
    raw: list[Opening] = []
    for w in controls.windows:
        expand = _scheduled if w.scheduled else _weekly
        raw.extend(expand(w, zone, blackout, start, end))
    return raw  # around [start, end): filtered once merged, so that chains stay whole


def _merge(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes in sorted(spans):
        if merged and opens <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
        else:
            merged.append((opens, closes))
    return merged


def window_occurrences(
    controls: Controls, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """The windows (UTC, overlapping ones merged) that end after ``start`` and
    open before ``end``, in time order."""
    for opens, closes in _merge((o, c) for o, c, _ in _raw_openings(controls, start, end)):
        if closes > start and opens < end:
            yield opens, closes


def budget_openings(controls: Controls, start: datetime, end: datetime) -> list[Opening]:
    """Like :func:`window_occurrences`, with each window's budget: windows
    merge only with windows of the same budget, so each opening keeps its own."""
    by_budget: dict[Cap | None, list[tuple[datetime, datetime]]] = {}
    for opens, closes, budget in _raw_openings(controls, start, end):
        by_budget.setdefault(budget, []).append((opens, closes))
    return sorted(
        (
            (opens, closes, budget)
            for budget, spans in by_budget.items()
            for opens, closes in _merge(spans)
            if closes > start and opens < end
        ),
        key=lambda o: (o[0], o[1]),
    )


#: How far ahead to look, in steps (most answers are in the first).
_HORIZONS = (8, 50, _HORIZON_DAYS)


def _next_opening(
    now: datetime, controls: Controls, need: timedelta, busy: int, hosts: int
) -> tuple[datetime | None, str | None]:
    """The first time >= now inside a window that lasts ``need`` more and
    whose budget has room for one more host than ``busy``; else None and,
    when a window fitted but its budget was full, why."""
    full: str | None = None
    budgets = [w.max_hosts_in_maintenance for w in controls.windows]
    if None not in budgets and all(busy >= resolve_cap(b, hosts) for b in budgets if b):
        # Every window is full whenever it opens: only a host finishing makes room.
        loosest = max((b for b in budgets if b), key=lambda b: resolve_cap(b, hosts))
        return None, (
            f"{busy} host(s) in maintenance, at most "
            f"{describe_cap(loosest, hosts)} at once in any window"
        )
    for days in _HORIZONS:
        for opens, closes, budget in budget_openings(controls, now, now + timedelta(days=days)):
            begin = max(opens, now)
            if begin + need > closes:
                continue
            if budget is not None and busy >= resolve_cap(budget, hosts):
                full = full or (
                    f"{busy} host(s) in maintenance, at most "
                    f"{describe_cap(budget, hosts)} at once in this window"
                )
                continue
            return begin, full
    return None, full


def next_window_start(
    now: datetime, controls: Controls, *, min_seconds: float = 0.0
) -> datetime | None:
    """When a host expected to take ``min_seconds`` may next start: now if
    the window now open leaves enough time, else the opening of the first
    window long enough. None if no window within about a year fits (or there
    are no windows: then any time is fine, and ``now`` is returned)."""
    if not controls.windows:
        return now
    return _next_opening(now, controls, timedelta(seconds=min_seconds), 0, 0)[0]


# --------------------------------------------------------------------------- admission


def _rate_wait(
    started: Sequence[datetime], t: datetime, cap: int | None, period: timedelta
) -> datetime | None:
    """The earliest time >= t at which fewer than ``cap`` starts lie in the
    last ``period``, or None if t already is such a time."""
    if cap is None:
        return None
    recent = sorted(s for s in started if t - period < s <= t)
    if len(recent) < cap:
        return None
    return recent[len(recent) - cap] + period


def _pacing_wait(
    t: datetime, controls: Controls, history: PacingHistory
) -> tuple[datetime, str] | None:
    waits: list[tuple[datetime, str]] = []
    if history.last_finished is not None and controls.settle_seconds > 0:
        settled = history.last_finished + timedelta(seconds=controls.settle_seconds)
        if settled > t:
            waits.append((settled, f"settling {controls.settle_seconds:g} s after the last host"))
    for cap, period, per in (
        (controls.max_hosts_per_hour, _HOUR, "hour"),
        (controls.max_hosts_per_day, _DAY, "day"),
    ):
        if cap is None:
            continue
        wait = _rate_wait(history.started, t, resolve_cap(cap, history.hosts), period)
        if wait is not None:
            allowed = describe_cap(cap, history.hosts)
            waits.append((wait, f"at most {allowed} host(s) started per {per}"))
    return max(waits) if waits else None


def earliest_start(
    now: datetime, controls: Controls, history: PacingHistory
) -> tuple[datetime | None, str | None]:
    """The earliest time >= ``now`` at which a host may start, ignoring the
    number of hosts in maintenance (but not a window's own budget), and the
    reason for the wait (None if ``now``). ``(None, reason)`` when no window
    will ever fit the host, or only a host finishing can make room."""
    t, reason = now, None
    estimate = history.estimate_seconds or 0.0
    for _ in range(1000):  # each round moves t forward; two rounds settle it in practice
        pacing = _pacing_wait(t, controls, history)
        if pacing is not None:
            t, reason = pacing
            continue
        if not controls.windows:
            return t, reason
        opens, full = _next_opening(
            t, controls, timedelta(seconds=estimate), history.in_maintenance, history.hosts
        )
        if opens is None:
            return None, full or (
                f"no maintenance window in the next {_HORIZON_DAYS} days is long enough "
                f"for a host expected to take {estimate:.0f} s"
            )
        if opens == t:
            return t, reason
        inside = any(window_occurrences(controls, t, t + timedelta(microseconds=1)))
        if full is not None:
            reason = full
        elif inside:
            reason = (
                f"the open window ends before a host expected to take {estimate:.0f} s would finish"
            )
        else:
            reason = "outside the maintenance windows"
        t = opens
    return t, reason


def admit(
    now: datetime, controls: Controls, history: PacingHistory, labels: Labels | None = None
) -> Admission:
    """May a host (with topology ``labels``) start at ``now``? If not: until
    when to wait, and why."""
    cap = controls.max_hosts_in_maintenance
    if cap is not None and history.in_maintenance >= resolve_cap(cap, history.hosts):
        return Admission(
            False,
            None,
            f"{history.in_maintenance} host(s) in maintenance, "
            f"at most {describe_cap(cap, history.hosts)} at once",
        )
    refusal = topology_refusal(
        controls.max_topology_in_maintenance, labels or {}, history.busy_labels
    )
    if refusal is not None:
        return Admission(False, None, refusal)
    start, reason = earliest_start(now, controls, history)
    if start == now:
        return Admission(True)
    if start is None:
        return Admission(False, None, reason)
    return Admission(False, start, f"{reason}; next start at {start.isoformat()}")


# --------------------------------------------------------------------------- estimates


#: How long one action is assumed to take on a host, without ``host_seconds``
#: (the plan's preview assumes it too).
ACTION_SECONDS = 600.0


def expected_host_seconds(controls: Controls, actions: int) -> float:
    """Seconds a host's work is expected to take before any is measured: the
    declared ``host_seconds``, else :data:`ACTION_SECONDS` per action run on it."""
    if controls.host_seconds:
        return controls.host_seconds
    return ACTION_SECONDS * max(1, actions)


def host_estimate(measured: Sequence[float], declared: float | None) -> float | None:
    """Seconds one more host is expected to take when fitting it in a window:
    the longest measured so far (never start what may not finish), else the
    declared estimate."""
    if measured:
        return max(measured)
    return declared


def estimate_end(
    now: datetime,
    controls: Controls,
    history: PacingHistory,
    *,
    durations: Sequence[float],
    in_progress: Sequence[datetime],
    pending: int,
) -> datetime | None:
    """When the remaining hosts will be done: the mean measured (else the
    declared) host duration, played forward through the same admission rules
    (windows, rates, settle delay, hosts at once) that will apply. ``in_progress``
    are the start times of hosts in maintenance now. None if nothing is known."""
    mean = statistics.fmean(durations) if durations else controls.host_seconds
    if mean is None:
        return None if pending or in_progress else now
    length = timedelta(seconds=mean)
    fit = host_estimate(durations, controls.host_seconds)
    finishes = [max(now, s + length) for s in in_progress]
    cap = controls.max_hosts_in_maintenance
    concurrency = max(resolve_cap(cap, history.hosts) if cap else 1, len(in_progress))
    starts = list(history.started)
    last_finished = history.last_finished
    t = now
    for _ in range(pending):
        busy = sorted(f for f in finishes if f > t)
        if len(busy) >= concurrency:
            t = busy[len(busy) - concurrency]
            last_finished = t
        plan = PacingHistory(
            started=tuple(s for s in starts if s > t - _DAY),
            last_finished=last_finished,
            estimate_seconds=fit,
            hosts=history.hosts,
        )
        begin, _ = earliest_start(t, controls, plan)
        if begin is None:
            return None
        t = begin
        starts.append(t)
        finishes.append(t + length)
    return max([now, *finishes])


# --------------------------------------------------------------------------- retries


def jittered_backoff(attempt: int, *, base: float, cap: float, seed: str) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): exponential from
    ``base`` up to ``cap``, half of it fixed and half random ("equal jitter"),
    so that many retries do not hit the cloud at once. The randomness comes
    from ``seed`` (e.g. session id + instance id + attempt), which keeps a
    workflow's decisions reproducible when a step is replayed."""
    ceiling = float(min(cap, base * 2.0 ** max(0, attempt - 1)))
    rng = random.Random(f"{seed}:{attempt}")
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


# --------------------------------------------------------------------------- the session's ledger


@attrs.frozen
class Ledger:
    """When each host of a session started and finished, as kept in the
    session's data (``ctl_started`` / ``ctl_finished``: host -> ISO time).

    ``removed`` are the hosts the cloud lost during the session: their work
    ended with them (never in progress), but the time they took is not a
    maintenance duration (not measured, not used in estimates).
    """

    started: Mapping[str, datetime]
    finished: Mapping[str, datetime]
    skipped: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, removed: Iterable[str] = ()) -> Ledger:
        def times(key: str) -> dict[str, datetime]:
            return {h: datetime.fromisoformat(t) for h, t in dict(data.get(key) or {}).items()}

        return cls(
            started=times("ctl_started"),
            finished=times("ctl_finished"),
            skipped=frozenset(data.get("ctl_skipped") or ()),
            removed=frozenset(removed),
        )

    def in_progress(self) -> dict[str, datetime]:
        """Hosts started and neither finished, skipped nor removed, with their start."""
        return {
            h: t
            for h, t in self.started.items()
            if h not in self.finished and h not in self.skipped and h not in self.removed
        }

    def durations(self) -> dict[str, float]:
        """Seconds from start to finish of every host that was started and
        finished its work (maintained or decommissioned)."""
        return {
            h: (end - self.started[h]).total_seconds()
            for h, end in self.finished.items()
            if h in self.started and h not in self.removed
        }

    def history(
        self, controls: Controls, *, hosts: int = 0, labels: Mapping[str, Labels] | None = None
    ) -> PacingHistory:
        """What admission needs: ``hosts`` is the session's host count (for
        percent caps), ``labels`` the topology labels by host."""
        busy = self.in_progress()
        return PacingHistory(
            started=tuple(sorted(self.started.values())),
            in_maintenance=len(busy),
            last_finished=max(self.finished.values(), default=None),
            estimate_seconds=host_estimate(list(self.durations().values()), controls.host_seconds),
            hosts=hosts,
            busy_labels=tuple((labels or {}).get(h, {}) for h in sorted(busy)),
        )


#: Operation kind -> kind of stuck work (the keys of ``Controls.escalation``).
STUCK_KIND_OF_OPERATION = {
    "move": "migration",
    "watch": "own_action",
    "action": "action",
    "host_up": "host_up",
    "gate": "gate",
}


def describe_stuck(
    kind: str, instance_id: str | None, params: Mapping[str, Any], host: object
) -> str:
    """What is stuck, in words (``kind``: a key of :data:`STUCK_KIND_OF_OPERATION`'s
    values; ``params``: the operation's)."""
    if kind == "migration":
        return f"migration of {instance_id} off {host}"
    if kind == "own_action":
        return f"the manager's own action on {instance_id} (off {host})"
    if kind == "action":
        return f"action {params['action']['plugin']!r} on {host or 'the session'}"
    if kind == "host_up":
        return f"host {host} coming back up"
    return f"gate {params.get('gate')} before {host}"
