"""What one decision reads more than once (:class:`_Step`, built per hook
call), and the per-pass reads of the recoveries and the groups' weights."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import (
    Iterable,
    Mapping,
)

from ... import planner
from ...contract import (
    HostView,
    InstanceView,
    SessionContext,
)
from ...states import (
    HostState,
    InstanceState,
)
from .budgets import _Budgets, _Impacted, _Recovery
from .caches import _Counts, _GroupsOn, _PendingLoad
from .draining import _Draining
from .state import (
    _GROUP_OF,
    _MEMBER_STATES,
    _MOVE_ESTIMATE,
    _NONE,
    _OPEN,
    ConstrainedState,
    Waves,
    _count_down,
)


class _Step:
    """What one decision reads more than once (built per hook call)."""

    def __init__(
        self,
        wf: Waves,
        ctx: SessionContext,
        counts: _Counts,
        budgets: _Budgets | None = None,
    ) -> None:
        self.wf, self.ctx, self.counts = wf, ctx, counts
        self._budgets = budgets
        self.cs = counts.constraints
        self.rules = counts.rules
        self._on_host: dict[str, Counter[str]] = {}
        self._arrivals: dict[str, list[InstanceView]] | None = None
        self._in_action: list[InstanceView] | None = None
        self._moving: dict[str, InstanceView] | None = None  # read with the arrivals
        self._free = ctx.capacity.free  # read for every target of a window

    def group(self, inst: InstanceView) -> str:
        found = self.counts.group.get(inst.instance_id)
        if found is None:
            found = self.counts.group[inst.instance_id] = self.cs.group_key_of(
                inst.instance_id, inst.project_id
            )
        return found

    def rule(self, key: str) -> planner.GroupRule:
        found = self.rules.get(key)
        if found is None:
            found = self.rules[key] = planner.GroupRule.of(self.cs.group_by_key(key), key)
        return found

    def rules_of(self, members: Iterable[planner.Member]) -> dict[str, planner.GroupRule]:
        """The rules of the members' groups, in the order the groups first
        come: each group looked up once, not once per member (a decision
        reads the members of up to 128 candidate hosts)."""
        rule, kept = self.rule, self.rules.get
        return {
            g: found if (found := kept(g)) is not None else rule(g)
            for g in dict.fromkeys(map(_GROUP_OF, members))
        }

    def limited(self, key: str) -> bool:
        """Whether the group has a per-host limit (anti-affinity or a maximum)."""
        found = self.counts.limited.get(key)
        if found is None:
            found = self.counts.limited[key] = self.rule(key).host_limit() is not None
        return found

    def any_limited(self, groups: Mapping[str, object]) -> bool:
        """Whether one of the groups (the keys) has a per-host limit: read
        in one go while each one's answer is kept (a placement asks about
        every group of the draining hosts' members)."""
        known = self.counts.limited
        if known.keys() >= groups.keys():
            return any(map(known.__getitem__, groups))
        return any(map(self.limited, groups))

    def member(self, inst: InstanceView) -> planner.Member:
        """The instance as the planner takes it (kept with the counts: a
        Member is immutable, and an instance's group is fixed for the
        constraints the counts were built on)."""
        kept = self.counts.members.get(inst.instance_id)
        if kept is not None and kept.vcpus == inst.vcpus:
            return kept
        found = self.counts.members[inst.instance_id] = planner.Member(
            inst.instance_id, inst.project_id, self.group(inst), inst.vcpus
        )
        return found

    def members(self, insts: Iterable[InstanceView]) -> list[planner.Member]:
        """:meth:`member` of each instance, the kept ones read in the loop
        (a decision reads the members of every draining host)."""
        kept, member, out = self.counts.members, self.member, []
        for inst in insts:
            found = kept.get(inst.instance_id)
            out.append(found if found is not None and found.vcpus == inst.vcpus else member(inst))
        return out

    def members_on(self, host: str) -> list[planner.Member]:
        """The host's members (:data:`_MEMBER_STATES`), its load."""
        return self.members(i for i in self.ctx.instances.on(host) if i.state in _MEMBER_STATES)

    def draining(self) -> _Draining:
        """The draining hosts' instances still to leave, up to date."""
        kept = self.counts.draining
        found = _Draining.read(self.ctx) if kept is None else kept.brought_up_to_date(self.ctx)
        self.counts.draining = found
        return found

    def draining_load(self, view: HostView, draining: _Draining) -> planner.HostLoad:
        """A draining host's members (``members_on``), from ``draining``:
        the same load while none of its instances changed."""
        found = draining.loads.get(view.name)
        if found is None or found.position != view.position:
            insts = draining.on.get(view.name)
            members = (
                self.members([insts[i] for i in sorted(insts)])
                if insts is not None
                else self.members_on(view.name)
            )
            found = draining.loads[view.name] = planner.HostLoad(
                view.name, tuple(members), view.position
            )
        return found

    def pending_load(self, view: HostView) -> planner.HostLoad:
        """A pending host's members (kept between steps: nothing leaves a
        pending host, an arrival drops its entry)."""
        return self.pending(view).load

    def pending(self, view: HostView) -> _PendingLoad:
        found = self.counts.pending_loads.get(view.name)
        if found is None or found.load.position != view.position:
            found = self.counts.pending_loads[view.name] = _PendingLoad.of(
                view.name, view.position, self.members_on(view.name)
            )
        return found

    def ruled(self, instance_id: str) -> bool:
        """Whether the cloud's placement rules name the instance."""
        found = self.counts.ruled.get(instance_id)
        if found is None:
            found = self.counts.ruled[instance_id] = bool(
                self.ctx.capacity.limits(instance_id).rules
            )
        return found

    def in_action(self) -> list[InstanceView]:
        """The instances moving now (kept: :meth:`~.draining._Draining.in_action`),
        read once per decision (the budgets
        and the arrivals read them; no move starts
        between those reads: a decision's moves are sent at its end)."""
        if self._in_action is None:
            moving = self._moving
            self._in_action = (
                self.draining().in_action()
                if moving is None
                else [moving[i] for i in sorted(moving)]
            )
        return self._in_action

    def arrivals(self) -> dict[str, list[InstanceView]]:
        """Target -> instances moving there now (each list in id order), as
        :meth:`in_action` gives them: read with them, from what
        :class:`_Draining` keeps (the moves are taken as they are, sorted
        only if :meth:`in_action` is asked), unless they were read before."""
        if self._arrivals is None:
            if self._in_action is None:
                kept = self.draining()
                self._moving = dict(kept.moving)
                self._arrivals = kept.arrivals()
            else:
                self._arrivals = {}
                for inst in self._in_action:
                    if inst.target is not None and inst.target != inst.host:
                        self._arrivals.setdefault(inst.target, []).append(inst)
        return self._arrivals

    def _limited_on(self, host: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for inst in [*self.ctx.instances.on(host), *self.arrivals().get(host, ())]:
            if inst.state == InstanceState.GONE:
                continue
            g = self.group(inst)
            if self.rule(g).host_limit() is not None:
                found[g] += 1
        return found

    def budgets(self, cst: ConstrainedState) -> _Budgets:
        """The groups' budgets (:class:`_Budgets`), worked out once per pass
        of the waves: the moves started in it take from them."""
        if self._budgets is None:
            self._budgets = _Budgets(self.rule, self.counts.todo, _impacted(self.ctx, self, cst))
        return self._budgets

    def next(self) -> _Step:
        """A fresh step for the next decision of the same pass (the moves just
        sent arrive somewhere), with the budgets as they are now."""
        return _Step(self.wf, self.ctx, self.counts, self._budgets)

    def targets(self, window: Iterable[tuple[HostView, bool]]) -> list[planner.Target]:
        """The targets of a window's hosts (:meth:`target` of each, in one
        loop: a window is up to TARGET_WINDOW hosts)."""
        if self.counts.any_limited:
            return [self.target(view, stays) for view, stays in window]
        free_of, kept, out = self._free, self.counts.targets, []
        walked = self._walked_free().get
        for view, stays in window:
            name = view.name
            free = walked(name)
            if free is None:
                free = free_of(name)
            found = kept.get(name)
            if found is None or found.free != free or found.stays != stays:
                found = kept[name] = planner.Target(name, free, stays, _NONE)
            out.append(found)
        return out

    def _walked_free(self) -> Mapping[str, int]:
        """The free vCPUs per host the kept walk holds (:class:`_Walk`, the
        window's hosts mostly) when they are those of now (no host's
        capacity changed since it was brought up to date); else none."""
        walks = self.counts.walks
        if len(walks) != 1:
            return _NONE
        changed = self.ctx.capacity.changed_since(self.counts.walks_mark)
        if changed is None or changed:
            return _NONE
        (walk,) = walks.values()
        return walk.free

    def target(self, view: HostView, stays: bool) -> planner.Target:
        if not self.counts.any_limited:  # no member is counted on any host
            # The window's hosts change little between decisions: a target
            # whose room and kind did not change is the one built before.
            free = self._free(view.name)
            kept = self.counts.targets.get(view.name)
            if kept is None or kept.free != free or kept.stays != stays:
                kept = self.counts.targets[view.name] = planner.Target(
                    view.name, free, stays, _NONE
                )
            return kept
        return planner.Target(
            view.name,
            self._free(view.name),
            stays,
            _GroupsOn(
                self._on_host, self._limited_on, self.limited, self.counts.limited, view.name
            ),
        )


def _impacted(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> _Impacted:
    """Members of each group impacted now: moving, or within recovery_time
    after a move (read from the views: the moves in flight and the
    instances in recovery, not the groups)."""
    recovery = _recovery(ctx, step, cst)
    # The moving per group are kept (a few hundred moves at 1,000
    # hosts, a few of which start or end between two passes), less
    # those in recovery: moving again while in recovery, counted once.
    kept = step.draining()
    moving = dict(kept.moving_per_group(step.group))  # (a copy: this pass's)
    for iid in recovery.group_of.keys() & kept.moving.keys():
        _count_down(moving, kept.moving_group[iid])
    return _Impacted(recovery.by_group, moving)


def _recovery(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> _Recovery:
    """The instances still in their group's recovery_time, those whose
    recovery ended taken out."""
    found = _recovering(ctx, step, cst)
    for iid in found.ended(ctx, ctx.now):
        found.drop(iid)
    return found


def _recovering(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> _Recovery:
    """The instances in recovery as last read (those whose recovery ended
    since are taken out by :func:`_recovery`); built from the instances'
    ``impacted_until`` when this process has not mirrored every recovery
    started (another process stepped the session, or the counts were
    built again): one pass over the session's instances."""
    counts = step.counts
    found = counts.recovery
    if found is None or found.source != cst.recoveries:
        found = counts.recovery = _Recovery(cst.recoveries)
        now = ctx.now
        for state in InstanceState:
            for view in ctx.instances.in_state(state):
                until = view.impacted_until
                if until is not None and until > now:
                    found.add(view.instance_id, step.group(view), until)
    return found


def _waiting_makes_room(ctx: SessionContext, step: _Step, cst: ConstrainedState) -> bool:
    """Whether something under way may yet make room where instances stay:
    a host being maintained, a move, a group's recovery_time."""
    if ctx.instances.in_state(InstanceState.IN_ACTION) or _recovering(ctx, step, cst).group_of:
        return True
    for host in ctx.hosts.in_state(*_OPEN):
        if host.type != "compute":
            continue
        if host.state != HostState.DRAINING or not step.wf._in_scope_on(ctx, host.name):
            return True
    return False


def _weight(step: _Step, group_id: str) -> float:
    """How long a group still needs at best: its remaining rounds of moves."""
    pace = step.counts.pace.get(group_id)
    if pace is None:
        g = step.cs.group_by_key(group_id)
        pace = step.counts.pace[group_id] = (
            g.max_impacted_members,
            _MOVE_ESTIMATE + g.recovery_time,
        )
    rounds = math.ceil(max(0, step.counts.todo[group_id]) / pace[0])
    return rounds * pace[1]
