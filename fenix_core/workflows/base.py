"""Helpers every workflow on the contract shares: asking projects, default
actions, replies, and running a sequence of action plug-ins one by one.

Nothing here keeps state between steps: what a helper needs to remember is
passed in (a counter of the caller's ``ComponentState``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..contract import (
    ProjectReply,
    ReplyOutcome,
    RunAction,
    SessionContext,
    TimerFired,
    Workflow,
)
from ..controls import jittered_backoff
from ..model import ActionSpec, host_action_types
from ..states import InstanceAction, InstanceState
from .components.dialogue import DEADLINE, deadline_timer

__all__ = [
    "ALLOWED_ACTIONS",
    "IN_SCOPE",
    "WorkflowBase",
    "actions_of",
    "allowed_actions",
    "awaited_of",
    "deadline_timer",
    "default_action",
    "host_action_types",
    "retry_delay",
]


#: How instances may leave a host until the context carries the cloud
#: driver's own list (today ``data["allowed_actions"]``).
ALLOWED_ACTIONS: tuple[str, ...] = (
    InstanceAction.LIVE_MIGRATE,
    InstanceAction.MIGRATE,
    InstanceAction.OWN_ACTION,
    InstanceAction.EVICT,
)
#: Instance states that still count as the session's work.
IN_SCOPE = frozenset(InstanceState) - {InstanceState.GONE, InstanceState.OUT_OF_SCOPE}


def allowed_actions(ctx: SessionContext) -> Sequence[str]:
    """The instance actions the cloud driver offers (all if not known)."""
    return ctx.session.allowed_actions or ALLOWED_ACTIONS


def retry_delay(rounds: int, seed: str) -> timedelta:
    """How long a move (or the waves stuck for room) waits before its next
    round: a jittered back-off from 30 s, doubling, at most 600 s, the same
    for the same ``seed`` (the session, or the session and the instance)."""
    return timedelta(seconds=jittered_backoff(max(1, rounds), base=30.0, cap=600.0, seed=seed))


def default_action(live_migratable: bool, allowed: Sequence[str] = ALLOWED_ACTIONS) -> str:
    """How the engine moves an instance itself: live if it can."""
    for action in (InstanceAction.LIVE_MIGRATE, InstanceAction.MIGRATE, InstanceAction.EVICT):
        if action in allowed and (action != InstanceAction.LIVE_MIGRATE or live_migratable):
            return action.value
    return allowed[0]


def actions_of(specs: Iterable[ActionSpec], *types: str) -> list[ActionSpec]:
    """The request's actions of these types, in run order (type, order, name)."""
    rank = {t: i for i, t in enumerate(types)}
    return sorted(
        (a for a in specs if a.type in rank), key=lambda a: (rank[a.type], a.order, a.plugin)
    )


def awaited_of(reply_state: str) -> tuple[bool, str]:
    """``ACK_X`` -> (True, X); ``NACK_X`` -> (False, X)."""
    ack, _, awaited = reply_state.partition("_")
    return ack == "ACK", awaited


class WorkflowBase(Workflow):
    """The dialogue with projects; subclasses say what an answer means."""

    def ask_projects(
        self,
        ctx: SessionContext,
        state: str,
        instances: Mapping[str, Sequence[str]],
        *,
        allowed_actions: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        actions_at: datetime | None = None,
    ) -> None:
        """Send ``state`` to the managed projects among ``instances``' keys,
        with the request's metadata unless ``metadata`` is given, and a
        deadline ``request.reply_window(state)`` from now for each;
        ``actions_at``: when the instances may be acted on at the earliest."""
        managed = {}
        for project_id, ids in sorted(instances.items()):
            project = ctx.projects.get(project_id)
            if project is not None and project.managed:
                managed[project_id] = list(ids)
        if not managed:
            return
        ctx.ask(
            state,
            managed,
            allowed_actions=allowed_actions,
            metadata=ctx.request.metadata if metadata is None else metadata,
            actions_at=actions_at,
        )
        due = ctx.now + timedelta(seconds=ctx.request.reply_window(state))
        for project_id in managed:
            ctx.set_timer(deadline_timer(project_id), due, state=state)

    def on_reply(self, ctx: SessionContext, reply: ProjectReply) -> ReplyOutcome:
        ctx.cancel_timer(deadline_timer(reply.project_id))
        ack, awaited = awaited_of(reply.state)
        if ack:
            self.answered(ctx, reply.project_id, awaited, reply.instance_actions)
            return ReplyOutcome(accepted=True)
        self.refused(ctx, reply.project_id, awaited, f"answered NACK_{awaited}")
        if ctx.request.reply_policy == "fail":
            return ReplyOutcome(accepted=False, why="refused")
        return ReplyOutcome(accepted=False, why="refused: acting by default")

    def on_timer(self, ctx: SessionContext, timer: TimerFired) -> None:
        if timer.name.startswith(DEADLINE):
            project_id = timer.name[len(DEADLINE) :]
            awaited = timer.data.get("state")
            project = ctx.projects.get(project_id)
            if project is None or awaited is None or project.awaiting != awaited:
                return  # answered meanwhile (or no longer asked)
            self.refused(
                ctx, project_id, awaited, f"did not answer {awaited} by {timer.due.isoformat()}"
            )

    def refused(self, ctx: SessionContext, project_id: str, awaited: str, why: str) -> None:
        """A NACK or a missed deadline: fail, or act for the project by
        default (``reply_policy``)."""
        if ctx.request.reply_policy == "fail":
            ctx.stop_awaiting(project_id)
            ctx.fail(f"project {project_id} {why}")
            return
        ctx.stop_awaiting(project_id, state=f"DEFAULT_{awaited}")
        self.answered(ctx, project_id, awaited, {})

    def answered(
        self,
        ctx: SessionContext,
        project_id: str,
        awaited: str,
        instance_actions: Mapping[str, str],
    ) -> None:
        """A project answered ``awaited`` (or is treated as if it had, with no
        instance actions: the defaults apply)."""

    def run_sequence(
        self, ctx: SessionContext, specs: Sequence[ActionSpec], done: int, sequence: str
    ) -> bool:
        """Start the next of ``specs`` after the ``done`` first; True when all
        ran. The caller counts ends in its state and must not call this while
        one runs."""
        if done >= len(specs):
            return True
        ctx.submit(RunAction(specs[done], sequence))
        return False
