"""tests/contract_driver.py's Driver for the constrained workflow on the
contract: several hosts may be out at once, and after every step the rules
of the groups are checked from what the driver saw (not from the
workflow's own records): members impacted at once (moving, or within
recovery_time after their move) and members per host (anti-affinity,
max_instances_per_host, arrivals in flight counted)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from contract_driver import Driver, LoggingContext, start_time

from fenix_core import SessionRequest
from fenix_core.constraints import ConstraintSet, GroupConstraints, InstanceConstraints
from fenix_core.contract import (
    HostView,
    InstanceView,
    Move,
    Operation,
    OpRef,
    ProjectView,
    Watch,
)
from fenix_core.states import HostState, InstanceState
from fenix_core.workflows import ConstrainedWorkflow

#: host -> [(instance, project, vcpus)]
Layout = Mapping[str, Sequence[tuple[str, str, int]]]
OUT = frozenset({HostState.DRAINING, HostState.DRAINED, HostState.IN_MAINTENANCE})


def group(gid: str, project: str, **rules: Any) -> GroupConstraints:
    return GroupConstraints.from_dict({"group_id": gid, "project_id": project, **rules})


def member(iid: str, project: str, gid: str | None, **rules: Any) -> InstanceConstraints:
    return InstanceConstraints.from_dict(
        {"instance_id": iid, "project_id": project, "group_id": gid, **rules}
    )


def cluster(
    layout: Layout,
    *,
    vcpus: int = 8,
    managed: Sequence[str] = (),
    groups: Sequence[GroupConstraints] = (),
    members: Sequence[InstanceConstraints] = (),
    request: SessionRequest | None = None,
    types: Mapping[str, str] | None = None,
    live: Mapping[str, bool] | None = None,
    closed: Mapping[str, str] | None = None,
) -> LoggingContext:
    projects = sorted({p for insts in layout.values() for _, p, _ in insts})
    req = request or SessionRequest(workflow="constrained", hosts=tuple(layout))
    return LoggingContext(
        now=start_time(),
        request=req,
        workflow="constrained",
        hosts=[
            HostView(name, (types or {}).get(name, "compute"), HostState.PENDING, vcpus, True, n)
            for n, name in enumerate(layout)
        ],
        instances=[
            InstanceView(iid, p, host, size, InstanceState.PENDING, (live or {}).get(iid, True))
            for host, insts in layout.items()
            for iid, p, size in insts
        ],
        projects=[ProjectView(p, p in managed, None, None) for p in projects],
        constraints=ConstraintSet.of(
            groups,
            members,
            default_group=req.default_group_constraints or ConstraintSet().default_group,
        ),
        closed=closed,
    )


class ConstrainedDriver(Driver):
    """Checks the group rules after every step (see the module docstring)."""

    def __init__(self, ctx: LoggingContext, **kwargs: Any) -> None:
        super().__init__(ctx, ConstrainedWorkflow(), **kwargs)
        self.started: dict[str, datetime] = {}  # instance -> its move started
        self.ended: dict[str, datetime] = {}  # instance -> its last move ended
        self.recovery: dict[str, float] = {}  # instance -> its group's recovery then
        self.peak_out = 0  # most hosts out of service at once
        self.peak_moving = 0
        self.moves_of: Counter[str] = Counter()

    def _check_submitted(self, op: Operation) -> None:
        super()._check_submitted(op)
        if isinstance(op, Move | Watch):
            self.started[op.instance_id] = self.ctx.now
            self.ended.pop(op.instance_id, None)

    def _end(self, ref: OpRef, op: Operation) -> None:
        if isinstance(op, Move | Watch):
            inst = self.ctx.instances.get(op.instance_id)
            assert inst is not None
            cs = self.ctx.constraints
            self.recovery[op.instance_id] = float(
                cs.group_of(op.instance_id, inst.project_id).recovery_time
            )
            before = inst.host
            super()._end(ref, op)
            self.ended[op.instance_id] = self.ctx.now
            after = self.ctx.instances.get(op.instance_id)
            if after is not None and after.host != before:
                self.moves_of[op.instance_id] += 1
            return
        super()._end(ref, op)

    def _check_state(self) -> None:
        ctx = self.ctx
        hosts = list(ctx.hosts)
        out = [h.name for h in hosts if h.state in OUT]
        self.peak_out = max(self.peak_out, len(out))
        cap = ctx.request.max_parallel_hosts
        assert cap is None or len(out) <= cap, f"{out} out of service, max_parallel_hosts {cap}"
        used: dict[str, int] = {}
        for inst in ctx._instances.values():
            if inst.state != InstanceState.GONE:
                used[inst.host] = used.get(inst.host, 0) + inst.vcpus
        for host in hosts:
            assert used.get(host.name, 0) <= host.vcpus, f"{host.name} over capacity"
        self.check_groups()

    def check_groups(self) -> None:
        ctx, cs, now = self.ctx, self.ctx.constraints, self.ctx.now
        impacted: Counter[str] = Counter()
        per_host: Counter[tuple[str, str]] = Counter()
        arrived: set[tuple[str, str]] = set()
        moving = 0
        for inst in ctx._instances.values():
            if inst.state == InstanceState.GONE:
                continue
            key = cs.group_key_of(inst.instance_id, inst.project_id)
            rules = cs.group_by_key(key)
            start = self.started.get(inst.instance_id)
            end = self.ended.get(inst.instance_id)
            if start is not None and end is None:
                impacted[key] += 1
                moving += 1
            elif (
                end is not None
                and end + timedelta(seconds=self.recovery.get(inst.instance_id, 0.0)) > now
            ):
                impacted[key] += 1
            limit = 1 if rules.anti_affinity_group else (rules.max_instances_per_host or None)
            if limit is not None:
                per_host[(key, inst.host)] += 1
                if inst.moves:
                    arrived.add((key, inst.host))
                if inst.state == InstanceState.IN_ACTION and inst.target not in (None, inst.host):
                    per_host[(key, str(inst.target))] += 1
                    arrived.add((key, str(inst.target)))
        self.peak_moving = max(self.peak_moving, moving)
        for key, count in impacted.items():
            allowed = cs.group_by_key(key).max_impacted_members
            assert count <= allowed, f"group {key}: {count} impacted at {now}, allows {allowed}"
        # Where a member arrived (or is arriving): the layout before the
        # session may break a limit already, a move never does.
        for (key, host), count in per_host.items():
            if (key, host) not in arrived:
                continue
            rules = cs.group_by_key(key)
            limit = 1 if rules.anti_affinity_group else rules.max_instances_per_host
            assert count <= limit, f"group {key}: {count} members on {host}, allows {limit}"


def run(ctx: LoggingContext, **kwargs: Any) -> ConstrainedDriver:
    driver = ConstrainedDriver(ctx, **kwargs)
    driver.run()
    return driver


def told(ctx: LoggingContext, project: str) -> list[str]:
    return [s for p, s in ctx.log if p == project]


__all__ = ["ConstrainedDriver", "cluster", "group", "member", "run", "start_time", "told"]
