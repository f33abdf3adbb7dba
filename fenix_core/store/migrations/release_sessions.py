"""What migration 0008 makes of a session the previous release's engine wrote:
the state the core and the contract workflows read (pure: rows in, rows out).

The previous engine kept a session's progress in ``sessions.phase``, the
``sessions.data`` dict, the hosts' pipeline stage (its own list of stages),
its operations and its timers (its own timer kinds). The core reads:

* the ``pipeline`` component (``PipelineState``) and, per host, the
  admission times (``started_at`` / ``finished_at``: a host admitted and not
  finished is in flight) and whether it is enabled now;
* the workflow's own components (``RollingState``, for the constrained
  workflow also ``ConstrainedState`` and the waves' host stages:
  :mod:`.release_constrained`; both put together by
  :func:`.release_translate.translate`);
* the ``session`` component (flat: allowed actions, the cloud's constraints,
  the operation counter, labels, the approval record);
* timers under the contract's names (``reply_deadline:<project>``,
  ``retry_move:<instance>``, ``pipeline:wait``, ``waves``, ``start``).

The bodies are built with copies of the core's classes as they were in the
release of this migration (:mod:`.release_frozen`): what is written is what
that release read, whatever the code installed when it runs (a later
release converts it through its ``from_json``). A state this translation cannot carry
over faithfully raises :class:`Untranslatable` (the migration refuses the
upgrade, naming the session)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from . import release_frozen as S
from .release_frozen import (
    OldRequest,
    PipelineState,
    RollingState,
    budget_hosts,
    deadline_timer,
    domains,
    resolve_cap,
    rolling_stages,
)

__all__ = [
    "SESSION_KEYS",
    "CoreState",
    "OldHost",
    "OldInstance",
    "OldOp",
    "OldProject",
    "OldSession",
    "OldTimer",
    "Untranslatable",
    "legacy_stages",
    "rolling_state",
    "v2_stages",
]

#: Keys of ``sessions.data`` the core keeps in the flat ``session`` component.
SESSION_KEYS = frozenset(
    {"allowed_actions", "cloud_constraints", "op_counter", "host_guard", "host_labels", "approval"}
)
#: Keys read into the pipeline, the workflows' state or the host records
#: (first_drained: a flag of the open hosts' stage), or recomputed by the
#: contract workflows from the records (drain_projects, admin_done,
#: queued_hosts, ctl_stuck, ctl_moved_off, refused_targets of instances not
#: moving).
READ_KEYS = frozenset(
    {
        "paused", "pause_reason", "ctl_gate", "ctl_waiting", "ctl_stuck", "ctl_last_host",
        "ctl_started", "ctl_finished", "ctl_skipped", "ctl_moved_off", "hosts_listed",
        "down_hosts", "admin_done", "current_host", "drain_host", "drain_projects",
        "scale_in_rounds", "scale_in_freed", "scale_in_load", "wave", "refused_targets",
        "drained_controllers", "first_drained", "queued_hosts",
        "pre_actions_done", "post_actions_done",
    }
)  # fmt: skip
#: Built-in workflows whose state is translated (a plug-in's is not known here).
ROLLING_WORKFLOWS = frozenset({"rolling", "decommission"})
FINAL = S.FINAL_SESSION_STATES
_DRAIN = frozenset({S.PREPARE_MAINTENANCE, S.PLANNED_MAINTENANCE})
#: The previous engine's first stage of a host it disabled before anything
#: else (the contract workflows disable after IN_MAINTENANCE).
DISABLE_FIRST = "disable_first"
#: The operation kind each of the previous engine's host stages runs.
STAGE_OP = {
    DISABLE_FIRST: "disable_host",
    "verify_empty": "inventory",
    "host_up": "host_up",
    "enable": "enable_host",
}


def stage_busy(session: OldSession, host: OldHost) -> bool:
    """Whether the operation of the host's current stage (previous engine's
    list) runs, or ended and was not handled yet."""
    stages = legacy_stages(session, host)
    if host.stage >= len(stages):
        return False
    here = stages[host.stage]
    kind = "action" if here.startswith("action:") else STAGE_OP.get(here)
    return kind is not None and bool(session.open_ops(kind, host.name))


class Untranslatable(Exception):
    """The session's state cannot be carried over faithfully."""

    def __init__(self, session_id: str, why: str) -> None:
        super().__init__(
            f"session {session_id}: {why}; let it finish (or cancel it) on the previous "
            "release, then upgrade"
        )
        self.session_id = session_id


