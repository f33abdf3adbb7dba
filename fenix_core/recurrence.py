"""When recurring maintenance windows open: cron expressions and RFC 5545
recurrence rules, expanded in local wall-clock time.

Everything here works on naive datetimes that mean "this wall-clock time in
the session's time zone"; :mod:`fenix_core.controls` attaches the zone. That
way a rule says what an operator reads on the clock (01:00 every second
Sunday), whatever the offset of that day, and the zone decides the rest as
RFC 5545 section 3.3.5 does: a local time that does not exist (the hour the
clocks skip) is read with the offset before the gap, and one that exists
twice (the hour repeated) is the first of the two. Python's ``fold=0`` is
exactly that rule.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import attrs
from croniter import croniter
from dateutil.relativedelta import relativedelta
from dateutil.rrule import rrule, rrulestr

from .errors import InvalidInput

__all__ = [
    "RRULE_ANCHOR",
    "check_cron",
    "check_rrule",
    "cron_starts",
    "parse_duration",
    "rrule_starts",
]

#: DTSTART of a rule that gives none: a Monday at midnight, local time. It
#: sets what the rule does not say: the time of day without BYHOUR/BYMINUTE,
#: the weekday of a WEEKLY rule without BYDAY, the phase of an INTERVAL.
RRULE_ANCHOR = datetime(2000, 1, 3)

_DURATION = re.compile(
    r"^P?(?:(?P<d>\d+)D)?T?(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?$", re.IGNORECASE
)
_TOO_FINE = ("SECONDLY", "MINUTELY")


def parse_duration(value: object, field: str) -> float:
    """Seconds, from a number of seconds or a text like ``"4h"``, ``"1h30m"``
    or ISO 8601's ``"PT4H"`` (days: ``"1d"`` / ``"P1D"``, 24 hours each)."""
    if isinstance(value, bool):
        raise InvalidInput(field, f"expected seconds or a duration like '4h', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        match = _DURATION.match(value.strip())
        if match is None or not any(match.groupdict().values()):
            raise InvalidInput(field, f"not a duration like '4h', '1h30m' or 'PT4H': {value!r}")
        parts = {k: int(v or 0) for k, v in match.groupdict().items()}
        seconds = float(parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"])
    else:
        raise InvalidInput(field, f"expected seconds or a duration like '4h', got {value!r}")
    if not 0 < seconds <= 366 * 86400:
        raise InvalidInput(field, f"must be above 0 and at most 366 days, got {value!r}")
    return seconds


# --------------------------------------------------------------------------- cron


def check_cron(expression: object, field: str) -> str:
    """A five-field cron expression (minute hour day-of-month month day-of-week)."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidInput(
            field, f"expected a cron expression like '0 1 * * sun#2', got {expression!r}"
        )
    text = " ".join(expression.split())
    if len(text.split(" ")) != 5:
        raise InvalidInput(
            field,
            "expected five fields (minute hour day-of-month month day-of-week), "
            f"got {expression!r}",
        )
    if not croniter.is_valid(text):
        raise InvalidInput(field, f"not a valid cron expression: {expression!r}")
    return text


def _months(start: datetime, end: datetime) -> Iterator[tuple[int, int]]:
    year, month = start.year, start.month
    while (year, month) <= (end.year, end.month):
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    first = datetime(year, month, 1)
    return first, first + relativedelta(months=1)


# Admission asks for the same months again and again (every step of a
# session); expanding a rule is slow (croniter: about a millisecond a time),
# so each rule is expanded once per calendar month.
@functools.lru_cache(maxsize=4096)
def _cron_month(expression: str, year: int, month: int) -> tuple[datetime, ...]:
    first, last = _month_bounds(year, month)
    it = croniter(expression, first - timedelta(seconds=1))
    fires = []
    while (fire := it.get_next(datetime)) < last:
        fires.append(fire)
    return tuple(fires)


def cron_starts(expression: str, start: datetime, end: datetime) -> list[datetime]:
    """The wall-clock times in [start, end) the cron expression fires at.
    Day-of-month and day-of-week both restricted means either (as cron does)."""
    return [
        fire
        for year, month in _months(start, end)
        for fire in _cron_month(expression, year, month)
        if start <= fire < end
    ]


# --------------------------------------------------------------------------- rrule


@attrs.frozen
class _Rule:
    rule: rrule
    dtstart: datetime
    freq: str
    interval: int
    counted: bool


@functools.lru_cache(maxsize=256)
def _rule(text: str) -> _Rule:
    parsed = rrulestr(text, dtstart=RRULE_ANCHOR, forceset=False, cache=False)
    if not isinstance(parsed, rrule):  # pragma: no cover - forceset=False, one RRULE
        raise ValueError("expected one RRULE")
    upper = text.upper()
    freq = re.search(r"FREQ=([A-Z]+)", upper)
    interval = re.search(r"INTERVAL=(\d+)", upper)
    start = re.search(r"DTSTART:(\d{8}T\d{6})", upper)
    return _Rule(
        rule=parsed,
        dtstart=datetime.strptime(start.group(1), "%Y%m%dT%H%M%S") if start else RRULE_ANCHOR,
        freq=freq.group(1) if freq else "",
        interval=int(interval.group(1)) if interval else 1,
        counted="COUNT=" in upper,
    )


def check_rrule(text: object, field: str) -> str:
    """An RFC 5545 RRULE (optionally ``RRULE:``-prefixed, optionally after a
    ``DTSTART:YYYYMMDDTHHMMSS`` line of local time), HOURLY or coarser."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(
            field, f"expected a recurrence rule like 'FREQ=MONTHLY;BYDAY=2SU', got {text!r}"
        )
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    rules = [line for line in lines if not line.upper().startswith("DTSTART")]
    starts = [line for line in lines if line.upper().startswith("DTSTART")]
    if len(rules) != 1 or len(starts) > 1:
        raise InvalidInput(field, "expected one RRULE, optionally after one DTSTART line")
    if starts and (";" in starts[0].split(":", 1)[0] or starts[0].upper().endswith("Z")):
        raise InvalidInput(
            field, "DTSTART must be a local time (YYYYMMDDTHHMMSS): the zone is controls.timezone"
        )
    body = rules[0].removeprefix("RRULE:").removeprefix("rrule:")
    freq = re.search(r"FREQ=([A-Z]+)", body.upper())
    if freq is None:
        raise InvalidInput(field, f"a recurrence rule needs FREQ=...: {text!r}")
    if freq.group(1) in _TOO_FINE:
        raise InvalidInput(
            field, f"FREQ={freq.group(1)} is too fine for a window: HOURLY or coarser"
        )
    canonical = "\n".join([*starts, f"RRULE:{body}"])
    try:
        _rule(canonical)
    except (ValueError, TypeError, IndexError) as exc:
        raise InvalidInput(field, f"not a valid recurrence rule ({exc}): {text!r}") from None
    return canonical


_UNITS = {"WEEKLY": timedelta(weeks=1), "DAILY": timedelta(days=1), "HOURLY": timedelta(hours=1)}


def _steps(rule: _Rule, before: datetime) -> relativedelta | timedelta | None:
    """How far the rule's DTSTART can move forward, in whole periods, and stay
    before ``before`` with the same occurrences after it (None: it cannot)."""
    if rule.counted:  # COUNT counts from DTSTART: expand from there (bounded)
        return None
    first = rule.dtstart
    if rule.freq in ("MONTHLY", "YEARLY"):
        if first.day > 28:  # months without that day would shift it
            return None
        months = (before.year - first.year) * 12 + before.month - first.month - 1
        unit = 12 if rule.freq == "YEARLY" else 1
        periods = months // (unit * rule.interval)
        return relativedelta(months=periods * unit * rule.interval) if periods > 0 else None
    step = _UNITS[rule.freq] * rule.interval
    periods = (before - first) // step
    return step * periods if periods > 0 else None


@functools.lru_cache(maxsize=4096)
def _rrule_month(text: str, year: int, month: int) -> tuple[datetime, ...]:
    first, last = _month_bounds(year, month)
    parsed = _rule(text)
    rule, shift = parsed.rule, _steps(parsed, first - timedelta(days=1))
    if shift is not None:
        rule = rule.replace(dtstart=parsed.dtstart + shift)
    return tuple(t for t in rule.between(first, last, inc=True) if t < last)


def rrule_starts(text: str, start: datetime, end: datetime) -> list[datetime]:
    """The wall-clock times in [start, end) the rule (from :func:`check_rrule`) gives."""
    return [
        t
        for year, month in _months(start, end)
        for t in _rrule_month(text, year, month)
        if start <= t < end
    ]
