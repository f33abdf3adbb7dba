"""A lost database connection, retried (``Engine(db_retries=,
db_retry_seconds=)``): the call is made again after ``first_wait`` seconds,
doubling each time, up to ``retries`` times, before the error reaches the
caller. Only a database fault is retried (:func:`is_database_fault`: the
connection dropped, the server went away, a lock timed out): anything else
is a defect or a refusal that a retry would only repeat.

What is retried must be safe to run again from the last commit: a step is
(its working set is dropped and loaded again; operations it started after
its commit are looked up by their key, not started a second time)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from ..errors import InvalidInput

__all__ = ["DbRetry", "check_retry_arguments", "is_database_fault"]

log = logging.getLogger("fenix_core.core")

_T = TypeVar("_T")


def is_database_fault(error: BaseException) -> bool:
    """Whether ``error`` is the database or its connection failing rather
    than a statement refused: an OperationalError, an InterfaceError (the
    driver's connection closed under it: psycopg raises one for a
    connection the server dropped), or any DBAPI error SQLAlchemy took for a
    disconnect (it invalidated the connection)."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def check_retry_arguments(retries: object, wait_seconds: object) -> None:
    """InvalidInput naming ``db_retries`` / ``db_retry_seconds`` unless they
    are a whole number >= 0 and a positive number of seconds."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInput("db_retries", f"must be a whole number >= 0, got {retries!r}")
    if (
        isinstance(wait_seconds, bool)
        or not isinstance(wait_seconds, int | float)
        or not wait_seconds > 0
    ):
        raise InvalidInput(
            "db_retry_seconds", f"must be a positive number of seconds, got {wait_seconds!r}"
        )


class DbRetry:
    """``retry(what, call)``: ``call()``, again after a lost connection."""

    def __init__(
        self,
        retries: int,
        first_wait: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retries = retries
        self.first_wait = first_wait
        self._sleep = sleep

    def __call__(self, what: str, call: Callable[[], _T]) -> _T:
        attempt = 0
        while True:
            try:
                return call()
            except DBAPIError as exc:
                if attempt >= self.retries or not is_database_fault(exc):
                    raise
                delay = self.first_wait * 2**attempt
                attempt += 1
                log.warning(
                    "%s: database error, retry %d of %d in %.2f s: %s",
                    what,
                    attempt,
                    self.retries,
                    delay,
                    exc,
                )
                self._sleep(delay)
