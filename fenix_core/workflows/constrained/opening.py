"""The opening decision: which pending hosts start draining (:func:`_open`),
opened whole or one ahead of its room.

Which hosts to open is the pure planner's (:func:`fenix_core.planner.hosts_to_open`,
and when it opens none :func:`~fenix_core.planner.host_to_open_ahead`), and
``planner.hosts_to_open`` stops once no candidate left fits. A step builds an
opening decision only when the room the planner's targets can have
(``ctx.capacity.room``: the hosts where instances stay among the most free,
counted from the index) covers the draining hosts' members and the lightest
pending host's, and hands it to the planner only when its own window's room
covers them and its lightest candidate's (:func:`_may_open`,
:func:`_short_of_room`: the planner's own totals check, which turned down
nine decisions in ten). An opening decision whose inputs are those of the
last one, which opened nothing and changed nothing, is not made again. The
drain dry run runs only when at most :data:`~.windows.DRY_RUN_HOSTS` hosts
are left, and counts instead of placing where counting gives its verdict
(``planner.drains_by_count``)."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import (
    Callable,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from itertools import chain
from typing import Any

from ... import planner, second_moves
from ...contract import (
    HostView,
    SessionContext,
)
from ...controls import expected_host_seconds
from ...model import host_action_types
from ...states import (
    HostState,
    InstanceState,
)
from ..base import IN_SCOPE, actions_of
from ..rolling import (
    RollingState,
)
from . import reads, targeting, windows
from .caches import _Counts, _Fed
from .placement import _disabled_for_drain
from .reads import _recovery, _Step, _waiting_makes_room, _weight
from .state import (
    _MOVE_ESTIMATE,
    _OPEN,
    _STAGE,
    FIRST_DRAINED,
    ConstrainedState,
    _new_stamp,
)
from .walks import _DrainingTaken


def _open(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> tuple[bool, bool]:
    """Open the pending hosts that give idle groups work: (any opened,
    the pipeline held one). A decision whose inputs are those of the
    last one, which opened nothing and changed nothing, is not made
    again (most steps at 300 hosts and more, while the room where
    instances stay is short)."""
    counts = step.counts
    inputs = _opening_inputs(ctx, step, cst)
    if inputs == counts.opened_nothing and inputs[0] is ctx.request:
        return False, False
    found = _open_hosts(ctx, step, cst)
    # Kept only when it changed nothing the inputs do not show: no
    # number moved, and the waves' state is as it was (a first wave's
    # decision that opened nothing still sets its partial host).
    kept = found == (False, False) and _opening_inputs(ctx, step, cst) == inputs
    counts.opened_nothing = inputs if kept else None
    return found


def _opening_inputs(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> tuple[Any, ...]:
    """What an opening decision reads, as values that change with it:
    the request (the parallel hosts, the controls, the retiring hosts),
    the hosts', instances' and capacity's change numbers (the draining
    and pending hosts and their members, the room, the moves in flight,
    the groups' work: the views' ``changes``, exact when another process
    stepped the session), whether instances are in recovery (what
    waiting may yet free) and the waves' state it writes."""
    return (
        ctx.request,
        ctx.hosts.changes(),
        ctx.instances.changes(),
        ctx.capacity.changes(),
        bool(reads._recovering(ctx, step, cst).group_of),
        cst.partial,
        cst.partial_twice,
        cst.first_wave,
        cst.stamp,
    )


