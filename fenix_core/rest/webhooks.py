"""The webhook outbox: notifications queued in the engine's database.

:class:`WebhookOutbox` connects to the engine's three signals. For each
notification it writes one row per destination into the ``webhooks`` table
(one short transaction; no HTTP in the engine's thread); the
:class:`~fenix_core.rest.sender.WebhookSender` POSTs them. Destinations:

* ``maintenance_planned``: the URL the project registered
  (:meth:`WebhookOutbox.set_target`, ``PUT /v1/subscription/{project_id}``);
* ``maintenance_session`` / ``maintenance_host``: the admin's URLs, given to
  the outbox (``fenix-api --session-webhook / --host-webhook``).

Because the rows are written before the engine marks a notification
delivered, and ``(url, session_id, seq)`` is unique, every notification is
queued exactly once per destination, also across a crash and restart.

A project notification that expects no reply (``reply_at`` null:
INSTANCE_ACTION_DONE, ADMIN_ACTION_DONE) is queued as *informational*: the
sender tries it only a few times, so that a manager that fails on a state it
does not know (the OPNFV Doctor VNFM answers 500 to ADMIN_ACTION_DONE) does
not hold back the questions queued behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx
from sqlalchemy import delete, func, select, update

from .. import signals
from ..engine import Engine
from ..errors import InvalidInput, NotFound
from ..store.schema import WebhookRow, WebhookTargetRow
from .shapes import (
    BODY_SHAPES,
    EVENT_TYPES,
    PROJECT_EVENT_TYPES,
    event_alarm_body,
    fenix_body,
)

__all__ = ["Delivery", "WebhookOutbox", "WebhookTarget", "check_url"]

log = logging.getLogger("fenix_core.rest")

PENDING, DELIVERED, REJECTED, EXPIRED, DROPPED = (
    "pending",
    "delivered",
    "rejected",
    "expired",
    "dropped",
)


@attrs.frozen
class WebhookTarget:
    """Where and how a project wants ``maintenance.planned`` delivered."""

    project_id: str
    url: str
    event_type: str = "maintenance.planned"
    body_shape: str = "fenix"

    def to_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


@attrs.frozen
class Delivery:
    """One queued POST, as the sender sees it."""

    id: int
    url: str
    event_type: str
    session_id: str
    seq: int
    body: Mapping[str, Any]
    attempts: int
    state: str
    last_error: str | None
    created_at: datetime
    informational: bool = False


def check_url(value: object, field: str = "url") -> str:
    """An absolute http(s) URL, or InvalidInput naming ``field``."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "expected an http(s) URL")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(field, f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidInput(field, f"expected an absolute http(s) URL, got {value!r}")
    if len(value) > 2048:
        raise InvalidInput(field, "longer than 2048 characters")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