@attrs.frozen
class OldHost:
    name: str
    type: str
    state: str
    stage: int
    enabled: bool
    disabled_by_session: bool


@attrs.frozen
class OldInstance:
    instance_id: str
    host: str
    state: str
    attempts: int
    not_before: datetime | None
    impacted_until: datetime | None


@attrs.frozen
class OldProject:
    project_id: str
    state: str | None
    awaiting: bool
    reply_at: datetime | None


@attrs.frozen
class OldOp:
    """An operation the previous engine had not handled yet (running, or ended)."""

    kind: str
    host: str | None
    instance_id: str | None
    params: Mapping[str, Any]


@attrs.frozen
class OldTimer:
    kind: str
    due: datetime
    data: Mapping[str, Any]


@attrs.frozen
class OldSession:
    id: str
    workflow: str
    state: str
    phase: str
    version: int
    data: Mapping[str, Any]
    request: OldRequest
    hosts: Mapping[str, OldHost]
    instances: Mapping[str, OldInstance]
    projects: Mapping[str, OldProject]
    ops: Sequence[OldOp]
    timers: Sequence[OldTimer]

    def open_ops(self, kind: str | None = None, host: str | None = None) -> list[OldOp]:
        return [
            op
            for op in self.ops
            if (kind is None or op.kind == kind) and (host is None or op.host == host)
        ]

    def fail(self, why: str) -> Untranslatable:
        return Untranslatable(self.id, why)


@attrs.define
class CoreState:
    """What the migration writes for one session."""

    components: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: Host -> its columns as the core reads them.
    hosts: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: Instance -> changed columns.
    instances: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: Every timer of the session: (name, due, data).
    timers: list[tuple[str, datetime, dict[str, Any]]] = attrs.field(factory=list)


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


# --------------------------------------------------------------------------- host stages


def legacy_stages(session: OldSession, host: OldHost) -> list[str]:
    """The previous engine's stages of ``host`` (``workflows.base.host_stages``),
    its k-th action named ``action:k`` as the contract workflows name it."""
    drains = host.type == "compute" or host.name in (session.data.get("drained_controllers") or ())
    toggles = drains and host.enabled
    stages = [DISABLE_FIRST] if toggles else []
    if drains:
        stages.append("verify_empty")
    stages.append("notify_in")
    stages += [f"action:{k}" for k in range(session.request.actions_on(host.type))]
    if host.name in session.request.decommission_hosts:
        return [*stages, "decommission"]
    stages.append("host_up")
    if toggles:
        stages.append("enable")
    return [*stages, "notify_complete"]


def v2_stages(session: OldSession, host: OldHost) -> list[str]:
    """The contract workflows' stages of ``host``, as the workflow lists them."""
    return rolling_stages(session.request, host.name, host.type)


