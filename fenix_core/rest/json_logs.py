"""``fenix-api --log-format json``: one JSON object per log line.

The standard :mod:`logging` module with a small formatter, so log shippers
(Loki, Fluent Bit, Elasticsearch) read fields instead of parsing text. Keys:
``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``; ``exception``
when there is a traceback; and any ``extra=`` fields a caller gave that
JSON can carry (others as their ``repr``).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter"]

#: Attributes every LogRecord has: not ``extra=`` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=repr, ensure_ascii=False)
