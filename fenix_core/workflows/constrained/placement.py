"""The placement of one pass: every move the groups, targets and capacity
allow now (:func:`_pump`), and its helpers.

Where members go is the pure planner's (:func:`~fenix_core.planner.assign_moves`,
:func:`~fenix_core.planner.drain_sequence`) and the second-moves rule's
(:func:`fenix_core.second_moves.may_move_twice`). A pass asks about, disables
and moves from the draining hosts that changed since (``unasked``,
``undisabled``, the instances whose action is chosen). A placement hands the
planner its members up to the last one that may start, and reuses the
targets whose room did not change. Without a per-host limit, a placement (and
the planner's ``fits_all``) finds each member's target by bisection over the
targets sorted by room (``planner.assign_moves_unlimited``: the same moves).
A placement reads the room where instances stay from the capacity index
(``ctx.capacity.room`` with ``least``: the walk ``ctx.capacity.targets``
makes for the one instance standing for the window) and builds its window
only when a member may start. A placement whose inputs (the views' change
numbers, the budgets of the groups that may start, the instances that may)
are those of the last one worked out, which found no member to start, is not
worked out again."""

from __future__ import annotations

from collections import Counter
from collections.abc import (
    Callable,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime
from itertools import chain
from typing import Any

from ... import planner, second_moves
from ...contract import (
    DisableHost,
    HostView,
    InstanceView,
    Move,
    SessionContext,
    Watch,
)
from ...states import (
    HostState,
    InstanceAction,
    instance_action,
)
from ..base import allowed_actions, default_action
from . import targeting, windows
from .budgets import _Admission, _Budgets
from .draining import _Draining
from .reads import _recovery, _Step, _waiting_makes_room, _weight
from .state import (
    _GROUP_OF,
    _POSITION,
    DISABLING,
    FIRST_DRAINED,
    ConstrainedState,
    _wake_at,
)
from .targeting import _all_targets


def _pump(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> bool:
    """Start every move the groups, targets and capacity allow now; True
    if the pipeline holds the moves (a pause)."""
    now = ctx.now
    budgets = step.budgets(cst)
    # The instances that may start now; made members for the planner
    # only when a group of theirs may lose one (most passes none may).
    ready: list[InstanceView] = []
    # Of whom ``ready`` is made, in its order: a host's whole chosen list
    # (its members kept with it: :meth:`~.draining._Draining.members_of`), or
    # instances of a host with None.
    ready_from: list[tuple[str | None, list[InstanceView]]] = []
    views: dict[str, InstanceView] = {}
    own_actions: list[InstanceView] = []
    wake: datetime | None = None
    held = False
    refused = {iid: frozenset(r) for iid, _a, r in cst.retrying if r}
    # The draining hosts with instances whose action is chosen, and those
    # that may still have to be disabled: the others have nothing to do.
    # (An instance whose action is chosen on a host that no longer
    # drains has nothing to do either: only the draining hosts' are kept.)
    kept = step.draining()
    chosen_on = kept.chosen_on()
    undisabled = step.counts.undisabled
    admission = _Admission(ctx)
    # A host whose view and chosen list are those it had when last found
    # disabled, in flight and with all its chosen startable is that
    # still, but for what is bound for it now and a pause (most hosts;
    # both read once a pass: :meth:`~.reads._Step.arrivals`, :class:`_Admission`).
    steady = kept.steady
    for host in _by_position(ctx, undisabled.union(chosen_on)):
        name = host.name
        chosen = chosen_on.get(name)
        last = steady.get(name)
        if (
            last is not None
            and last[0] is host
            and last[1] is chosen
            and name not in step.arrivals()
            and admission.admitted(host)
        ):
            undisabled.discard(name)
            ready.extend(last[1])
            ready_from.append((name, last[1]))
            views.update(last[2])
            continue
        steady.pop(name, None)
        if host.state != HostState.DRAINING:
            undisabled.discard(name)
            continue
        if not _disabled_for_drain(ctx, host, step):
            continue  # nothing leaves a host before it is disabled
        undisabled.discard(name)
        if not chosen:
            continue
        if not admission.admitted(host):
            held = True  # paused: moves in flight end, no new one starts
            continue
        startable = kept.startable(name, chosen)
        if startable is not None:  # (most hosts: no loop)
            if host.in_flight:
                steady[name] = (host, chosen, startable)
            ready.extend(chosen)
            ready_from.append((name, chosen))
            views.update(startable)
            continue
        start = len(ready)
        for inst in chosen:
            if inst.not_before is not None and inst.not_before > now:
                wake = inst.not_before if wake is None else min(wake, inst.not_before)
                continue
            if inst.action == InstanceAction.OWN_ACTION:
                own_actions.append(inst)
            else:
                ready.append(inst)
                views[inst.instance_id] = inst
        if len(ready) > start:
            ready_from.append((None, ready[start:]))
    for inst in own_actions:
        g = step.group(inst)
        if budgets.get(g, 0) > 0:
            budgets.take(g)
            ctx.submit(Watch(inst.instance_id))
    if (
        ready
        and _any_may_start(step, budgets, ready)
        and not _same_empty_placement(step, budgets, ready, inputs := _placement_inputs(ctx, ready))
    ):
        waiting = kept.members_of(ready_from, step.members)
        # Place the members whose groups may lose one more now, in
        # planner.completion_order: a member that moved once first (it
        # goes only where it stays, the others may still go elsewhere),
        # then those of the host with least left to move, so that hosts
        # empty one by one, come back and take instances for good soonest
        # (placing every waiting member largest first gave the room to
        # members whose groups could not move, and spread each group's
        # budget over every open host: the first host came back at 907 s
        # instead of 630 s on the reference scenario).
        ahead = step.counts.ahead()
        # The members of the draining hosts that cannot start yet are
        # placed too, in their turn (not moved): the room they will need
        # is not given to a member after them.
        kept = step.draining()
        later = _not_startable(kept, views)
        # Everyone placed (those that may start and ``later``: the
        # draining hosts' held instances), read per host from what is
        # kept of each (:class:`_HeldOn`): where each is, which moved
        # before, each host's members and vcpus, worked out again only
        # for the hosts whose instances changed. Then per host whether it
        # was opened in the first wave (looked up once) and the vcpus it
        # has left to move (the first drained hosts' members aside).
        held_on = kept.held_by_host(step.members, step.limited)
        # (In no particular order: the completion order is the same
        # whatever order its members come in.)
        on_host = {name: on.members for name, on in held_on.items()}
        # The groups still to come too: the placement keeps room for
        # them by their per-host limit. Their rules are needed only when
        # one of them has one (most placements: none has). Those of the
        # held instances' groups are kept (a pass scanned them all, at
        # 300 hosts hundreds of groups).
        limited = bool(kept.held_limited) or step.any_limited(
            dict.fromkeys(chain(map(_GROUP_OF, waiting), ahead))
        )
        groups = (
            dict.fromkeys(chain(map(_GROUP_OF, waiting), kept.held_groups, ahead))
            if limited
            else {}
        )
        rules = {g: step.rule(g) for g in groups}
        # (The host each held instance is kept under is the one its view
        # names; nothing changes the kept instances before the moves are
        # sent, at the end of the pass.)
        host_of = kept.where
        moved = set().union(*(on.moved for on in held_on.values()))
        first: set[str] = set()
        first_drained: dict[str, bool] = {}
        left_on: dict[str, int] = {}
        vcpus_on: dict[str, int] = {}
        for name, on in held_on.items():
            h = ctx.hosts.get(name)
            on_first = first_drained[name] = h is not None and bool(h.stage & FIRST_DRAINED)
            vcpus_on[name] = on.vcpus
            if on_first:
                first.update(on.ids)
            else:
                left_on[name] = on.vcpus
        # The window is built only when a member may start (below); the
        # room where instances stay is read from the capacity index when
        # one instance stands for the window, else from its hosts.
        window: list[tuple[HostView, bool]] | None = None
        # (Without placement rules the sample is the least instance of
        # each host type: among the least of each host.)
        sample = targeting._window_sample(  # read once
            ctx,
            step,
            chain.from_iterable(on.views for on in held_on.values())
            if step.counts.any_ruled
            else (on.least for on in held_on.values()),
        )
        stay_room = targeting._window_stay_room(ctx, step, sample)
        if stay_room is None:
            window = targeting._window(ctx, step, sample)
            free_of = ctx.capacity.free
            stay_room = sum(max(0, free_of(view.name)) for view, stays in window if stays)
        # A host opened ahead of its room (_open_ahead): its members take
        # only what the others leave, the longest chains' first, and the
        # others keep the room they need while their groups wait. (The
        # first drained hosts' members may go where they do not stay.)
        behind = planner.hosts_beyond_room(left_on, stay_room)
        work: dict[str, float] = {}
        for name in behind:
            for g in held_on[name].groups:  # (in the order of its members)
                if g not in work:
                    work[g] = _weight(step, g)
        left = {g: budgets.get(g, 0) for g in dict.fromkeys(map(_GROUP_OF, waiting))}
        reserve = bool(behind) and limited
        # The first wave's partial last host: only the first of its
        # members in the order, as many as it may still move twice.
        partial = cst.partial if cst.partial and first_drained.get(cst.partial) else None
        allowance = cst.partial_twice
        # (The hosts keep their place: it is by the vcpus of all their
        # members, vcpus_on.)
        order = planner.completion_order_by_host(
            _may_be_placed(on_host, left, later, limited, behind, partial),
            vcpus_on,
            moved=moved,
            behind=behind,
            work=work,
        )
        if behind and not reserve:
            # Counted, not placed: without a per-host limit, the room is
            # all that the other hosts' members need kept.
            order = planner.left_over_room(
                order,
                host_of=host_of,
                behind=behind,
                budgets=left,
                room=stay_room
                - sum(vcpus for name, vcpus in vcpus_on.items() if name not in behind),
            )
        order = _up_to_last_startable(order, left, later, limited, host_of, partial)
        step.counts.empty_placement = None if order else (inputs, left)

        def place(targets: list[planner.Target], waiting_makes_room: bool) -> dict[str, str]:
            twice: set[str] = set()
            spent = 0
            # When no member off the first drained hosts may move twice
            # (waiting makes room), those, most of the order, are not
            # weighed one by one.
            others_may = any(
                second_moves.may_move_twice(
                    moved_before=before,
                    first_drained=False,
                    waiting_makes_room=waiting_makes_room,
                )
                for before in (False, True)
            )
            weighed = order if others_may else [m for m in order if m.instance_id in first]
            for m in weighed:
                on_first = m.instance_id in first
                if on_first and partial is not None and host_of[m.instance_id] == partial:
                    on_first = spent < allowance
                    spent += on_first
                if second_moves.may_move_twice(
                    moved_before=m.instance_id in moved,
                    first_drained=on_first,
                    waiting_makes_room=waiting_makes_room,
                ):
                    twice.add(m.instance_id)
            moves, _blocked = planner.assign_moves(
                order,
                left,
                targets,
                rules,
                twice=twice,
                ahead=ahead,
                held=later,
                reserve=reserve,
                keeps=keeps,
            )
            return dict(moves)

        # No member may start (on a full cloud, most passes while a host
        # opened ahead waits for room): no target to build, nothing to
        # place, nothing to sort.
        plan: dict[str, str] = {}
        if order:
            if window is None:
                window = targeting._window(ctx, step, sample)
            targets = step.targets(window)
            keeps = _keeps_draining(ctx, step, targets)
            plan = place(targets, True)
            if not plan and not _waiting_makes_room(ctx, step, cst):
                plan = place(targets, False)  # waiting would not make room: no limit
        if plan:
            queued = {t.host for t in targets if not t.stays}
            weights: dict[str, float] = {}  # each group's weight worked out once

            def by_weight(m: planner.Member) -> tuple[float, int, str]:
                weight = weights.get(m.group_id)
                if weight is None:
                    weight = weights[m.group_id] = _weight(step, m.group_id)
                return (-weight, -m.vcpus, m.instance_id)

            # Only the members placed are sorted (the key names each
            # member: the same order as sorting them all, without the
            # weights of the groups of those left waiting).
            placed = [m for m in waiting if m.instance_id in plan]
            placed.sort(key=by_weight)
            for m in placed:
                target = plan[m.instance_id]
                if budgets.get(m.group_id, 0) <= 0:
                    continue
                budgets.take(m.group_id)
                inst = views[m.instance_id]
                action = inst.action or default_action(inst.live_migratable, allowed_actions(ctx))
                no = refused.get(inst.instance_id, frozenset())
                # A target the cloud refused in this move is not asked for again:
                # its scheduler chooses (its own placement rules hold).
                goal = None if target in no else target
                why = None
                if goal is not None and goal in queued:
                    # Said in the plan: it lands on a host it will leave again.
                    why = second_moves.why_again(
                        moved_before=m.instance_id in moved,
                        first_drained=m.instance_id in first,
                        wave=cst.first_wave,
                    )
                    if partial is not None and inst.host == partial and not inst.moves:
                        _spend_partial(ctx, step, cst)
                ctx.submit(Move(inst.instance_id, instance_action(action), goal, no, why))
    ends = _recovery(ctx, step, cst).next_end(ctx)
    if ends is not None:
        wake = ends if wake is None else min(wake, ends)
    _wake_at(ctx, cst, wake)
    return held


def _keeps_draining(
    ctx: SessionContext, step: _Step, targets: Sequence[planner.Target]
) -> Callable[[Sequence[tuple[str, str]]], bool] | None:
    """Whether the draining hosts, then the pending ones, can still all
    be emptied once the given moves (instance, target) are sent: the dry
    run that let the hosts open (:func:`~.opening._open_hosts`' ``feasible``), read
    from the views as they are now, with the moves' members on their
    targets. The waves place members as their groups let them move,
    where the dry run had placed them all its own way: a target it kept
    for a member of an anti-affine or per-host-limited group could be
    filled first, and the session failed half-way (tests/
    constrained_layouts.py, ONCE_DEAD_ENDS). A move is run through the
    dry run only when the room where instances stay (on ``targets``, the
    placement's) is short of what the draining hosts hold, or
    when it takes on its target a place a limited member still to move
    could take (:func:`planner.takes_a_place`): the others keep every
    limited member's hosts while the draining hosts fit where instances
    stay (the dry run at every move cost 8x the CPU of a 30-host full
    cloud with per-host limits). None (no check) where no group with a per-host limit
    has a member left to move (room alone then decides, as it did when
    the hosts opened), or while more than :data:`DRY_RUN_HOSTS` hosts
    are pending (as for the opening's dry run). The dry run of the hosts
    after the draining ones is kept per state it starts from
    (``step.counts.verdicts``): most moves checked leave the same state
    once the draining hosts are emptied."""
    if not step.counts.any_limited:
        return None
    pending = ctx.hosts.in_state(HostState.PENDING, type="compute")
    if len(pending) > windows.DRY_RUN_HOSTS:
        return None
    draining: list[planner.HostLoad] = []
    # Whether the room where instances stay is short of what the
    # draining hosts hold (worked out once, when read() first reads).
    short: list[bool] = []
    loads = [step.pending_load(h) for h in pending]
    members: dict[str, planner.Member] = {}
    rules: dict[str, planner.GroupRule] = {}
    # The limited members still to move, per (group, vcpus).
    still: Counter[tuple[str, int]] = Counter()
    dry: list[planner.Target] = []
    leaving: dict[str, list[planner.Member]] = {}

    def read() -> None:
        """What the check reads, once, when a placement first asks."""
        kept = step.draining()
        draining.extend(step.draining_load(h, kept) for h in ctx.hosts.in_state(HostState.DRAINING))
        members.update((m.instance_id, m) for d in draining for m in d.members)
        rules.update(step.rules_of(chain(*(d.members for d in (*draining, *loads)))))
        still.update(
            (m.group_id, m.vcpus)
            for d in (*draining, *loads)
            for m in d.members
            if rules[m.group_id].host_limit() is not None
        )
        # (A move where instances stay takes as much room as it settles.)
        short.append(stay_room < sum(d.vcpus for d in draining))

    def read_dry() -> None:
        """The dry run's targets and the moves in flight, once, when a
        move first needs the dry run. Every host that takes instances,
        not the placement's window: a host with too little room for the
        members placed now may take a smaller instance of a host after
        them."""
        dry.extend(_all_targets(ctx, step))
        dry.extend(step.target(h, False) for h in ctx.hosts.in_state(HostState.DRAINING))
        on = {d.host for d in draining}
        for inst in step.in_action():
            if inst.host in on and inst.target is not None and inst.target != inst.host:
                leaving.setdefault(inst.host, []).append(step.member(inst))

    # Room where instances stay, against what the draining hosts still
    # hold: while it covers them, only a move that takes a limited
    # member's place can leave them unable to empty.
    stay_room = sum(max(0, t.free) for t in targets if t.stays and t.free is not None)
    if any(t.stays and t.free is None for t in targets):
        stay_room = 1 << 30

    def keeps(moves: Sequence[tuple[str, str]]) -> bool:
        if not short:
            read()
        placed = [(members[i], host) for i, host in moves]
        if not short[0] and not planner.takes_a_place(placed, targets, rules, still):
            return True
        if not dry:
            read_dry()
        return planner.drains_after(
            placed,
            draining,
            loads,
            dry,
            rules,
            leaving=leaving,
            verdicts=step.counts.verdicts,
        )

    return keeps


def _placement_inputs(ctx: SessionContext, ready: list[InstanceView]) -> tuple[Any, ...]:
    """What a placement's order is worked out from, as values that
    change with it, but for the budgets: the request (the retiring
    hosts), the hosts', instances' and capacity's change numbers (the
    members, their hosts and flags, the room, the moves in flight, the
    groups' work and what waits on the pending hosts all change with
    them: the views' ``changes``, exact when another process stepped the
    session, whose load answers numbers never answered before), and the
    instances that may start (the lead times and the controls said so at
    ``now``). Read after the moves of :func:`_pump`'s own actions are
    sent (a sent move changes the instances' number)."""
    return (
        ctx.request,
        ctx.hosts.changes(),
        ctx.instances.changes(),
        ctx.capacity.changes(),
        [inst.instance_id for inst in ready],
    )


def _same_empty_placement(
    step: _Step, budgets: _Budgets, ready: list[InstanceView], inputs: tuple[Any, ...]
) -> bool:
    """Whether the last placement that worked out its order found it
    empty with these inputs and the same budgets of the groups of the
    instances that may start (the only budgets the order reads: a
    recovery that ended elsewhere changes none of them; read only when
    the rest is the same): this one would find it empty again (nothing
    to place, no move to send). Only that last one is kept, and a pass
    that finds members to start forgets it, so what a pass changes
    besides the views' numbers (a first drained host's flag as its
    second moves run out) never meets an outcome kept from before it."""
    kept = step.counts.empty_placement
    if kept is None or kept[0][0] is not inputs[0] or kept[0][1:] != inputs[1:]:
        return False
    group = step.counts.group
    left: dict[str, int] = {}
    for inst in ready:
        g = group.get(inst.instance_id) or step.group(inst)
        if g not in left:
            left[g] = budgets.get(g, 0)
    return left == kept[1]


def _spend_partial(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> None:
    """One of the partial first-wave host's second moves is taken; the
    last one makes it a host like the later ones (its other instances
    move only where they stay)."""
    cst.partial_twice -= 1
    if cst.partial_twice > 0 or cst.partial is None:
        return
    view = ctx.hosts.get(cst.partial)
    if view is not None:
        step.wf._set_stage(ctx, view.name, view.stage & ~FIRST_DRAINED)
    cst.partial, cst.partial_twice = None, 0


def _any_may_start(step: _Step, budgets: _Budgets, ready: Iterable[InstanceView]) -> bool:
    """Whether a group of the instances may lose one more member now
    (each group's budget looked up once: a pass reads every instance
    whose action is chosen, most of them of groups that may not)."""
    known = step.counts.group
    seen: set[str] = set()
    for inst in ready:
        g = known.get(inst.instance_id)
        if g is None:
            g = step.group(inst)
        if g in seen:
            continue
        if budgets.get(g, 0) > 0:
            return True
        seen.add(g)
    return False


def _may_be_placed(
    on_host: Mapping[str, Sequence[planner.Member]],
    budgets: Mapping[str, int],
    held: Container[str],
    limited: bool,
    behind: Container[str],
    partial: str | None,
) -> Mapping[str, Sequence[planner.Member]]:
    """Each host's members less those :func:`_up_to_last_startable`
    leaves out wherever they come in the order (neither may start nor
    are held), left out before the order is sorted: at 1,000 hosts most
    of the draining hosts' members. Those of the hosts ``behind`` are
    all kept (``planner.left_over_room`` counts the room left over
    through them, their groups waiting or not), and so are the
    ``partial`` host's. Whole when a group has a per-host limit
    (``limited``)."""
    if limited:
        return on_host
    return {
        host: members
        if host in behind or host == partial
        else [m for m in members if m.instance_id in held or budgets[m.group_id] > 0]
        for host, members in on_host.items()
    }


def _up_to_last_startable(
    order: list[planner.Member],
    budgets: Mapping[str, int],
    held: Container[str],
    limited: bool,
    host_of: Mapping[str, str],
    partial: str | None,
) -> list[planner.Member]:
    """``order`` as ``planner.assign_moves`` reads it, without reserve:
    up to its last member that may start (not held, its group with
    budget left), since it moves none after it and places the held ones
    after it only for those behind them; and before that, without the
    members that neither may start nor are held (their group may lose
    no more now: it passes over them; at 1,000 hosts most of the order)
    but those of the first wave's ``partial`` host (each one counts
    against the host's second moves, startable or not). Whole when a
    group has a per-host limit (``limited``): its members anywhere in
    the order say what the placement keeps room for (``ahead``)."""
    if limited:
        return order
    kept: list[planner.Member] = []
    end = 0
    for m in order:
        if m.instance_id not in held and budgets.get(m.group_id, 0) > 0:
            kept.append(m)
            end = len(kept)
        elif m.instance_id in held or host_of[m.instance_id] == partial:
            kept.append(m)
    del kept[end:]
    return kept


def _not_startable(kept: _Draining, views: Mapping[str, InstanceView]) -> set[str]:
    """The instances of the draining hosts that will leave by a move but
    cannot start now (not asked or answered yet, their lead time, their
    host not disabled yet): those ``kept`` holds (an instance its
    manager moves is not the engine's to place) less those in ``views``
    (those that may start, all held)."""
    return kept.held.keys() - views.keys()


def _by_position(ctx: SessionContext, names: Iterable[str]) -> list[HostView]:
    """The views of the hosts named, in position order (those that are)."""
    views = [v for n in names if (v := ctx.hosts.get(n)) is not None]
    views.sort(key=_POSITION)
    return views


def _disabled_for_drain(ctx: SessionContext, host: HostView, step: _Step) -> bool:
    """Disable ``host`` before the first instance leaves it (no new
    instance lands on a host being emptied). True once it is disabled
    and no move sent to it while it was a target is still on its way."""
    if host.stage & DISABLING:
        return False
    if host.name in step.arrivals():
        return False  # sent while it was a target: they land first, then leave
    if host.enabled:
        ctx.submit(DisableHost(host.name, reason=f"maintenance session {ctx.session_id}"))
        step.wf._set_stage(ctx, host.name, host.stage | DISABLING)
        return False
    return True