def stage_in_v2(session: OldSession, host: OldHost, busy: bool) -> int:
    """The contract's stage index for where ``host`` stands in the previous
    engine's stages. ``busy``: the operation of that stage runs; its end
    advances the contract's index by one, so the index is the one before the
    stage the work goes on with (-1 when that is the first: a host being
    disabled before its IN_MAINTENANCE where the contract disables later)."""
    new = v2_stages(session, host)
    alias = {}
    if (
        "disable" in new
        and "verify_empty" in new
        and new.index("disable") < new.index("verify_empty")
    ):
        alias[DISABLE_FIRST] = "disable"  # the contract disables first too
    old = [alias.get(s, s) for s in legacy_stages(session, host)]
    if host.stage >= len(old):
        return len(new)
    here = old[host.stage]
    if busy and here in new:
        return new.index(here)
    later = old[host.stage + 1 :] if busy else old[host.stage :]
    following = next((new.index(s) for s in later if s in new), len(new))
    return following - 1 if busy else following


# --------------------------------------------------------------------------- the pipeline


def pipeline_state(session: OldSession) -> PipelineState:
    """``ctl_*``, ``paused`` and the gate in flight as the pipeline's counters
    (what :class:`~fenix_core.core.pipeline.HostPipeline` would hold after
    admitting and finishing the same hosts at the same times)."""
    data, request = session.data, session.request
    started = {h: _time(t) for h, t in dict(data.get("ctl_started") or {}).items()}
    finished = {h: _time(t) for h, t in dict(data.get("ctl_finished") or {}).items()}
    removed = {h.name for h in session.hosts.values() if h.state == S.REMOVED}
    skipped = set(data.get("ctl_skipped") or ())
    in_flight = [h for h in started if h not in finished and h not in skipped | removed]
    durations = [
        (end - started_at).total_seconds()
        for h, end in finished.items()
        if (started_at := started.get(h)) is not None and end is not None and h not in removed
    ]
    hosts = budget_hosts(h.state for h in session.hosts.values())
    caps = (request.max_hosts_per_hour, request.max_hosts_per_day)
    keep = max((resolve_cap(c, hosts) for c in caps if c is not None), default=0)
    starts = sorted(t.isoformat() for t in started.values() if t is not None)
    labels = data.get("host_labels") or {}
    open_domains: dict[str, dict[str, int]] = {}
    for key in request.topology_keys:
        counts: dict[str, int] = {}
        for host in in_flight:
            for domain in domains(labels.get(host) or {}, key):
                counts[domain] = counts.get(domain, 0) + 1
        if counts:
            open_domains[key] = counts
    gate = data.get("ctl_gate") or {}
    gate_host = gate.get("host")
    waiting = data.get("ctl_waiting") or {}
    last_finished = max((t for t in finished.values() if t is not None), default=None)
    return PipelineState(
        paused=bool(data.get("paused")),
        pause_reason=data.get("pause_reason"),
        in_maintenance=len(in_flight),
        started=len(started),
        finished=len(started) - len(in_flight),
        recent_starts=starts[-keep:] if keep else [],
        last_finished=last_finished.isoformat() if last_finished is not None else None,
        last_host=data.get("ctl_last_host"),
        durations_count=len(durations),
        durations_sum=float(sum(durations)),
        durations_max=float(max(durations, default=0.0)),
        gate_host=gate_host,
        gate_passed=int(gate.get("passed", 0)) if gate_host else 0,
        gate_running=bool(gate_host)
        and any(op.params.get("host") == gate_host for op in session.open_ops("gate")),
        waiting_cause=waiting.get("cause"),
        waiting_reason=waiting.get("reason"),
        waiting_until=waiting.get("until"),
        open_domains=open_domains,
    )


def host_columns(session: OldSession) -> dict[str, dict[str, Any]]:
    """Per host: admission times from ``ctl_started`` / ``ctl_finished``, and
    whether it is enabled now. The previous engine kept ``enabled`` as the
    inventory found it and set ``disabled_by_session`` when it *started* a
    DisableHost; the core sets both when the operation ends, so a host whose
    DisableHost still runs is enabled and not yet the session's."""
    data = session.data
    started = dict(data.get("ctl_started") or {})
    finished = dict(data.get("ctl_finished") or {})
    out: dict[str, dict[str, Any]] = {}
    for host in session.hosts.values():
        disabling = bool(session.open_ops("disable_host", host.name))
        ours = host.disabled_by_session and not disabling
        out[host.name] = {
            "started_at": _time(started.get(host.name)),
            "finished_at": _time(finished.get(host.name)) if host.name in started else None,
            "enabled": host.enabled and not ours,
            "disabled_by_session": ours,
            "stage": 0,
        }
    return out


