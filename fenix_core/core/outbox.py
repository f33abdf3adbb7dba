"""Notification delivery with a per-session watermark.

A step's notifications are committed in its transaction (outbox rows with
consecutive ``seq`` per session) and delivered after the commit. What has
been delivered is ONE number per session, the highest ``seq`` sent, which
the *next* step's fenced write stores (``StepWrite.delivered_seq``); no row
is updated when it is sent. A worker that dies between delivering and that
write leaves a watermark behind the truth, so whoever loads the session next
sends the rows above the stored watermark again, once, in ``seq`` order:
at-least-once delivery, never a gap and never out of order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Protocol

from ..errors import FenixError
from .ports import OutboxRec

__all__ = ["Outbox", "OutboxGap", "OutboxSource"]

#: A row's seq (the delivery order), read in C.
_SEQ = attrgetter("seq")


class OutboxGap(FenixError):
    """Rows handed to delivery skip a seq above the watermark: sending them
    would lose a notification, so nothing is sent."""


class OutboxSource(Protocol):
    """Where committed rows are read back from (the store)."""

    def undelivered(self, session_id: str, after_seq: int) -> Sequence[OutboxRec]: ...


class Outbox:
    """Sends committed outbox rows through ``send``, in seq order, each once
    per watermark; implements :class:`fenix_core.core.ports.Delivery`."""

    def __init__(self, send: Callable[[OutboxRec], None]) -> None:
        self._send = send
        self._watermarks: dict[str, int] = {}

    def watermark(self, session_id: str) -> int:
        """The highest seq of ``session_id`` this engine has sent (0: none)."""
        return self._watermarks.get(session_id, 0)

    def restore(self, session_id: str, delivered_seq: int) -> None:
        """Start from the watermark the store holds (on load or take-over)."""
        self._watermarks[session_id] = delivered_seq

    def forget(self, session_id: str) -> None:
        self._watermarks.pop(session_id, None)

    def deliver(self, rows: Sequence[OutboxRec]) -> int:
        """Send the rows above the watermark, in seq order; return the new
        watermark. A ``send`` that raises stops delivery there: the watermark
        covers what was sent and the error propagates."""
        if not rows:
            return 0
        session_id = rows[0].session_id
        if len(rows) > 1:  # (a step's usual delivery: one or two rows)
            for row in rows:
                if row.session_id != session_id:
                    strangers = sorted({r.session_id for r in rows} - {session_id})
                    raise FenixError(
                        f"one delivery holds one session's rows; got {session_id} and "
                        + ", ".join(strangers)
                    )
            rows = sorted(rows, key=_SEQ)
        mark = self._watermarks.get(session_id, 0)
        for row in rows:
            if row.seq <= mark:
                continue  # sent already: a step's rows re-offered after a retry
            if row.seq != mark + 1:
                raise OutboxGap(
                    f"session {session_id}: notification {mark + 1} is missing before "
                    f"{row.seq}; nothing after {mark} sent",
                    session_id=session_id,
                )
            self._send(row)
            mark = row.seq
            self._watermarks[session_id] = mark
        return mark

    def leftovers(self, source: OutboxSource, session_id: str, delivered_seq: int) -> int:
        """After a load or a take-over: restore the stored watermark and send
        what was committed above it (re-sent once if a dead worker had sent
        it already); return the new watermark."""
        self.restore(session_id, delivered_seq)
        rows = source.undelivered(session_id, delivered_seq)
        return self.deliver(rows) if rows else delivered_seq
