"""The interfaces the engine's parts meet at.

Records are named by what they hold; their concrete classes belong to the
working set. Here they are Protocols, so the stepper, the stores and the
reply intake depend on what they use, not on each other."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

__all__ = [
    "Delivery",
    "Fence",
    "LeaseKeeper",
    "NewSession",
    "OutboxRec",
    "ReplySink",
    "SessionStore",
    "StepWrite",
    "WorkingSetLike",
]


@attrs.frozen
class Fence:
    """What a step's single UPDATE must still match to commit: this worker's
    lease (owner and token) and the session's version as loaded.

    ``claims``: the write takes the lease itself (the first write of a
    session this engine inserted, which no claim of its own committed
    before): it matches only a session nobody ever leased (no owner, the
    token before ``token``) and stores ``owner`` and ``token``."""

    session_id: str
    owner: str
    token: int
    version: int
    claims: bool = False


@attrs.frozen
class OutboxRec:
    session_id: str
    seq: int
    signal: str
    payload: dict[str, Any]


@attrs.frozen
class StepWrite:
    """Everything one step changed, as rows per table (only dirty ones); the
    store writes it in one transaction fenced by ``fence``."""

    fence: Fence
    next_wake: datetime | None
    lease_expires: datetime
    delivered_seq: int
    inbox_seen_id: int
    session: tuple[Any, ...] | None = None
    components: Sequence[tuple[str, int, str]] = ()  # (component, schema version, json)
    hosts: Sequence[tuple[Any, ...]] = ()
    instances: Sequence[tuple[Any, ...]] = ()
    projects: Sequence[tuple[Any, ...]] = ()
    new_ops: Sequence[tuple[Any, ...]] = ()
    changed_ops: Sequence[tuple[Any, ...]] = ()
    outbox: Sequence[OutboxRec] = ()
    inbox_outcomes: Sequence[tuple[int, str, datetime]] = ()
    # Replies this step carried (recorded by ``reply_many`` in the step's own
    # transaction): (project_id, state, instance_actions, received_at,
    # processed_at, outcome), INSERTed; processed_at and outcome are None
    # for a reply the step did not get to (a broken step).
    new_inbox: Sequence[tuple[Any, ...]] = ()
    timers: Sequence[tuple[Any, ...]] = ()
    # Names among ``timers`` that have no stored row (set for the first time
    # in this step): nothing to delete before their insert.
    fresh_timers: frozenset[str] = frozenset()
    # Rows that joined the session in this step (lifecycle adds hosts, their
    # instances and projects): INSERTed, where the fields above are UPDATEd.
    new_hosts: Sequence[tuple[Any, ...]] = ()
    new_instances: Sequence[tuple[Any, ...]] = ()
    new_projects: Sequence[tuple[Any, ...]] = ()
    # The step's time on the engine's clock: the outbox rows' created_at
    # (None: the machine's time, for a write made outside a step).
    at: datetime | None = None


@attrs.frozen
class NewSession:
    """The rows of a session about to be created (built by pure code)."""

    session: tuple[Any, ...]
    hosts: Sequence[tuple[Any, ...]]
    instances: Sequence[tuple[Any, ...]]
    projects: Sequence[tuple[Any, ...]]
    components: Sequence[tuple[str, int, str]] = ()


class WorkingSetLike(Protocol):
    """What the ports need of a loaded session (the working set)."""

    @property
    def session_id(self) -> str: ...
    @property
    def version(self) -> int: ...


class SessionStore(Protocol):
    def load(self, session_id: str) -> WorkingSetLike: ...
    def insert(self, new: NewSession) -> None: ...
    def write(
        self, write: StepWrite
    ) -> None: ...  # raises LeaseLost, writes nothing, if fenced out
    def unprocessed_replies(self, session_id: str) -> list[tuple[Any, ...]]: ...


class LeaseKeeper(Protocol):
    def claim(
        self, session_ids: Sequence[str], limit: int | None = None
    ) -> dict[str, Fence]: ...  # at most ``limit`` (None: all) leases taken
    # ``version``: the session's version the write must match (None: the claim's).
    def fence(self, session_id: str, version: int | None = None) -> Fence: ...
    def took(self, fence: Fence) -> None: ...  # a write under a claiming fence committed
    def release(self, session_id: str) -> None: ...
    def release_all(self) -> None: ...


class Delivery(Protocol):
    def deliver(self, rows: Sequence[OutboxRec]) -> int: ...  # the new watermark


class ReplySink(Protocol):
    def held(self, session_id: str) -> WorkingSetLike | None: ...  # validate in memory if held
    def wake(self, session_id: str) -> None: ...