class WebhookOutbox:
    """Queues the notifications of ``engine`` for HTTP delivery.

    ``public_url`` is this API's address as the managers reach it (for the
    ``instance_ids`` / ``reply_url`` links); it may be set later, before the
    first notification (the service sets it once its port is known).
    ``admin_urls`` maps ``"maintenance.session"`` / ``"maintenance.host"`` to
    the URLs that get those notifications (plain Fenix payloads).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        public_url: str = "http://127.0.0.1:8080",
        admin_urls: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.engine = engine
        self.public_url = public_url
        self.admin_urls: dict[str, list[str]] = {}
        for event_type, urls in (admin_urls or {}).items():
            if event_type not in ("maintenance.session", "maintenance.host"):
                raise InvalidInput(
                    "admin_urls", f"maintenance.session or maintenance.host, not {event_type!r}"
                )
            self.admin_urls[event_type] = [check_url(u, f"admin_urls.{event_type}") for u in urls]
        self._listeners: list[Any] = []
        self._on_queued: list[Any] = []
        self._connected = False

    # ------------------------------------------------------------------ signals

    def connect(self) -> WebhookOutbox:
        """Start queueing the engine's notifications."""
        if not self._connected:
            for name, signal in signals.SIGNALS.items():

                def receive(_sender: Engine, payload: dict[str, Any], _name: str = name) -> None:
                    self.queue_notification(_name, payload)

                signal.connect(receive, sender=self.engine, weak=False)
                self._listeners.append((signal, receive))
            self._connected = True
        return self

    def disconnect(self) -> None:
        for signal, receive in self._listeners:
            signal.disconnect(receive, sender=self.engine)
        self._listeners.clear()
        self._connected = False

    def on_queued(self, callback: Any) -> None:
        """Call ``callback()`` after rows were queued (the sender wakes up)."""
        self._on_queued.append(callback)

    def queue_notification(self, signal: str, payload: Mapping[str, Any]) -> int:
        """Queue one notification for its destinations; return how many rows
        were added (0 when it has no destination or was queued before)."""
        event_type = EVENT_TYPES[signal]
        body = fenix_body(signal, payload, self.public_url)
        items: list[tuple[str, str, dict[str, Any]]] = []
        informational = False
        if signal == "maintenance_planned":
            informational = payload.get("reply_at") is None
            target = self._target_row(str(payload["project_id"]))
            if target is not None:
                items.append((target.url, target.event_type, self._shape(target, body)))
        else:
            items += [(url, event_type, body) for url in self.admin_urls.get(event_type, ())]
        added = self._insert(
            str(payload["session_id"]), int(payload["seq"]), items, informational=informational
        )
        if added:
            for callback in self._on_queued:
                callback()
        return added

    @staticmethod
    def _shape(target: WebhookTarget, body: dict[str, Any]) -> dict[str, Any]:
        if target.body_shape == "event_alarm":
            return event_alarm_body(target.event_type, body, alarm_owner=target.project_id)
        return body

    def _insert(
        self,
        session_id: str,
        seq: int,
        items: Iterable[tuple[str, str, dict[str, Any]]],
        *,
        informational: bool,
    ) -> int:
        added = 0
        now = _now()
        with self.engine.transaction() as orm:
            for url, event_type, body in items:
                exists = orm.scalar(
                    select(WebhookRow.id).where(
                        WebhookRow.url == url,
                        WebhookRow.session_id == session_id,
                        WebhookRow.seq == seq,
                    )
                )
                if exists is not None:
                    continue
                orm.add(
                    WebhookRow(
                        url=url,
                        event_type=event_type,
                        session_id=session_id,
                        seq=seq,
                        body=body,
                        state=PENDING,
                        attempts=0,
                        informational=informational,
                        next_attempt_at=now,
                        last_error=None,
                        created_at=now,
                        finished_at=None,
                    )
                )
                added += 1
        return added

    # ------------------------------------------------------------------ targets

    def set_target(self, target: WebhookTarget) -> WebhookTarget:
        """Register (or replace) a project's webhook; the project then has a
        manager for the engine (``engine.subscribe``)."""
        check_url(target.url)
        if target.event_type not in PROJECT_EVENT_TYPES:
            raise InvalidInput("event_type", f"must be one of {', '.join(PROJECT_EVENT_TYPES)}")
        if target.body_shape not in BODY_SHAPES:
            raise InvalidInput("body_shape", f"must be one of {', '.join(BODY_SHAPES)}")
        self.engine.subscribe(target.project_id)
        with self.engine.transaction() as orm:
            row = orm.get(WebhookTargetRow, target.project_id)
            if row is None:
                orm.add(
                    WebhookTargetRow(
                        project_id=target.project_id,
                        url=target.url,
                        event_type=target.event_type,
                        body_shape=target.body_shape,
                        created_at=_now(),
                    )
                )
            else:
                row.url, row.event_type = target.url, target.event_type
                row.body_shape = target.body_shape
        return target

    def get_target(self, project_id: str) -> WebhookTarget:
        target = self._target_row(project_id)
        if target is None:
            raise NotFound("subscription", project_id)
        return target

    def list_targets(self) -> list[WebhookTarget]:
        with self.engine.transaction() as orm:
            rows = orm.scalars(select(WebhookTargetRow).order_by(WebhookTargetRow.project_id))
            return [_target(r) for r in rows]

    def delete_target(self, project_id: str) -> None:
        """Forget a project's webhook; the project no longer has a manager."""
        self.get_target(project_id)
        with self.engine.transaction() as orm:
            orm.execute(delete(WebhookTargetRow).where(WebhookTargetRow.project_id == project_id))
        self.engine.unsubscribe(project_id)

    def _target_row(self, project_id: str) -> WebhookTarget | None:
        with self.engine.transaction() as orm:
            row = orm.get(WebhookTargetRow, project_id)
            return None if row is None else _target(row)

    # ------------------------------------------------------------------ the queue

    def due(
        self, now: datetime, busy: Iterable[str] = (), *, claim_until: datetime | None = None
    ) -> list[Delivery]:
        """The oldest pending POST of each URL, if its time has come (URLs in
        ``busy`` are skipped: a POST to them is in flight).

        With ``claim_until``, each one returned is taken for the caller: its
        next attempt is moved to ``claim_until`` in the same transaction, and
        a row another sender on the same database (another fenix-api worker)
        took first is left out, so that a POST goes out once and one URL's
        POSTs one at a time. The POST's outcome ends it or sets its next
        attempt; a sender that dies during the POST leaves it to be tried
        again at ``claim_until``."""
        skip = set(busy)
        with self.engine.transaction() as orm:
            heads = self._heads(orm)
            rows = orm.scalars(
                select(WebhookRow)
                .where(WebhookRow.id.in_(heads), WebhookRow.next_attempt_at <= now)
                .order_by(WebhookRow.id)
            ).all()
            found = [_delivery(r) for r in rows if r.url not in skip]
            if claim_until is None or not found:
                return found
            taken = set(
                orm.scalars(
                    update(WebhookRow)
                    .where(
                        WebhookRow.id.in_([d.id for d in found]),
                        WebhookRow.state == PENDING,
                        WebhookRow.next_attempt_at <= now,
                    )
                    .values(next_attempt_at=claim_until)
                    .returning(WebhookRow.id)
                    .execution_options(synchronize_session=False)
                )
            )
            return [d for d in found if d.id in taken]

    def next_attempt_at(self) -> datetime | None:
        """When the earliest pending head-of-line POST is due."""
        with self.engine.transaction() as orm:
            heads = self._heads(orm)
            when: datetime | None = orm.scalar(
                select(func.min(WebhookRow.next_attempt_at)).where(WebhookRow.id.in_(heads))
            )
            return when

    @staticmethod
    def _heads(orm: Any) -> Any:
        return (
            select(func.min(WebhookRow.id))
            .where(WebhookRow.state == PENDING)
            .group_by(WebhookRow.url)
            .scalar_subquery()
        )

    def finish(self, delivery_id: int, state: str, error: str | None = None) -> None:
        """Record the end of a POST: delivered, rejected, expired or dropped."""
        with self.engine.transaction() as orm:
            orm.execute(
                update(WebhookRow)
                .where(WebhookRow.id == delivery_id)
                .values(
                    state=state,
                    finished_at=_now(),
                    attempts=WebhookRow.attempts + 1,
                    last_error=error,
                )
            )

    def retry_later(self, delivery_id: int, when: datetime, error: str) -> None:
        with self.engine.transaction() as orm:
            orm.execute(
                update(WebhookRow)
                .where(WebhookRow.id == delivery_id)
                .values(next_attempt_at=when, attempts=WebhookRow.attempts + 1, last_error=error)
            )

    def backlog(self) -> tuple[int, datetime | None]:
        """POSTs still pending: how many, and when the oldest was queued
        (wall clock; None when there is none). For metrics."""
        with self.engine.transaction() as orm:
            count, oldest = orm.execute(
                select(func.count(), func.min(WebhookRow.created_at)).where(
                    WebhookRow.state == PENDING
                )
            ).one()
        return int(count), oldest

    def deliveries(self, url: str | None = None) -> list[Delivery]:
        """Every queued POST (to ``url``), oldest first: for operators and tests."""
        with self.engine.transaction() as orm:
            query = select(WebhookRow).order_by(WebhookRow.id)
            if url is not None:
                query = query.where(WebhookRow.url == url)
            return [_delivery(r) for r in orm.scalars(query)]


def _target(row: WebhookTargetRow) -> WebhookTarget:
    return WebhookTarget(
        project_id=row.project_id,
        url=row.url,
        event_type=row.event_type,
        body_shape=row.body_shape,
    )


def _delivery(row: WebhookRow) -> Delivery:
    return Delivery(
        id=row.id,
        url=row.url,
        event_type=row.event_type,
        session_id=row.session_id,
        seq=row.seq,
        body=dict(row.body),
        attempts=row.attempts,
        state=row.state,
        last_error=row.last_error,
        created_at=row.created_at,
        informational=row.informational,
    )
