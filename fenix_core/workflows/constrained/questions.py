"""The questions to the projects: which instances on the draining hosts
each project is asked about, with the action proposed for each, and the
waves (``InstanceView.wave``) they were asked in.

The questions do not read again a host whose instances not asked about all
wait for their projects' answers; a move's end reads the instances of its
own wave, kept per project with the counts (``_Counts.asked``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from ...constraints import ConstraintSet, move_action
from ...contract import (
    InstanceView,
    SessionContext,
)
from ...states import HostState, InstanceState
from ..base import WorkflowBase, allowed_actions, default_action
from .caches import _Counts
from .placement import _by_position
from .reads import _Step
from .state import _ASKED, ConstrainedState, _new_stamp


def _ask(wf: WorkflowBase, ctx: SessionContext, step: _Step, cst: ConstrainedState) -> None:
    """Tell the projects about instances on open hosts not asked yet (through
    ``wf``'s :meth:`~fenix_core.workflows.base.WorkflowBase.ask_projects`)."""
    cs = step.cs
    fresh: dict[str, list[InstanceView]] = {}
    # The draining hosts that may hold instances not asked about: those
    # opened or landed on since, and those whose projects still owe an answer.
    unasked, blocked = step.counts.unasked, step.counts.blocked
    waits: dict[str, bool] = {}  # per project: managed and awaiting an answer

    def awaiting(project_id: str) -> bool:
        found = waits.get(project_id)
        if found is None:
            project = ctx.projects.get(project_id)
            found = waits[project_id] = (
                project is not None and project.managed and bool(project.awaiting)
            )
        return found

    for host in _by_position(ctx, unasked):
        draining = host.state == HostState.DRAINING
        held_by = blocked.get(host.name)
        if held_by is not None:
            if draining and all(awaiting(p) for p in held_by):
                continue  # its instances wait for those answers (skipped below)
            del blocked[host.name]
        projects: set[str] = set()
        if draining:
            for inst in ctx.instances.on(host.name):
                if inst.state == InstanceState.PENDING:
                    fresh.setdefault(inst.project_id, []).append(inst)
                    projects.add(inst.project_id)
        if not projects:
            unasked.discard(host.name)
        elif all(awaiting(p) for p in projects):
            blocked[host.name] = frozenset(projects)
    if not fresh:
        return
    wave = cst.wave + 1
    asked: dict[str, list[InstanceView]] = {}
    for project_id, insts in sorted(fresh.items()):
        project = ctx.projects.get(project_id)
        managed = project is not None and project.managed
        if managed and project is not None and project.awaiting:
            continue  # asked already; these wait for the answer
        if managed and any(cs.instance(i.instance_id, i.project_id) for i in insts):
            # Fenix's ETSI workflow asked about one instance at a time, and
            # the managers written for it (OPNFV Doctor's VNFM, Tacker) act
            # on instance_ids[0] only: the others wait for the next question.
            insts = insts[:1]
        for inst in insts:
            own = cs.instance(inst.instance_id, inst.project_id)
            lead = own.lead_time if own is not None else 0
            not_before = ctx.now + timedelta(seconds=lead) if lead else None
            _plan(ctx, step.counts, inst, wave if managed else None, not_before)
            if managed:
                ctx.set_instance_state(inst.instance_id, InstanceState.ACTION_REQUESTED)
            else:
                ctx.set_instance_state(
                    inst.instance_id,
                    InstanceState.ACTION_CHOSEN,
                    action=_action_for(ctx, inst, cs, managed=False),
                )
        if managed:
            asked[project_id] = insts
    if not asked:
        return
    cst.wave = wave
    cst.stamp = step.counts.stamp = _new_stamp()  # the waves asked changed
    for project_id, insts in asked.items():
        # Each project hears only of its own instances, with the action the
        # engine proposes for each from its constraints (it may answer
        # with another one).
        proposed = {i.instance_id: _action_for(ctx, i, cs, managed=True) for i in insts}
        # A lead time holds the moves (not_before): the notice says when.
        held = [p.not_before for i in insts if (p := ctx.instances.get(i.instance_id))]
        wf.ask_projects(
            ctx,
            _ASKED,
            {project_id: [i.instance_id for i in insts]},
            allowed_actions=allowed_actions(ctx),
            metadata={**ctx.request.metadata, "proposed_actions": proposed},
            actions_at=max((t for t in held if t is not None), default=None),
        )


def _action_for(
    ctx: SessionContext, inst: InstanceView, cs: ConstraintSet, *, managed: bool
) -> str:
    """How to move an instance (:func:`fenix_core.constraints.move_action`)."""
    allowed = allowed_actions(ctx)
    own = cs.instance(inst.instance_id, inst.project_id)
    found = move_action(own, allowed, live_migratable=inst.live_migratable, managed=managed)
    return found if found is not None else default_action(inst.live_migratable, allowed)


def _asked_of(ctx: SessionContext, counts: _Counts, project_id: str) -> dict[int, list[str]]:
    """The project's open waves (``_Counts.asked``), read from its
    instances the first time."""
    found = counts.asked.get(project_id)
    if found is None:
        found = counts.asked[project_id] = {}
        for inst in ctx.instances.of(project_id):
            if inst.wave is not None:
                found.setdefault(inst.wave, []).append(inst.instance_id)
    return found


def _plan(
    ctx: SessionContext,
    counts: _Counts,
    inst: InstanceView,
    wave: int | None,
    not_before: datetime | None,
) -> None:
    """Set the instance's wave and lead time (its recovery kept), and
    ``counts.asked`` with them."""
    waves = counts.asked.get(inst.project_id)
    if waves is not None and inst.wave != wave:
        if inst.wave is not None:
            left = waves.get(inst.wave)
            if left is not None and inst.instance_id in left:
                left.remove(inst.instance_id)
                if not left:
                    del waves[inst.wave]
        if wave is not None:
            waves.setdefault(wave, []).append(inst.instance_id)
    ctx.set_instance_plan(
        inst.instance_id, wave=wave, not_before=not_before, impacted_until=inst.impacted_until
    )
