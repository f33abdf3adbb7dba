"""Migration 0008's translation of a constrained session of the previous
release (the part that is not the rolling workflow's: the waves).

Kept apart from :mod:`.release_sessions` (the rolling and session part).

The previous engine's waves keep: ``data["wave"]``, the hosts' pipeline
stage (its own list of stages), per instance the wave, lead time
(``not_before``) and recovery (``impacted_until``), a ``wave_wake`` timer and
``retry_move`` timers. The contract's waves keep the wave counter, the
instances in recovery, the moves waiting for a retry and their wake-up in
``ConstrainedState`` (frozen in :mod:`.release_frozen`), and per open host
its stage index with flags (``WE_DISABLED``, ``BUSY``, ``DISABLING``,
``FIRST_DRAINED`` from ``data["first_drained"]``) in ``HostView.stage``."""

from __future__ import annotations

from datetime import datetime

from . import release_frozen as S
from .release_frozen import (
    BUSY,
    DISABLING,
    FIRST_DRAINED,
    SCHEDULER,
    WE_DISABLED,
    ConstrainedState,
    RollingState,
)
from .release_sessions import (
    DISABLE_FIRST,
    CoreState,
    OldSession,
    legacy_stages,
    stage_busy,
    stage_in_v2,
    timers,
)

__all__ = ["constrained_state", "wave_hosts"]

_OPEN = frozenset({S.DRAINING, S.DRAINED, S.IN_MAINTENANCE})


def _in_waves(session: OldSession) -> bool:
    return session.state == S.PLANNED_MAINTENANCE and session.phase == "waves"


def wave_hosts(session: OldSession) -> frozenset[str]:
    """The hosts the contract's waves keep (stage and flags on the host):
    the open computes while the session is in its waves."""
    if not _in_waves(session):
        return frozenset()
    return frozenset(
        h.name for h in session.hosts.values() if h.type == "compute" and h.state in _OPEN
    )


def _wave_host_stage(session: OldSession, name: str, out: CoreState) -> int:
    """``HostView.stage`` of an open compute host in the waves."""
    host = session.hosts[name]
    cols = out.hosts[name]
    disabling = bool(session.open_ops("disable_host", name))
    flags = WE_DISABLED if cols["disabled_by_session"] else 0
    if name in (session.data.get("first_drained") or ()):
        flags |= FIRST_DRAINED  # its instances may still land on a queued host
    if host.state == S.DRAINING:
        return flags | (DISABLING if disabling else 0)
    stages = legacy_stages(session, host)
    here = stages[host.stage] if host.stage < len(stages) else None
    if here == DISABLE_FIRST and disabling:
        # Disabled before its stages: the contract's DISABLING, its end sets
        # WE_DISABLED without moving the stage on.
        return stage_in_v2(session, host, busy=False) | flags | DISABLING
    busy = stage_busy(session, host)
    index = stage_in_v2(session, host, busy)
    if index < 0:
        raise session.fail(f"host {name} is in a stage the waves cannot take over")
    return index | flags | (BUSY if busy else 0)


def constrained_state(session: OldSession, st: RollingState, out: CoreState) -> ConstrainedState:
    """The waves' state; sets the open hosts' stages, the retried instances'
    ``not_before`` and the timers in ``out`` (``st``: the rolling part,
    already translated, set to the waves' phase here)."""
    cst = ConstrainedState(wave=int(session.data.get("wave", 0)))
    out.timers = timers(session, retry_timers=not _in_waves(session))
    if not _in_waves(session):
        return cst
    st.phase, st.drain_host = "waves", None
    for name in sorted(wave_hosts(session)):
        out.hosts[name]["stage"] = _wave_host_stage(session, name, out)
    cst.recovering = tuple(
        sorted(i.instance_id for i in session.instances.values() if i.impacted_until is not None)
    )
    refused = dict(session.data.get("refused_targets") or {})
    wake: datetime | None = None
    retrying = []
    for timer in session.timers:
        if timer.kind == "wave_wake":
            wake = timer.due if wake is None else min(wake, timer.due)
        elif timer.kind == "retry_move":
            iid = str(timer.data.get("instance_id"))
            inst = session.instances.get(iid)
            if inst is None:
                continue
            no = tuple(sorted(t for t in refused.get(iid) or {} if t != SCHEDULER))
            retrying.append((iid, inst.attempts, no))
            # Not moved again before its back-off (the contract's waves hold
            # a retry by the instance's not_before).
            held = max(timer.due, inst.not_before) if inst.not_before else timer.due
            out.instances.setdefault(iid, {})["not_before"] = held
            wake = held if wake is None else min(wake, held)
    cst.retrying = tuple(sorted(retrying))
    if wake is not None:
        cst.wake = wake.isoformat()
        out.timers.append(("waves", wake, {}))
    return cst
