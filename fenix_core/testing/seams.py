"""Test seams of an engine: what a concurrency test must hold or see of an
engine that its public API does not offer.

Both today's :class:`~fenix_core.engine.Engine` and the redesigned core's
engine (issue 18) offer them, so a test written with these runs unchanged on
either; tests never read an engine's private attributes
(``tests/test_private_seams.py`` checks). What every test may use anyway is
public: ``engine.database`` (the SQLAlchemy engine, to read stored rows and
to count statements) and ``engine.held_sessions()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

__all__ = ["queued_replies", "step_in_progress"]


class _Queue(Protocol):
    @property
    def queued(self) -> int: ...


class _Engine(Protocol):
    # What both engines keep under these names; a seam is the one place
    # outside the engines that may rely on them.
    _lock: AbstractContextManager[object]
    _replies: _Queue


@contextmanager
def step_in_progress(engine: _Engine) -> Iterator[None]:
    """Hold what a step holds for as long as the ``with`` block lasts: calls
    from other threads (``reply``, controls, another ``step``) wait as they
    would behind a long step. The engine's own thread may still call it (the
    lock is reentrant, as it is for a signal receiver inside a step)."""
    with engine._lock:
        yield


def queued_replies(engine: _Engine) -> int:
    """How many ``reply()`` calls wait for the next group commit (each
    returns once its reply is durable)."""
    return engine._replies.queued