# --------------------------------------------------------------------------- the rolling part


def _phase_of_maintenance(session: OldSession, st: RollingState) -> str:
    phase = session.phase
    if phase in ("", "confirm") and session.version == 0:
        return "confirm"  # not started yet: the core starts it
    if phase in ("confirm", "wait_start"):
        return phase
    if phase != "pre":
        raise session.fail(f"MAINTENANCE phase {phase!r} is not one this upgrade knows")
    listing = session.open_ops("list_hosts")
    if any(op.params.get("before") == "SCALE_IN" for op in listing):
        return "listing"
    pre = session.request.count("pre")
    if st.pre_done >= pre and not st.action_running and (listing or st.hosts_listed):
        st.adding = bool(listing) or any(
            session.open_ops(host=h.name) for h in session.hosts.values() if h.state == S.ADDING
        )
        return "hosts"
    return "pre"


def _drain(session: OldSession, st: RollingState, hosts: Mapping[str, dict[str, Any]]) -> None:
    """PREPARE/PLANNED_MAINTENANCE of one host (the rolling way): disable it
    first, then ask and move (the previous engine may have moved while it
    was enabled: the contract disables it now, moves in flight go on)."""
    name = session.data.get("drain_host")
    if name is None or name not in session.hosts:
        st.phase = ""
        return
    st.drain_host = name
    if session.open_ops("disable_host", name):
        st.phase = "disabling"
    elif hosts[name]["enabled"]:
        st.phase = "disable"
    else:
        st.phase = "drain"
    refused = dict(session.data.get("refused_targets") or {})
    moving = [
        op.instance_id
        for op in session.open_ops("move")
        if op.params.get("source") == name and op.instance_id
    ]
    retrying = [
        str(t.data.get("instance_id"))
        for t in session.timers
        if t.kind == "retry_move"
        and session.instances.get(str(t.data.get("instance_id"))) is not None
        and session.instances[str(t.data.get("instance_id"))].host == name
    ]
    if len(moving) + len(retrying) > 1:
        raise session.fail(f"more than one migration off {name} ({', '.join(moving + retrying)})")
    if moving or retrying:
        iid = (moving or retrying)[0]
        st.moving = iid
        st.move_attempts = session.instances[iid].attempts if iid in session.instances else 0
        st.refused = tuple(sorted(refused.get(iid) or {}))
        st.retry_wait = bool(retrying)


def _current_host(session: OldSession, st: RollingState) -> None:
    name = session.data.get("current_host")
    if name is None or name not in session.hosts:
        return
    host = session.hosts[name]
    busy = stage_busy(session, host)
    st.current_host = name
    st.stage = stage_in_v2(session, host, busy)
    st.host_op = busy


def _disabled_by_us(session: OldSession, hosts: Mapping[str, dict[str, Any]]) -> list[str]:
    """Hosts this session disabled and would enable again."""
    down = set(session.data.get("down_hosts") or ()) | set(session.data.get("ctl_skipped") or ())
    return [
        name
        for name, cols in hosts.items()
        if cols["disabled_by_session"]
        and name not in down
        and session.hosts[name].state not in (S.DECOMMISSIONED, S.SKIPPED, S.REMOVED)
    ]


