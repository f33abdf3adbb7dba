"""Print docs/states.md: the state tables of fenix_core.states as Markdown,
with Mermaid state diagrams (rendered by sphinxcontrib-mermaid in the browser).

Regenerate after changing fenix_core/states.py::

    python docs/gen_states.py > docs/states.md

tests/test_docs.py fails when docs/states.md and this output differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from fenix_core.states import (
    FINAL_SESSION_STATES,
    HOST_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    SESSION_TRANSITIONS,
    HostState,
    InstanceState,
    SessionState,
)

# What each state means (from the comments in fenix_core/states.py). A state
# added there without a line here makes this script fail, so the page cannot
# silently lose a state. (Two dicts: the enums are StrEnums, and
# HostState.PENDING == InstanceState.PENDING == "PENDING".)
SESSION_MEANING: dict[SessionState, str] = {
    SessionState.AWAITING_APPROVAL: "created with `approval: required`: its plan is stored and "
    "shown; it holds no host and touches nothing until `approve_session` (a plan that no "
    "longer fits is re-planned and waits again)",
    SessionState.MAINTENANCE: "new (or retried): projects confirm, the start time is awaited, "
    "`pre` actions run",
    SessionState.SCALE_IN: "no host can be emptied: projects are asked to scale in",
    SessionState.PREPARE_MAINTENANCE: "a first host is being emptied (no compute maintained yet)",
    SessionState.START_MAINTENANCE: "hosts that are empty (and controllers) are being maintained",
    SessionState.PLANNED_MAINTENANCE: "the next host is being emptied onto maintained hosts",
    SessionState.MAINTENANCE_COMPLETE: "every host is maintained: `post` actions, projects "
    "scale back out",
    SessionState.MAINTENANCE_DONE: "finished",
    SessionState.MAINTENANCE_FAILED: "stopped with a reason; may be retried or deleted",
    SessionState.MAINTENANCE_CANCELLED: "cancelled by the admin (`engine.cancel`): the hosts "
    "it disabled are back in service; may be deleted",
}
HOST_MEANING: dict[HostState, str] = {
    HostState.PENDING: "waiting for its turn",
    HostState.DRAINING: "disabled, its instances are being moved away",
    HostState.DRAINED: "empty, about to be maintained",
    HostState.IN_MAINTENANCE: "taken into maintenance (disabled unless in place), actions running",
    HostState.MAINTAINED: "back in service",
    HostState.FAILED: "its maintenance failed (see the host's reason)",
    HostState.SKIPPED: "work on it was stuck and the escalation policy skipped it: left as it "
    "was (disabled if it was), not maintained",
    HostState.OUT_OF_SCOPE: "not maintained by this session; a migration target only",
    HostState.ADDING: "named in `add_hosts`: waiting for it to appear and be in service",
    HostState.ADDED: "brought into service during the session (or appeared in the cloud); "
    "a migration target only",
    HostState.DECOMMISSIONED: "emptied, actions run, left disabled for good (`HOST_REMOVED`)",
    HostState.REMOVED: "gone from the cloud during the session; its pending work was dropped "
    "(see the host's reason)",
}
INSTANCE_MEANING: dict[InstanceState, str] = {
    InstanceState.PENDING: "on a host that is not maintained yet",
    InstanceState.ACTION_REQUESTED: "its project was asked how to move it",
    InstanceState.ACTION_CHOSEN: "the action is known, waiting for its turn",
    InstanceState.IN_ACTION: "being moved (migration, or the manager's own action)",
    InstanceState.DONE: "on a host it does not have to leave again",
    InstanceState.GONE: "deleted (scaled in, re-created elsewhere)",
    InstanceState.FAILED: "moving it failed",
    InstanceState.OUT_OF_SCOPE: "on a host that this session does not maintain",
}


def _sources(transition: Mapping[str, object]) -> list[str]:
    source = transition["source"]
    if isinstance(source, str):
        return [str(source)]
    assert isinstance(source, Iterable)
    return [str(s) for s in source]


def _names(states: Iterable[Enum]) -> str:
    ordered = sorted(str(s.value) for s in states)
    return ", ".join(f"`{s}`" for s in ordered) if ordered else "none"


def session_states() -> list[str]:
    lines = ["| state | meaning (rolling workflow) |", "| --- | --- |"]
    for state in SessionState:
        lines.append(f"| `{state.value}` | {SESSION_MEANING[state]} |")
    return lines


def session_table() -> list[str]:
    lines = ["| trigger | from | to |", "| --- | --- | --- |"]
    for t in SESSION_TRANSITIONS:
        sources = ", ".join(f"`{s}`" for s in _sources(t))
        lines.append(f"| `{t['trigger']}` | {sources} | `{t['dest']}` |")
    return lines


def row_table(table: Mapping[Enum, Iterable[Enum]], meaning: Mapping[Enum, str]) -> list[str]:
    lines = ["| state | meaning | may become |", "| --- | --- | --- |"]
    for state, targets in table.items():
        lines.append(f"| `{state.value}` | {meaning[state]} | {_names(targets)} |")
    return lines


def session_diagram() -> list[str]:
    lines = [
        "```mermaid",
        "stateDiagram-v2",
        f"    [*] --> {SessionState.MAINTENANCE.value}",
        f"    [*] --> {SessionState.AWAITING_APPROVAL.value}",
    ]
    for t in SESSION_TRANSITIONS:
        for source in _sources(t):
            lines.append(f"    {source} --> {t['dest']} : {t['trigger']}")
    for state in sorted(s.value for s in FINAL_SESSION_STATES):
        lines.append(f"    {state} --> [*]")
    lines.append("```")
    return lines


def row_diagram(table: Mapping[Enum, Iterable[Enum]], initial: Enum) -> list[str]:
    """A Mermaid state diagram of a host or instance transition table."""
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {initial.value}"]
    for state, targets in table.items():
        for target in sorted(str(t.value) for t in targets):
            lines.append(f"    {state.value} --> {target}")
    lines.append("```")
    return lines


def render() -> str:
    final = ", ".join(f"`{s}`" for s in sorted(s.value for s in FINAL_SESSION_STATES))
    parts = [
        "# States and transitions",
        "",
        "<!-- Generated by docs/gen_states.py from fenix_core/states.py; do not edit.",
        "     Regenerate: python docs/gen_states.py > docs/states.md -->",
        "",
        "These tables are what the engine enforces: a workflow changes a session's",
        "state only along a transition listed here (`ctx.transition`, `ctx.fail`; the",
        "trigger names the transition, and `cancel` and `retry` are the admin's), and a",
        "host or instance only to a state its table allows (`ctx.set_host_state`,",
        "`ctx.set_instance_state`). Anything else raises",
        "`fenix_core.contract.ContractError` naming both states, and nothing of the",
        "refused change is recorded. Setting a host or instance to the state it",
        "already has is always allowed.",
        "",
        "## Session lifecycle",
        "",
        f"Final states: {final}. A new session starts in `MAINTENANCE`, or in",
        "`AWAITING_APPROVAL` when its request says `approval: required`.",
        "",
        *session_states(),
        "",
        *session_table(),
        "",
        *session_diagram(),
        "",
        "## Hosts",
        "",
        *row_table(HOST_TRANSITIONS, HOST_MEANING),
        "",
        *row_diagram(HOST_TRANSITIONS, HostState.PENDING),
        "",
        "## Instances",
        "",
        *row_table(INSTANCE_TRANSITIONS, INSTANCE_MEANING),
        "",
        *row_diagram(INSTANCE_TRANSITIONS, InstanceState.PENDING),
    ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
