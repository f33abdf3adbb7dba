"""TimedAction: an action plug-in that takes a given (simulated) time."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from ..clock import Clock
from ..errors import InvalidInput
from ..model import OperationStatus
from ..plugins.hookspecs import Action, ActionContext, hookimpl
from ._state_file import file_version, write_json_atomically

__all__ = ["TimedAction"]


class TimedAction:
    """An action named ``name`` that is done ``seconds`` after it starts.

    ``runs`` lists ``(start time, host or None)`` for every run, once per run
    even if the engine asks again with the same key. ``fail_on`` names hosts on
    which the action fails (``None`` in it: the session-wide run fails).
    ``per_host`` gives other durations on some hosts (host -> seconds). With
    ``state_path`` the runs live in that JSON file, so a TimedAction in another
    process (an engine resumed after a crash) knows the runs started before;
    it re-reads the file when another process wrote it since.
    """

    def __init__(
        self,
        name: str = "upgrade",
        seconds: float = 600.0,
        *,
        fail_on: Iterable[str | None] = (),
        per_host: Mapping[str, float] | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise InvalidInput("seconds", f"must be a number >= 0, got {seconds!r}")
        self.name = name
        self.seconds = float(seconds)
        self.fail_on = set(fail_on)
        self.per_host = dict(per_host or {})
        for host, value in self.per_host.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInput(f"per_host.{host}", f"must be a number >= 0, got {value!r}")
        self.runs: list[tuple[datetime, str | None]] = []
        self._started: dict[str, datetime] = {}
        self._path = Path(state_path) if state_path is not None else None
        self._version: tuple[int, int] | None = None
        self._refresh()

    def _refresh(self) -> None:
        """Read the state file if it exists and another process wrote it since."""
        version = file_version(self._path)
        if self._path is None or version is None or version == self._version:
            return
        self._version = version
        state = json.loads(self._path.read_text())
        self._started = {k: datetime.fromisoformat(v) for k, v in state["started"].items()}
        self.runs = [(datetime.fromisoformat(t), h) for t, h in state["runs"]]

    @hookimpl
    def fenix_actions(self, clock: Clock) -> Sequence[Action]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        self._refresh()
        if context.key not in self._started:
            self._started[context.key] = context.now
            self.runs.append((context.now, context.host))
            self._save()
        return self.poll(context)

    def poll(self, context: ActionContext) -> OperationStatus:
        self._refresh()
        started = self._started.get(context.key)
        if started is None:
            return OperationStatus.failed(
                f"{self.name}: run {context.key} was not started by this TimedAction "
                "(another process? give it a state_path)"
            )
        if context.host in self.fail_on:
            return OperationStatus.failed(f"{self.name} failed on {context.host}")
        seconds = self.per_host.get(context.host or "", self.seconds)
        end = started + timedelta(seconds=seconds)
        if context.now >= end:
            return OperationStatus.done(context.host)
        return OperationStatus.running(retry_after=(end - context.now).total_seconds())

    @property
    def hosts(self) -> list[str | None]:
        """Hosts in the order the action ran on them."""
        self._refresh()
        return [host for _, host in self.runs]

    def _save(self) -> None:
        if self._path is None:
            return
        state = {
            "started": {k: v.isoformat() for k, v in self._started.items()},
            "runs": [(t.isoformat(), h) for t, h in self.runs],
        }
        write_json_atomically(self._path, state)
        self._version = file_version(self._path)
