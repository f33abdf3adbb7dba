"""TimedAction: an action plug-in that takes a given (simulated) time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from ..clock import Clock
from ..errors import InvalidInput
from ..hookspecs import Action, ActionContext, hookimpl
from ..model import OperationStatus

__all__ = ["TimedAction"]


class TimedAction:
    """An action named ``name`` that is done ``seconds`` after it starts.

    ``runs`` lists ``(start time, host or None)`` for every run, once per run
    even if the engine asks again with the same key. ``fail_on`` names hosts on
    which the action fails (``None`` in it: the session-wide run fails).
    """

    def __init__(
        self, name: str = "upgrade", seconds: float = 600.0, *, fail_on: Iterable[str | None] = ()
    ) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise InvalidInput("seconds", f"must be a number >= 0, got {seconds!r}")
        self.name = name
        self.seconds = float(seconds)
        self.fail_on = set(fail_on)
        self.runs: list[tuple[datetime, str | None]] = []
        self._started: dict[str, datetime] = {}

    @hookimpl
    def fenix_actions(self, clock: Clock) -> Sequence[Action]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        if context.key not in self._started:
            self._started[context.key] = context.now
            self.runs.append((context.now, context.host))
        return self.poll(context)

    def poll(self, context: ActionContext) -> OperationStatus:
        if context.host in self.fail_on:
            return OperationStatus.failed(f"{self.name} failed on {context.host}")
        end = self._started[context.key] + timedelta(seconds=self.seconds)
        if context.now >= end:
            return OperationStatus.done(context.host)
        return OperationStatus.running(retry_after=(end - context.now).total_seconds())

    @property
    def hosts(self) -> list[str | None]:
        """Hosts in the order the action ran on them."""
        return [host for _, host in self.runs]