def rolling_state(
    session: OldSession, hosts: Mapping[str, dict[str, Any]], waves: Collection[str] = ()
) -> RollingState:
    """The rolling workflow's state (the constrained workflow's controllers
    and ``RollingState`` part too; ``waves``: the hosts the constrained waves
    keep, each with its own flags)."""
    data, state = session.data, session.state
    st = RollingState(
        pre_done=int(data.get("pre_actions_done", 0)),
        post_done=int(data.get("post_actions_done", 0)),
        action_running=any(op.host is None for op in session.open_ops("action")),
        scale_in_rounds=int(data.get("scale_in_rounds", 0)),
        scale_in_load=int(data.get("scale_in_load", 0)),
        scale_in_freed=int(data.get("scale_in_freed", 0)),
        locating=bool(session.open_ops("locate")),
        hosts_listed=bool(data.get("hosts_listed")),
        host_down=(list(data.get("down_hosts") or ()) or [None])[-1],
    )
    ours = [h for h in _disabled_by_us(session, hosts) if h not in waves]
    if state in FINAL:
        st.phase = ""
        st.ended = state != S.MAINTENANCE_DONE
        if st.ended and ours:
            # The previous engine enables every host it disabled once nothing
            # runs there; the contract enables its one host the same way.
            if len(ours) > 1:
                raise session.fail(f"hosts {', '.join(ours)} wait to be enabled again")
            st.we_disabled = ours[0]
            st.host_op = bool(session.open_ops(host=ours[0]))
        return st
    if len(ours) > 1:
        raise session.fail(f"more than one host disabled by it ({', '.join(ours)})")
    st.we_disabled = ours[0] if ours else None
    if state == S.MAINTENANCE:
        st.phase = _phase_of_maintenance(session, st)
    elif state == S.SCALE_IN:
        if session.open_ops("list_hosts"):
            st.phase = "listing"
        elif session.phase in ("confirm", "refresh"):
            st.phase = session.phase
        else:
            raise session.fail(f"SCALE_IN phase {session.phase!r} is not one this upgrade knows")
    elif state in _DRAIN:
        _drain(session, st, hosts)
    elif state == S.START_MAINTENANCE:
        st.phase = ""
        _current_host(session, st)
    elif state == S.MAINTENANCE_COMPLETE:
        st.phase = "confirm" if session.phase == "confirm" else "post"
    elif state == S.AWAITING_APPROVAL:
        st.phase = "confirm"
    else:
        raise session.fail(f"state {state} is not one this upgrade knows")
    return st


# --------------------------------------------------------------------------- timers


def timers(
    session: OldSession, retry_timers: bool = True
) -> list[tuple[str, datetime, dict[str, Any]]]:
    """The previous engine's timers under the contract's names (``retry_move``
    only if ``retry_timers``: the constrained waves keep retries themselves)."""
    out: list[tuple[str, datetime, dict[str, Any]]] = []
    for timer in session.timers:
        kind, data = timer.kind, dict(timer.data)
        if kind == "reply_deadline":
            awaited = data.get("state")
            for project in session.projects.values():
                if project.awaiting and project.state == awaited:
                    due = project.reply_at or timer.due
                    out.append((deadline_timer(project.project_id), due, {"state": str(awaited)}))
        elif kind == "start":
            out.append(("start", timer.due, {}))
        elif kind == "controls_wait":
            out.append(("pipeline:wait", timer.due, {}))
        elif kind == "retry_move":
            if retry_timers:
                iid = str(data.get("instance_id"))
                out.append((f"retry_move:{iid}", timer.due, {"instance_id": iid}))
        elif kind in ("host_announced", "wave_wake"):
            continue  # not needed by the contract / kept by the waves
        else:
            raise session.fail(f"a timer of kind {kind!r} this upgrade does not know")
    names: dict[str, tuple[str, datetime, dict[str, Any]]] = {}
    for item in sorted(out, key=lambda t: t[1]):
        names.setdefault(item[0], item)  # at most one per name: the earliest
    return list(names.values())


# --------------------------------------------------------------------------- the session


def session_body(session: OldSession) -> dict[str, Any]:
    return {k: v for k, v in session.data.items() if k in SESSION_KEYS}
