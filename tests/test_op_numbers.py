"""Operation numbers (the ``n`` of each key ``<session id>:<n>``) are derived
from the stored keys when a session is loaded: a step that starts an
operation writes no row only to count it (issue 18: fewer rows per step).
A session stored by an earlier release counted them in its ``ops``
component, or before that in its facts; those counts are kept as a floor."""

from __future__ import annotations

from sqlalchemy import select
from test_context import T0
from test_leases import UPGRADE, build_cloud
from test_ws_port import working_set

from fenix_core import Engine, SessionRequest
from fenix_core.clock import SimClock
from fenix_core.contract import HostView, ProjectView
from fenix_core.core.sql_store import SqlSessionStore
from fenix_core.core.working_set import ComponentRec, op_number
from fenix_core.core.ws_port import OPS_COMPONENT, SESSION_COMPONENT, WorkingSetAdapter
from fenix_core.states import HostState
from fenix_core.store.schema import OperationRow, SessionStateRow
from fenix_core.testing import TimedAction


def test_op_number_is_the_keys_last_number() -> None:
    assert op_number("00000000-0000-0000-0000-000000000001:12") == 12
    assert op_number("a:b:7") == 7
    assert op_number("s-1:") == 0
    assert op_number("legacy") == 0


def test_a_run_writes_no_counter_row_and_its_load_knows_the_last_number(
    database_url: str,
) -> None:
    cloud, upgrade = build_cloud(), TimedAction("upgrade", seconds=60)
    clock = SimClock()
    engine = Engine(database_url, clock=clock, plugins=[cloud, upgrade], load_entry_points=False)
    try:
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        engine.run_until_done(sid)
        assert engine.get_session(sid).state == "MAINTENANCE_DONE"
        with engine.database.connect() as db:
            components = set(
                db.scalars(
                    select(SessionStateRow.component).where(SessionStateRow.session_id == sid)
                )
            )
            keys = list(db.scalars(select(OperationRow.key).where(OperationRow.session_id == sid)))
        assert OPS_COMPONENT not in components
        # Every number once, none skipped: 1..N.
        assert sorted(op_number(k) for k in keys) == list(range(1, len(keys) + 1))
        assert len(keys) > 9  # numbers of two digits: the longest key is the last one
        # Every operation is handled (none is loaded), and the load still
        # knows the highest number: the next operation cannot reuse a key.
        loaded = SqlSessionStore(engine.database).load(sid)
        assert not loaded.ops
        assert loaded.last_op == len(keys)
    finally:
        engine.close()


def _adapter(**components: dict[str, object]) -> WorkingSetAdapter:
    """A loaded session's adapter whose stored components are ``components``."""
    hosts = [HostView("cmp-0", "compute", HostState.PENDING, 8, True, 0)]
    ws = working_set(hosts, [], [ProjectView("p1", True, None, None)])
    for name, body in components.items():
        ws.components[name] = ComponentRec(name, 1, body)
    return WorkingSetAdapter(ws, service="svc", admin_project_id="admin", now=T0)


def test_numbers_continue_after_the_highest_stored_or_counted() -> None:
    adapter = _adapter()
    adapter.ws.last_op = 4
    assert adapter.next_op_number() == 5
    assert adapter.next_op_number() == 6
    assert adapter.ws.last_op == 6
    # A session written by the previous release: its ``ops`` counter.
    legacy = _adapter(**{OPS_COMPONENT: {"counter": 9}})
    legacy.ws.last_op = 3
    assert legacy.next_op_number() == 10
    # Older still: the counter in the session's facts.
    older = _adapter(**{SESSION_COMPONENT: {"op_counter": 2}})
    assert older.next_op_number() == 3
    older.ws.last_op = 7
    assert older.next_op_number() == 8
