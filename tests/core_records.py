"""A session's records as the core stored them, read through the store's
public API: what a test of the core checks beyond today's ``SessionView``
(hosts out of scope, each host's reason, every instance's host and state)."""

from __future__ import annotations

from typing import Any

from fenix_core.core.sql_store import SqlSessionStore


class StoredSession:
    """``hosts`` name -> state, ``reasons`` name -> reason, ``instances``
    id -> (host, state), over every record of the session."""

    def __init__(self, engine: Any, session_id: str) -> None:
        store = SqlSessionStore(engine.database)
        try:
            ws = store.load(session_id)
        finally:
            store.close()
        self.hosts = {h.name: h.state for h in ws.hosts.values()}
        self.reasons = {h.name: h.reason for h in ws.hosts.values()}
        self.instances = {i.instance_id: (i.host, i.state) for i in ws.instances.values()}
