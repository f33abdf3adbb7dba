"""The inbox table behind ReplyIntake (fenix_core/core/replies.py).

What a reply is checked against, read from the session's rows in the
transaction that writes the reply (the check of a session this engine does
not hold in memory), and the one executemany per session that writes a
batch, through the statement the step's write binds
(:meth:`SqlSessionStore.insert_replies`). Statements are built once: a
reply is the hottest call from outside, and building a statement costs as
much as running it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from sqlalchemy import bindparam, or_, select
from sqlalchemy.engine import Connection

from ..errors import NotFound
from ..states import InstanceState
from ..store.schema import InboxRow, InstanceRow, ProjectRow, SessionRow, SessionStateRow
from .replies import AcceptedReply, ProjectFacts
from .sql_store import SqlSessionStore
from .ws_port import SESSION_COMPONENT

__all__ = ["SqlReplyFacts", "SqlReplyInbox"]

_PENDING_REPLY = (
    select(InboxRow.id)
    .where(
        InboxRow.session_id == bindparam("session_id"),
        InboxRow.project_id == bindparam("project_id"),
        InboxRow.processed_at.is_(None),
    )
    .limit(1)
)
_PROJECT = select(ProjectRow.state, ProjectRow.awaiting, ProjectRow.reply_at).where(
    ProjectRow.session_id == bindparam("session_id"),
    ProjectRow.project_id == bindparam("project_id"),
)
# Only the instances asked about, and those the reply names, are needed.
_INSTANCES = select(InstanceRow.instance_id, InstanceRow.state).where(
    InstanceRow.session_id == bindparam("session_id"),
    InstanceRow.project_id == bindparam("project_id"),
    or_(
        InstanceRow.state == InstanceState.ACTION_REQUESTED.value,
        InstanceRow.instance_id.in_(bindparam("named", expanding=True)),
    ),
)
_SESSION = select(SessionRow.state, SessionRow.workflow).where(
    SessionRow.id == bindparam("session_id")
)
# The allowed actions are the cloud's, kept in the session's component.
_SESSION_BODY = select(SessionStateRow.body).where(
    SessionStateRow.session_id == bindparam("session_id"),
    SessionStateRow.component == SESSION_COMPONENT,
)


class SqlReplyFacts:
    """A session's reply facts, read on demand in ``connection``'s transaction."""

    def __init__(self, connection: Connection, session_id: str, state: str, requires: bool) -> None:
        self._connection = connection
        self._session_id = session_id
        self.session_state = state
        self.requires_instance_actions = requires

    @property
    def allowed_actions(self) -> Sequence[str]:
        # Read only when a reply names instance actions: the JSON can be large.
        body = self._connection.scalar(_SESSION_BODY, {"session_id": self._session_id})
        return tuple((body or {}).get("allowed_actions", ()))

    def project(self, project_id: str) -> ProjectFacts | None:
        params = {"session_id": self._session_id, "project_id": project_id}
        found = self._connection.execute(_PROJECT, params).first()
        return None if found is None else ProjectFacts(found[0], bool(found[1]), found[2])

    def reply_pending(self, project_id: str) -> bool:
        params = {"session_id": self._session_id, "project_id": project_id}
        return self._connection.scalar(_PENDING_REPLY, params) is not None

    def instance_states(self, project_id: str, named: Collection[str]) -> Mapping[str, str]:
        params = {"session_id": self._session_id, "project_id": project_id, "named": list(named)}
        return {row.instance_id: row.state for row in self._connection.execute(_INSTANCES, params)}

    def note_reply(self, project_id: str) -> None:
        """The committed inbox row is what later checks find."""


class SqlReplyInbox:
    """One transaction on the session's tables, as ReplyIntake's InboxTransaction.

    ``requires_instance_actions(workflow name)`` says whether that workflow
    needs an action for every affected instance."""

    def __init__(
        self,
        connection: Connection,
        requires_instance_actions: Callable[[str], bool],
        store: SqlSessionStore,
    ) -> None:
        self._connection = connection
        self._requires = requires_instance_actions
        self._store = store

    def facts(self, session_id: str) -> SqlReplyFacts:
        found = self._connection.execute(_SESSION, {"session_id": session_id}).first()
        if found is None:
            raise NotFound("session", session_id, session_id=session_id)
        state, workflow = found
        return SqlReplyFacts(self._connection, session_id, state, self._requires(workflow))

    def insert(self, rows: Sequence[AcceptedReply]) -> None:
        self._store.insert_replies(self._connection, [(r.session_id, r.inbox_row()) for r in rows])