def _open_hosts(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> tuple[bool, bool]:
    """:func:`_open`'s decision, made."""
    if _none_left_to_open(ctx):
        return False, False
    open_now = len(ctx.hosts.in_state(*_OPEN, type="compute"))
    cap = ctx.request.max_parallel_hosts
    slots = (cap - open_now) if cap is not None else len(ctx.hosts)
    if slots <= 0:
        return False, False
    may, left_over = _may_open(ctx, step, cst)
    if not may:
        return _open_ahead(ctx, step, cst, left_over)
    counts = step.counts
    waiting: Counter[str] = Counter()  # members per group left on the open hosts
    draining: list[planner.HostLoad] = []
    kept = step.draining()
    for host in ctx.hosts.in_state(HostState.DRAINING):
        drain = step.draining_load(host, kept)
        draining.append(drain)
        waiting.update(m.group_id for m in drain.members)
    # A group with work left and fewer members waiting on the open hosts
    # than it may move at once, also while its members are moving or in
    # recovery_time: a host opened for it now has its next members ready
    # when that ends (the longest chain waited for a host to open after
    # each recovery, 883 s over the reference scenario's bound; with one
    # member waiting of two it may move, each round moved one).
    # Each pending host ranked by the idle weight it feeds; the planner
    # chooses among the best CANDIDATE_WINDOW (and every empty host).
    idle, fed = _idle_and_fed(step, waiting)
    names: set[str] = set(_best(fed))
    names.update(
        h.name for h in ctx.hosts.without_instances(HostState.PENDING) if h.type == "compute"
    )
    pending_count = len(ctx.hosts.in_state(HostState.PENDING, type="compute"))
    if (
        not names
        and not draining
        and pending_count
        and not ctx.instances.in_state(InstanceState.IN_ACTION)
    ):
        # Nothing in flight and no group idle with work: open the lightest
        # host anyway, so that the session always makes progress.
        pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
        names.add(min(pending, key=lambda h: (step.wf._used(ctx, h.name), h.position)).name)
        idle = dict.fromkeys(counts.todo, 1.0)
    if not names:
        return False, False
    candidates: list[planner.HostLoad] = []
    lightest: int | None = None  # vCPUs of the lightest candidate with members
    least: list[planner.Member] = [m for d in draining for m in d.members]
    for name in sorted(names):
        view = ctx.hosts.get(name)
        if view is not None and view.state == HostState.PENDING and view.type == "compute":
            load = step.pending(view)
            candidates.append(load.load)
            if load.least is not None:
                least.append(load.least)
                lightest = load.vcpus if lightest is None else min(lightest, load.vcpus)
            else:
                lightest = 0  # an empty host: always worth opening
    # The targets of the smallest member (every computes' window holds
    # them), and of each member the cloud's placement rules name (the
    # members are read one by one only when some are).
    members = []
    if counts.any_ruled:
        members = [m for c in candidates for m in c.members] + [
            m for d in draining for m in d.members
        ]
    picked = {m.instance_id for m in members if step.ruled(m.instance_id)}
    if least:
        picked.add(min(least, key=lambda m: (m.vcpus, m.instance_id)).instance_id)
    sample = [v for i in sorted(picked) if (v := ctx.instances.get(i)) is not None]
    window = targeting._window(ctx, step, sample)
    if draining and lightest and _short_of_room(ctx, window, draining, lightest):
        return _open_ahead(ctx, step, cst)
    targets = step.targets(window)
    if not members:
        members = [m for c in candidates for m in c.members] + [
            m for d in draining for m in d.members
        ]
    rules = step.rules_of(members)
    feasible = None
    if pending_count <= windows.DRY_RUN_HOSTS:

        def feasible(opened: Sequence[str]) -> bool:
            pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
            loads = [*draining] + [step.pending_load(h) for h in pending]
            all_rules = dict(rules)
            all_rules.update(step.rules_of(chain.from_iterable(d.members for d in loads)))
            known = {t.host for t in targets}
            extra = [step.target(h, False) for h in pending if h.name not in known]
            dry = (
                targets
                + extra
                + [step.target(h, False) for h in ctx.hosts.in_state(HostState.DRAINING)]
            )
            order = [*(h.host for h in draining), *opened]
            # Counting answers alike where it is exact (one-vCPU instances,
            # no per-host limit), without placing every member everywhere.
            return planner.drains_together(loads, dry, all_rules, order)

    # A host opened now moves its instances only where they stay: it
    # opens when they fit there now (second_moves.opening_targets). A
    # host holding parked instances opens after the others: it takes the
    # most room where instances stay for the room it gives back (see
    # second_moves).
    chosen = planner.hosts_to_open(
        candidates,
        draining=draining,
        targets=second_moves.opening_targets(targets),
        idle_groups=idle,
        slots=slots,
        rules=rules,
        feasible=feasible,
        last=counts.parked,
        wait=_opening_wait(ctx, step, cst, waiting),
    )
    if not chosen and draining:
        return _open_ahead(ctx, step, cst)
    first: set[str] = set()
    wave: second_moves.FirstWave | None = None
    if (
        not draining
        and all(not c.members for c in candidates if c.host in chosen)
        and not _waiting_makes_room(ctx, step, cst)
    ):
        # Nothing where instances stay can take any host's instances and
        # nothing is out of service: the first wave (second_moves), as
        # wide as the hosts' expected work says the longest chain needs.
        size = None
        if any(c.members for c in candidates):
            size = _first_wave_size(ctx, step, targets)
        wave = second_moves.first_wave(
            candidates,
            targets=targets,
            idle_groups=idle,
            slots=slots,
            instances=sum(counts.todo.values()),
            rules=rules,
            feasible=feasible,
            share=second_moves.FIRST_WAVE_SHARE if size is None else size.share,
        )
        chosen = list(wave.hosts)
        first = {c.host for c in candidates if c.members and c.host in chosen}
        if first and size is not None:
            cst.first_wave = size.why
    result = _open_chosen(ctx, step, cst, chosen, first)
    if wave is not None:
        # Its partial last host, if opened: only so many of its
        # instances move twice (none held back by the controls).
        view = ctx.hosts.get(wave.partial) if wave.partial in first else None
        if view is not None and view.state == HostState.DRAINING:
            cst.partial, cst.partial_twice = view.name, wave.twice
        else:
            cst.partial, cst.partial_twice = None, 0
    return result


def _none_left_to_open(ctx: SessionContext) -> bool:
    """No pending compute host while hosts drain (the end of a session):
    a decision would find no candidate, and no first wave to settle
    (there is one only while nothing drains), so it opens nothing and
    changes nothing. Known without building it (the draining hosts'
    loads and the idle groups, at every pass of the session's tail)."""
    return not ctx.hosts.in_state(HostState.PENDING, type="compute") and bool(
        ctx.hosts.in_state(HostState.DRAINING)
    )


def _opening_wait(
    ctx: SessionContext, step: _Step, cst: ConstrainedState, waiting: Counter[str]
) -> Callable[[planner.HostLoad], float]:
    """How long a pending host opened now would wait for its groups'
    slots before it is empty (``planner.opening_wait``): each group's
    slots held by its members moving (a move and its recovery_time
    ahead, at most) or in recovery_time (until it ends), then taken by
    its members ``waiting`` on the open hosts. Worked out per group on
    first use: the moves and recoveries under way are read once per
    decision, and only if a candidate is ranked."""
    busy: dict[str, list[float]] | None = None
    slots: dict[str, list[float]] = {}

    def group_slots(group_id: str) -> list[float]:
        nonlocal busy
        if busy is None:
            busy = _busy_until(ctx, step, cst)
        found = slots.get(group_id)
        if found is None:
            found = slots[group_id] = planner.group_slots(
                step.rule(group_id),
                busy.get(group_id, ()),
                waiting.get(group_id, 0),
                move_seconds=_MOVE_ESTIMATE,
            )
        return found

    def wait(load: planner.HostLoad) -> float:
        return planner.opening_wait(load, group_slots, step.rule, move_seconds=_MOVE_ESTIMATE)

    return wait


def _busy_until(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> dict[str, list[float]]:
    """Per group, the seconds from now until each of its members moving
    or in recovery_time frees its slot (a move under way: a whole move
    and the recovery_time, at most)."""
    now = ctx.now
    busy: dict[str, list[float]] = {}
    recovery = _recovery(ctx, step, cst)
    for until, instance_id in recovery.heap:
        group_id = recovery.group_of.get(instance_id)
        if group_id is not None:
            busy.setdefault(group_id, []).append(max(0.0, (until - now).total_seconds()))
    for view in ctx.instances.in_state(InstanceState.IN_ACTION):
        group_id = step.group(view)
        busy.setdefault(group_id, []).append(_MOVE_ESTIMATE + step.rule(group_id).recovery_time)
    return busy


def _open_chosen(
    ctx: SessionContext,
    step: _Step,
    cst: ConstrainedState,
    chosen: Sequence[str],
    first: Container[str],
) -> tuple[bool, bool]:
    """Start draining the ``chosen`` hosts that the controls admit (those
    of ``first``: the first drained hosts): (any opened, one held)."""
    counts = step.counts
    opened = held = False
    controls = ctx.request.controls
    # A host refused for its zone (rack ...) keeps no host of an open zone
    # from going; a window, pacing or a pause holds every host alike, and
    # asking about another host would restart a gate's checks.
    try_others = bool(controls.max_topology_in_maintenance) and not controls.gates
    for name in chosen:
        if not ctx.admit(name).admitted:
            held = True
            if try_others:
                continue
            return opened, True  # a window, pacing, a gate or a pause holds the rest
        opened = True
        ctx.set_host_state(name, HostState.DRAINING)
        counts.parked.discard(name)
        counts.unasked.add(name)
        counts.blocked.pop(name, None)
        counts.undisabled.add(name)
        view = ctx.hosts.get(name)
        if view is not None and (view.stage & _STAGE or name in first):
            # Its stages start afresh; a first drained host says so.
            step.wf._set_stage(
                ctx, name, view.stage & ~_STAGE | (FIRST_DRAINED if name in first else 0)
            )
        for inst in ctx.instances.on(name):
            g = step.group(inst)
            found = counts.pending_hosts_of.get(g)
            if found is not None:
                found.discard(name)
                counts.refed.add(g)
            if inst.state not in (InstanceState.GONE, InstanceState.OUT_OF_SCOPE):
                counts.pending_member(g, inst.vcpus, step.limited(g), -1)
        view = ctx.hosts.get(name)
        if view is not None:
            _disabled_for_drain(ctx, view, step)
    if opened:
        cst.stamp = counts.stamp = _new_stamp()
        ctx.state_of(RollingState).listed = False  # progress: list again when stuck
    return opened, held


def _idle_and_fed(
    step: _Step, waiting: Mapping[str, int]
) -> tuple[Mapping[str, float], Mapping[str, float]]:
    """The idle groups (work left, fewer of their members ``waiting`` on
    the open hosts than they may move at once) with their weights, and
    for each pending host the idle weight it feeds (each group it holds
    members of: its weight + 1): :func:`_idle_and_fed_of`'s answer, kept
    with the counts (:class:`_Fed`, not to be changed by the caller) and
    worked out again only for the groups whose work left, pending hosts
    (``refed``) or members waiting changed since the last one."""
    counts = step.counts
    kept = counts.fed
    # The groups whose pending hosts changed (taken: those from now on
    # are the next decision's).
    refed, counts.refed = counts.refed, set()
    changed: Iterable[str]
    if kept is None:
        kept = counts.fed = _Fed({}, {}, {}, Counter(), {})
        changed = counts.todo  # every group with work
    else:
        before = kept.waiting
        if before == waiting:  # (compared whole first: most decisions)
            changed = refed
        else:
            changed = {
                g for g in before.keys() | waiting.keys() if before.get(g, 0) != waiting.get(g, 0)
            }
            changed |= refed
    kept.waiting = dict(waiting)
    idle, fed, feeders, on, top = kept.idle, kept.fed, kept.feeders, kept.on, kept.top
    rules, rule, paces, weight_of = step.rules, step.rule, counts.pace, _weight
    todo, hosts_of = counts.todo, counts.pending_hosts_of.get
    for g in changed:
        # Its weight now (None: not idle), then what it fed taken out and
        # the new put in; on the same hosts, only the change of weight
        # (nothing when none: its members waiting changed, within what
        # it may move at once).
        weight = None
        left = todo.get(g, 0)
        if left > 0:
            w = waiting.get(g, 0)
            if w == 0 or w < (rules.get(g) or rule(g)).max_impacted:
                pace = paces.get(g)
                weight = weight_of(step, g) if pace is None else math.ceil(left / pace[0]) * pace[1]
                if not weight.is_integer():  # sums in another order could round otherwise
                    counts.fed = None
                    return _idle_and_fed_of(step, waiting)
        was = idle.get(g)
        if weight is None:
            names: tuple[str, ...] = ()
        elif was is not None and g not in refed:
            # Idle before too, and its pending hosts the same set since
            # (every change of them names it in ``refed``): those it fed.
            names = on[g]
        else:
            names = tuple(hosts_of(g, ()))
        if was is not None and weight is not None and on[g] == names:
            if weight != was:
                idle[g] = weight
                change = weight - was
                for name in names:
                    fed[name] += change
                    most = top.get(name)
                    if feeders[name] == 1 or (most is not None and weight > most):
                        top[name] = weight  # (the only idle group feeding it: its most)
                    elif most == was:  # its most, now less: not known any more
                        del top[name]
            continue
        if was is not None:  # its weight taken out of the hosts it fed
            del idle[g]
            add = was + 1.0
            for name in on.pop(g):
                n = feeders[name] - 1
                if n:
                    feeders[name] = n
                    fed[name] -= add
                    if top.get(name) == was:  # its most: not known any more
                        del top[name]
                else:
                    del feeders[name], fed[name]
                    top.pop(name, None)
        if weight is None:
            continue
        idle[g] = weight
        on[g] = names
        add = weight + 1.0
        for name in names:
            had = fed.get(name)
            if had is None:
                fed[name] = add
                top[name] = weight
            else:
                fed[name] = had + add
                most = top.get(name)
                if most is not None and weight > most:
                    top[name] = weight
            feeders[name] += 1
    return idle, fed


def _idle_and_fed_of(
    step: _Step, waiting: Mapping[str, int]
) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`_idle_and_fed` worked out from every group with work left."""
    counts = step.counts
    # Every group with work left is looked at (most of the fleet's groups
    # at 1,000 hosts, twice per decision): the lookups are bound once,
    # and the weight (:func:`~.reads._weight`) of a group with ``left`` members
    # still to do is worked out from its kept pace.
    rules, rule, paces, weight_of = step.rules, step.rule, counts.pace, _weight
    waiting_of = waiting.get
    idle: dict[str, float] = {}
    for g, left in counts.todo.items():
        if left <= 0:
            continue
        w = waiting_of(g, 0)
        if w != 0 and w >= (rules.get(g) or rule(g)).max_impacted:
            continue
        pace = paces.get(g)
        idle[g] = weight_of(step, g) if pace is None else math.ceil(left / pace[0]) * pace[1]
    fed: dict[str, float] = {}
    fed_get = fed.get
    hosts_of = counts.pending_hosts_of.get
    for g, weight in idle.items():
        for name in hosts_of(g, ()):
            fed[name] = fed_get(name, 0.0) + weight + 1.0
    return idle, fed


def _open_ahead(
    ctx: SessionContext,
    step: _Step,
    cst: ConstrainedState,
    left_over: int | None = None,
) -> tuple[bool, bool]:
    """When no host can be opened whole, open one ahead of its room
    (``planner.host_to_open_ahead``): while the room where instances stay
    covers every draining host's members with some left over, the host
    the ranking puts first, if its member of the longest idle chain fits
    in what is left, the session can still be emptied with it open (the
    dry run) and its member fits with the draining hosts' on the targets.
    Its members then take only the room the others leave
    (:func:`~.placement._pump`). One at a time: none while a draining host's members
    are not all covered. ``left_over``: :func:`_left_over_room` when the
    caller worked it out already (nothing changed since)."""
    if left_over is None:
        left_over = _left_over_room(ctx, step)
    if left_over <= 0:
        return False, False  # also when nothing drains (an empty load)
    draining = list(ctx.hosts.in_state(HostState.DRAINING))
    if not draining:
        return False, False
    counts = step.counts
    kept = step.draining()
    loads = [step.draining_load(h, kept) for h in draining]
    waiting = Counter(m.group_id for load in loads for m in load.members)
    idle, fed = _idle_and_fed(step, waiting)
    candidates = [
        step.pending(view).load
        for name in sorted(_best(fed))
        if (view := ctx.hosts.get(name)) is not None
        and view.state == HostState.PENDING
        and view.type == "compute"
    ]
    found = planner.host_to_open_ahead(
        candidates,
        idle_groups=idle,
        room=left_over,
        last=counts.parked,
        scores=_kept_scores(counts, idle, candidates),
    )
    if found is None:
        return False, False
    load, member = found
    need = [m for d in loads for m in d.members]
    sample = [v for m in (*need, member) if (v := ctx.instances.get(m.instance_id)) is not None]
    targets = [
        step.target(view, stays)
        for view, stays in targeting._window(ctx, step, sample)
        if stays and view.name != load.host
    ]
    rules = step.rules_of([*need, *load.members])
    if not planner.fits_all([*need, member], targets, rules):
        return False, False
    pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
    if len(pending) <= windows.DRY_RUN_HOSTS:
        loads += [step.pending_load(h) for h in pending]
        # (Every pending host's members: chained, not a generator per member.)
        rules.update(step.rules_of(chain.from_iterable(d.members for d in loads)))
        dry = targeting._fleet_targets(ctx, step) + [step.target(h, False) for h in draining]
        order = [*(h.name for h in draining), load.host]
        if not planner.drains_together(loads, dry, rules, order):
            return False, False
    return _open_chosen(ctx, step, cst, [load.host], ())


def _kept_scores(
    counts: _Counts, idle: Mapping[str, float], candidates: Sequence[planner.HostLoad]
) -> dict[str, tuple[float, float]] | None:
    """Each candidate's score for ``planner.host_to_open_ahead`` (the
    most and the summed weight of the idle groups it holds members of)
    from the weights kept with :class:`_Fed`, when ``idle`` is its answer:
    the groups it put on a host are those of the host's load, both
    counting the members of :data:`_MEMBER_STATES`. None otherwise (the
    planner works them out from the loads). A most not known (taken
    out) is worked out from the load and kept."""
    kept = counts.fed
    if kept is None or kept.idle is not idle:
        return None
    top, sums, feeders = kept.top, kept.fed, kept.feeders
    scores: dict[str, tuple[float, float]] = {}
    for load in candidates:
        name = load.host
        total = sums.get(name)
        if total is None:
            continue
        most = top.get(name)
        if most is None:
            most = max((w for g in load.groups if (w := idle.get(g)) is not None), default=None)
            if most is None:
                continue
            top[name] = most
        scores[name] = (most, total - feeders[name])
    return scores


def _first_wave_size(
    ctx: SessionContext, step: _Step, targets: Sequence[planner.Target]
) -> second_moves.FirstWaveSize:
    """How many second moves the first wave may add
    (:func:`~fenix_core.second_moves.first_wave_size`), from what the
    session knows at its start: the pending hosts' loads, the groups'
    chains, and a host's expected work (declared ``host_seconds``, else
    the plan's assumption per action: ``controls.expected_host_seconds``)."""
    capacities: list[int] = []
    per_host: list[list[int]] = []
    for host in ctx.hosts.in_state(HostState.PENDING, type="compute"):
        capacities.append(host.vcpus)
        per_host.append([i.vcpus for i in ctx.instances.on(host.name) if i.state in IN_SCOPE])
    stay_room = sum(t.free or 0 for t in targets if t.stays)
    actions = actions_of(ctx.request.actions, *host_action_types("compute"))
    work = expected_host_seconds(ctx.request.controls, len(actions))
    todo = step.counts.todo
    chain = planner.makespan_lower_bound(
        host_work=[work] * len(capacities),
        max_parallel_hosts=max(1, len(capacities)),
        members_by_group=todo,
        rules={g: step.rule(g) for g, left in todo.items() if left > 0},
        move_seconds=_MOVE_ESTIMATE,
        first_final_move_at=second_moves.first_final_move_at(
            [(work, bool(v)) for v in per_host],
            stay_room=stay_room > 0,
            move_seconds=_MOVE_ESTIMATE,
        ),
    ).group_bound
    return second_moves.first_wave_size(
        [sum(v) for v in per_host],
        capacities,
        instance_vcpus=[c for v in per_host for c in v],
        forced=second_moves.moves_lower_bound(per_host, stay_room=stay_room).forced,
        chain=chain,
        work=work,
        move_seconds=_MOVE_ESTIMATE,
        stay_room=stay_room,
    )


def _may_open(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> tuple[bool, int | None]:
    """False when no pending host can be opened for lack of room, known
    without building a decision: the free vCPUs the planner's targets
    can have at most (:func:`~.targeting._window_room`) fall short of the members
    left on the draining hosts plus the lightest pending host's (at most
    any candidate's), so ``planner.hosts_to_open`` would turn every
    candidate down on its totals. An empty pending host, an instance
    under the cloud's placement rules (its targets are its own), or the
    first wave's case (nothing drains, nothing under way makes room)
    always decides. With it, :func:`_left_over_room` when worked out
    (:func:`_open_ahead` reads it next)."""
    counts = step.counts
    if counts.any_ruled:
        return True, None
    if any(h.type == "compute" for h in ctx.hosts.without_instances(HostState.PENDING)):
        return True, None
    if next(iter(ctx.hosts.in_state(HostState.DRAINING)), None) is None and (
        not _waiting_makes_room(ctx, step, cst)
    ):
        return True, None  # the first wave's case: it may open hosts anyway
    floor = _pending_floor(ctx, step)
    if floor is None:
        return True, None
    left_over = _left_over_room(ctx, step)
    return left_over >= floor, left_over


def _short_of_room(
    ctx: SessionContext,
    window: Sequence[tuple[HostView, bool]],
    draining: Sequence[planner.HostLoad],
    lightest: int,
) -> bool:
    """Whether ``planner.hosts_to_open`` turns every candidate down on its
    totals (its ``_Room.may_fit``): the free vCPUs of the window's hosts
    where instances stay (its targets after
    ``second_moves.opening_targets``) fall short of the draining hosts'
    members plus the lightest candidate's, none of them empty. Then it
    opens nothing whatever the rest of the decision, and the rest is not
    built. (Nothing drains: the first wave may open hosts anyway, not
    decided here.)"""
    room = sum(max(0, ctx.capacity.free(view.name)) for view, stays in window if stays)
    return room < sum(d.vcpus for d in draining) + lightest


def _left_over_room(ctx: SessionContext, step: _Step) -> int:
    """The window's room where instances stay (at most) less the draining
    hosts' members still to leave."""
    return targeting._window_room(ctx, step) - _draining_load(ctx, step)


def _draining_load(ctx: SessionContext, step: _Step) -> int:
    """vCPUs of the members still to leave the draining hosts (not
    moving), kept: :class:`_DrainingTaken`."""
    kept = step.counts.draining_taken
    taken = None if kept is None else kept.brought_up_to_date(ctx)
    if taken is None:
        taken = step.counts.draining_taken = _DrainingTaken.read(ctx)
    return taken.total


def _pending_floor(ctx: SessionContext, step: _Step) -> int | None:
    """At most the vCPUs of the lightest pending compute host with
    instances (None: there is none)."""
    heap = step.counts.pending_floor
    while heap:
        vcpus, name = heap[0]
        view = ctx.hosts.get(name)
        if view is None or view.state != HostState.PENDING:
            heapq.heappop(heap)
            continue
        exact = step.pending(view).vcpus
        if exact == vcpus:
            return vcpus
        heapq.heapreplace(heap, (exact, name))
    return None


def _best(fed: Mapping[str, float]) -> list[str]:
    """The :data:`CANDIDATE_WINDOW` hosts of ``fed`` first by (weight,
    name), highest first (in no order: the callers sort them or not)."""
    if len(fed) <= windows.CANDIDATE_WINDOW:
        return list(fed)
    # The weight of the last one taken, then the hosts above it and as
    # many of those at it as are left, by name: the weights alone
    # (floats, compared in C) sort 4-5 times faster than the (weight,
    # name) items, for the few hundred hosts fed at 1,000 hosts.
    floor = sorted(fed.values(), reverse=True)[windows.CANDIDATE_WINDOW - 1]
    best = [n for n, w in fed.items() if w > floor]
    at = sorted([n for n, w in fed.items() if w == floor], reverse=True)
    best += at[: windows.CANDIDATE_WINDOW - len(best)]
    return best
