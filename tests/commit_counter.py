"""Commits sent to an engine's database, counted through SQLAlchemy's
``commit`` event (the public seam the step's driver-level commit also fires)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from fenix_core import Engine


class Commits:
    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine.database, "commit", self._commit)

    def _commit(self, *_args: Any) -> None:
        self.count += 1
