"""The whole translation of one session of the release before the core:
the rolling and session parts (:mod:`.release_sessions`) and the
constrained waves (:mod:`.release_constrained`), put together."""

from __future__ import annotations

from .release_constrained import constrained_state, wave_hosts
from .release_frozen import PipelineState, RollingState
from .release_sessions import (
    FINAL,
    READ_KEYS,
    ROLLING_WORKFLOWS,
    SESSION_KEYS,
    CoreState,
    OldSession,
    host_columns,
    pipeline_state,
    rolling_state,
    session_body,
    timers,
)

__all__ = ["translate"]


def translate(session: OldSession) -> CoreState:
    """Everything the core reads of ``session`` (raises :class:`Untranslatable`)."""
    unknown = sorted(
        k
        for k in session.data
        if k not in SESSION_KEYS and k not in READ_KEYS and not k.endswith("_actions_done")
    )
    if unknown:
        raise session.fail(f"its data holds {', '.join(map(repr, unknown))}, unknown here")
    if session.workflow not in ROLLING_WORKFLOWS and session.workflow != "constrained":
        raise session.fail(
            f"it runs the plug-in workflow {session.workflow!r}, whose state cannot be "
            "carried over to the contract workflows"
        )
    hosts = host_columns(session)
    out = CoreState(hosts=hosts)
    waves = wave_hosts(session) if session.workflow == "constrained" else frozenset()
    rolling = rolling_state(session, hosts, waves)
    out.components["session"] = session_body(session)
    out.components[PipelineState.component] = pipeline_state(session).to_json()
    if session.workflow == "constrained":
        constrained = constrained_state(session, rolling, out)
        out.components[constrained.component] = constrained.to_json()
    else:
        out.timers = timers(session)
    if rolling.drain_host is None and rolling.moving is None and rolling.phase != "waves":
        _no_stray_moves(session)
    out.components[RollingState.component] = rolling.to_json()
    return out


def _no_stray_moves(session: OldSession) -> None:
    """Outside a drain the rolling workflow follows no retry of its own."""
    if session.state in FINAL:
        return
    for timer in session.timers:
        if timer.kind == "retry_move":
            raise session.fail(
                f"a migration of {timer.data.get('instance_id')} waits for its retry outside "
                "a drain"
            )
