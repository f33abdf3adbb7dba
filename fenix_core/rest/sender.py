"""The webhook sender: POSTs the queued notifications, in order per URL.

One background thread picks the oldest pending POST of every URL whose time
has come and hands it to a small pool of workers; a URL never has two POSTs
in flight, so each destination receives its notifications in queue order. A
failed POST (connection error, timeout, 5xx, 408, 429) is retried after an
exponential back-off with jitter (so that many senders do not hammer a
recovering endpoint in step), for up to ``max_age``; the POSTs queued behind
it wait. A 4xx other than 408/429 is final (``rejected``): the endpoint says
the request itself is wrong, and retrying would block its queue forever.

An *informational* POST (a project notification that expects no reply) is
tried ``informational_attempts`` times at most, then ``dropped``: the
questions queued behind it must not wait a day because a manager fails on a
notification it does not care about. (AODH, which delivered Fenix's
notifications, did not retry a failed POST at all.)
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from ..errors import InvalidInput
from .webhooks import DELIVERED, DROPPED, EXPIRED, REJECTED, Delivery, WebhookOutbox

__all__ = ["WebhookSender"]

log = logging.getLogger("fenix_core.rest")

_RETRYABLE_4XX = (408, 429)


class WebhookSender:
    """Delivers ``outbox``'s queue over HTTP until :meth:`stop`.

    ``base_delay`` / ``max_delay``: the back-off after the n-th failure is
    drawn from [d/2, d] with d = min(max_delay, base_delay * 2**(n-1)).
    ``timeout``: seconds per POST. ``max_age``: a POST still undelivered this
    long after it was queued is given up (``expired``).
    ``informational_attempts``: how many times an informational POST is tried
    before it is ``dropped``. ``headers`` are added to every POST (e.g. a
    token the receivers check).
    """

    def __init__(
        self,
        outbox: WebhookOutbox,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        max_age: timedelta = timedelta(days=1),
        informational_attempts: int = 3,
        workers: int = 4,
        headers: dict[str, str] | None = None,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.outbox = outbox
        self._client = client or httpx.Client(timeout=timeout)
        self._own_client = client is None
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_age = max_age
        if isinstance(informational_attempts, bool) or not (
            isinstance(informational_attempts, int) and informational_attempts >= 1
        ):
            raise InvalidInput("informational_attempts", "must be an integer >= 1")
        self.informational_attempts = informational_attempts
        self.headers = dict(headers or {})
        self._rng = rng or random.Random()
        self._now = now or (lambda: datetime.now(UTC))
        # How long a POST taken from the queue is this sender's alone (other
        # fenix-api workers' senders leave it): past any POST's timeout.
        self._claim = timedelta(seconds=max(60.0, 2 * timeout))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fenix-webhook")
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        outbox.on_queued(self.wake)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> WebhookSender:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fenix-webhook-sender", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop picking new POSTs and wait for those in flight."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)
        if self._own_client:
            self._client.close()

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._dispatch()
                timeout = self._sleep_seconds()
            except Exception:  # a database hiccup must not end delivery for good
                log.exception("webhook sender: reading the queue failed")
                timeout = self.max_delay
            self._wake.wait(timeout)
            self._wake.clear()

    def _dispatch(self) -> int:
        with self._busy_lock:
            busy = set(self._busy)
        now = self._now()
        due = self.outbox.due(now, busy, claim_until=now + self._claim)
        for delivery in due:
            with self._busy_lock:
                self._busy.add(delivery.url)
            self._pool.submit(self._deliver, delivery)
        return len(due)

    def _sleep_seconds(self) -> float:
        when = self.outbox.next_attempt_at()
        if when is None:
            return self.max_delay
        return min(self.max_delay, max(0.0, (when - self._now()).total_seconds()))

    def _deliver(self, delivery: Delivery) -> None:
        try:
            self.send_one(delivery)
        except Exception:
            log.exception(
                "webhook %s to %s: recording the outcome failed", delivery.id, delivery.url
            )
        finally:
            with self._busy_lock:
                self._busy.discard(delivery.url)
            self._wake.set()

    def send_one(self, delivery: Delivery) -> str:
        """POST one delivery and record the outcome; returns the new state
        (``"pending"`` when it will be retried)."""
        headers = {
            **self.headers,
            "X-Fenix-Event-Type": delivery.event_type,
            "X-Fenix-Delivery": f"{delivery.session_id}/{delivery.seq}",
        }
        try:
            response = self._client.post(delivery.url, json=delivery.body, headers=headers)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            code = response.status_code
            if 200 <= code < 300:
                self.outbox.finish(delivery.id, DELIVERED)
                return DELIVERED
            error = f"HTTP {code}"
            if 400 <= code < 500 and code not in _RETRYABLE_4XX:
                log.error("webhook to %s rejected (%s); not retried", delivery.url, error)
                self.outbox.finish(delivery.id, REJECTED, error)
                return REJECTED
        now = self._now()
        if now - delivery.created_at >= self.max_age:
            log.error(
                "webhook to %s undeliverable since %s: %s", delivery.url, delivery.created_at, error
            )
            self.outbox.finish(delivery.id, EXPIRED, error)
            return EXPIRED
        if delivery.informational and delivery.attempts + 1 >= self.informational_attempts:
            log.warning(
                "informational webhook to %s failed %d times (%s); dropped so that the "
                "POSTs behind it go out",
                delivery.url,
                delivery.attempts + 1,
                error,
            )
            self.outbox.finish(delivery.id, DROPPED, error)
            return DROPPED
        delay = self.backoff(delivery.attempts + 1)
        log.warning("webhook to %s failed (%s); retry in %.2f s", delivery.url, error, delay)
        self.outbox.retry_later(delivery.id, now + timedelta(seconds=delay), error)
        return "pending"

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(failures - 1, 30))
        return self._rng.uniform(ceiling / 2, ceiling)
