"""Counting what an engine sends to its database: SQL statements (one
``executemany`` is one statement) and commits, through SQLAlchemy's engine
events on the engine's own database engine.

The seam is public: ``engine.database`` (today's Engine and the core's
Engine) is that SQLAlchemy engine; listeners on it see every connection
of the engine.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine

from fenix_core import Engine


def database_of(engine: Engine) -> SAEngine:
    return engine.database


class StatementCounter:
    """Statements and commits since ``reset``; those made inside
    ``Engine.reply`` calls are also counted apart (``in_reply`` is set by the
    caller around them)."""

    def __init__(self, engine: Engine) -> None:
        self.database = database_of(engine)
        self.statements = 0
        self.commits = 0
        self.reply_statements = 0
        self.reply_commits = 0
        self.in_reply = False
        event.listen(self.database, "before_cursor_execute", self._statement)
        event.listen(self.database, "commit", self._commit)

    def reset(self) -> None:
        self.statements = self.commits = self.reply_statements = self.reply_commits = 0

    def close(self) -> None:
        event.remove(self.database, "before_cursor_execute", self._statement)
        event.remove(self.database, "commit", self._commit)

    def figures(self) -> dict[str, int]:
        return {
            "statements": self.statements,
            "commits": self.commits,
            "reply_statements": self.reply_statements,
            "reply_commits": self.reply_commits,
        }

    def _statement(self, *_args: Any) -> None:
        self.statements += 1
        if self.in_reply:
            self.reply_statements += 1

    def _commit(self, *_args: Any) -> None:
        self.commits += 1
        if self.in_reply:
            self.reply_commits += 1
