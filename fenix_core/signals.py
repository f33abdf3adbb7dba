"""Notifications, as blinker signals.

Each signal is sent with the :class:`~fenix_core.engine.Engine` as sender and one
keyword argument, ``payload``: a JSON-serialisable dict with the Fenix v1 field
names plus ``seq``, the notification's sequence number within its session
(notifications are delivered at least once; a receiver de-duplicates on
``(session_id, seq)``). Connect per engine::

    from fenix_core import signals
    signals.maintenance_planned.connect(on_planned, sender=engine)

* ``maintenance_session``: ``{service, session_id, state, percent_done, reason}``
  on every session state change (admin view).
* ``maintenance_host``: ``{service, session_id, host, state, project_id}`` with
  state ``IN_MAINTENANCE`` before a host is taken and ``MAINTENANCE_COMPLETE``
  when it is back in use (infrastructure services).
* ``maintenance_planned``: ``{service, session_id, project_id, state,
  instance_ids, allowed_actions, reply_at, actions_at, metadata}`` to one
  project (its application manager). ``reply_at`` / ``actions_at`` are ISO 8601
  UTC strings or null.

A receiver may call ``engine.reply()`` from inside the handler. A receiver that
raises is logged and does not stop the others.
"""

from __future__ import annotations

from blinker import Namespace, Signal

__all__ = ["SIGNALS", "maintenance_host", "maintenance_planned", "maintenance_session"]

_namespace = Namespace()

maintenance_session: Signal = _namespace.signal(
    "maintenance_session", doc="Session state changed (admin view)."
)
maintenance_host: Signal = _namespace.signal(
    "maintenance_host", doc="A host goes into or comes out of maintenance."
)
maintenance_planned: Signal = _namespace.signal(
    "maintenance_planned", doc="A notification to one project's application manager."
)

SIGNALS: dict[str, Signal] = {
    "maintenance_session": maintenance_session,
    "maintenance_host": maintenance_host,
    "maintenance_planned": maintenance_planned,
}
