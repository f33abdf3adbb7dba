"""Scenario generators shared by the benchmarks: a simulated cloud, its
projects with scripted managers, and instance-group constraints."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import attrs

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.constraints import CloudConstraints, ConstraintSet, GroupConstraints
from fenix_core.errors import FenixError
from fenix_core.model import Reply
from fenix_core.testing import ScriptedManager, SimClock, SimulatedCloud, TimedAction


class GroupedCloud(SimulatedCloud):
    """A SimulatedCloud that reports the scenario's instance groups as a
    ConstraintSource does (OpenStack server groups): the constrained
    scenarios get their groups and rules from the cloud, as an OpenStack
    deployment gives them, rather than by one constraint-API call per group
    and per instance during the setup."""

    cloud_groups: CloudConstraints = CloudConstraints()
    # ``cloud_groups`` indexed (for the one they were built from): each
    # member's, group's and rule's position, and the rules of each member.
    _indexed: CloudConstraints | None = None
    _member_at: dict[str, int]
    _group_at: dict[str, int]
    _rules_of: dict[str, list[int]]

    def cloud_constraints(self, instances: Any) -> CloudConstraints:
        """The groups with a member among ``instances``, as the OpenStack
        driver reports them (a listing of one emptied host reports none).
        Looked up per instance listed: a listing of one host costs the same
        in any fleet."""
        found = self.cloud_groups
        if self._indexed is not found:
            self._index(found)
        ids = {i.instance_id for i in instances}
        at = self._member_at
        mine = sorted((i for i in ids if i in at), key=at.__getitem__)
        members = {iid: found.members[iid] for iid in mine}
        named = {self._group_at[g] for g in members.values() if g in self._group_at}
        rules = sorted({n for i in ids for n in self._rules_of.get(i, ())})
        return CloudConstraints(
            groups=tuple(found.groups[n] for n in sorted(named)),
            members=members,
            placement=tuple(found.placement[n] for n in rules),
        )

    def _index(self, found: CloudConstraints) -> None:
        self._member_at = {iid: n for n, iid in enumerate(found.members)}
        self._group_at = {g.group_id: n for n, g in enumerate(found.groups)}
        self._rules_of = {}
        for n, rule in enumerate(found.placement):
            for member in rule.members:
                self._rules_of.setdefault(member, []).append(n)
        self._indexed = found


class ReplyFrontEnd:
    """The managers' replies as a REST front end serving many managers
    receives them: the replies sent in one simulated instant arrive together
    and are recorded with one ``engine.reply_many`` (one transaction) once
    the managers of that instant have all answered (a SimClock callback at
    the same instant, so the simulated time of every reply is unchanged).
    Each reply is durable before the clock moves on, as each HTTP request
    would be answered only after its commit. A refused reply is kept in
    ``errors`` and in its manager's ``errors``."""

    def __init__(self, engine: Engine, clock: SimClock) -> None:
        self.engine = engine
        self.clock = clock
        self.managers: dict[str, ScriptedManager] = {}
        self.pending: list[tuple[str, Reply]] = []
        self.errors: list[FenixError] = []
        self.bursts = 0

    def send(
        self, session_id: str, project_id: str, state: str, instance_actions: dict[str, str]
    ) -> None:
        if not self.pending:
            self.clock.call_at(self.clock.now(), self.flush)
        reply = Reply(project_id=project_id, state=state, instance_actions=instance_actions)
        self.pending.append((session_id, reply))

    def flush(self) -> None:
        burst, self.pending = self.pending, []
        if not burst:
            return
        self.bursts += 1
        for (_, reply), error in zip(burst, self.engine.reply_many(burst), strict=True):
            if error is not None:
                self.errors.append(error)
                manager = self.managers.get(reply.project_id)
                if manager is not None:
                    manager.errors.append(error)


@attrs.frozen
class Scenario:
    """What a benchmark run needs; ``build`` makes a fresh engine for it."""

    hosts: int
    instances: int
    projects: int
    groups: int = 0
    host_vcpus: int = 40
    host_work: float = 600.0
    migration_seconds: float = 30.0
    max_impacted: tuple[int, int] = (1, 3)
    recovery: tuple[int, int] = (60, 300)
    seed: int = 7
    instance_vcpus: tuple[int, ...] = (1, 2)
    # Every other project (in name order) answers this many seconds late; the
    # rest answer each notification at once.
    late_answer_seconds: float = 0.0
    # Hosts left empty (spares in the session), after the loaded ones.
    spare_hosts: int = 0

    def build(
        self,
        workflow: str,
        *,
        database_url: str = "sqlite://",
        constrained: bool = True,
        bursts: bool = True,
        history: bool = False,
    ) -> Run:
        """A fresh :class:`fenix_core.Engine` on a simulated cloud for the
        scenario. ``constrained``: the instance groups and their rules are
        the cloud's (:class:`GroupedCloud`). ``bursts``: the managers reply
        through a :class:`ReplyFrontEnd` (the replies of an instant in one
        ``reply_many``); False: one ``engine.reply`` each, from the
        notification's receiver. ``history``: the managers keep what they
        received and sent (a long run's every notification: off for the
        benchmarks, which read neither)."""
        rng = random.Random(self.seed)
        clock = SimClock()
        # No clock yet: the engine gives it (SimulatedCloud's plug-in hook), and
        # the cloud records events from then on; the setup's placement is its
        # baseline instead of an instance_added event per instance.
        cloud = GroupedCloud(
            migration_seconds=self.migration_seconds,
            live_migration_seconds=self.migration_seconds,
        )
        names = [f"compute-{h:05d}" for h in range(self.hosts)]
        for name in names:
            cloud.add_host(name, vcpus=self.host_vcpus)
        for h in range(self.spare_hosts):
            cloud.add_host(f"spare-{h:05d}", vcpus=self.host_vcpus)
        group_ids = [f"group-{g:04d}" for g in range(self.groups)]
        group_project = {g: f"project-{i % self.projects:04d}" for i, g in enumerate(group_ids)}
        per_host = self.instances // self.hosts
        members: dict[str, str] = {}
        owner: dict[str, str] = {}
        n = 0
        for name in names:
            for _ in range(per_host):
                iid = f"vm-{n:07d}"
                if group_ids:
                    group = rng.choice(group_ids)
                    project = group_project[group]
                    members[iid] = group
                else:
                    project = f"project-{rng.randrange(self.projects):04d}"
                cloud.add_instance(iid, project, name, vcpus=rng.choice(self.instance_vcpus))
                owner[iid] = project
                n += 1
        plugins = [cloud, TimedAction("upgrade", self.host_work)]
        engine = Engine(database_url, clock=clock, plugins=plugins)
        projects = sorted(set(owner.values()))
        # The constrained workflow lets managers leave the choice to the engine.
        action = None if workflow == "constrained" else "LIVE_MIGRATE"
        front = ReplyFrontEnd(engine, clock) if bursts else None
        managers = [
            ScriptedManager(
                engine,
                p,
                cloud=cloud,
                action=action,
                delay=self.late_answer_seconds * (n % 2),
                send=None if front is None else front.send,
                history=history,
            )
            for n, p in enumerate(projects)
        ]
        if front is not None:
            front.managers = {m.project_id: m for m in managers}
        rules: dict[str, dict[str, Any]] = {}
        if constrained:
            for g in group_ids:
                rules[g] = {
                    "group_id": g,
                    "project_id": group_project[g],
                    "max_impacted_members": rng.randint(*self.max_impacted),
                    "recovery_time": rng.randint(*self.recovery),
                }
            cloud.cloud_groups = CloudConstraints(
                groups=tuple(GroupConstraints.from_dict(r) for r in rules.values()),
                members=dict(members),
            )
        request = SessionRequest(
            workflow=workflow, actions=[ActionSpec(plugin="upgrade", type="host")]
        )
        return Run(engine, cloud, clock, managers, request, Counter(members.values()), rules, front)


@attrs.define
class Run:
    engine: Engine
    cloud: GroupedCloud
    clock: SimClock
    managers: list[ScriptedManager]
    request: SessionRequest
    members_by_group: Counter[str]
    rules: dict[str, dict[str, Any]]
    front: ReplyFrontEnd | None = None

    def constraints(self) -> ConstraintSet:
        """The rules the run had to keep (the cloud's)."""
        return ConstraintSet(cloud=self.cloud.cloud_groups)


REFERENCE = Scenario(hosts=100, instances=2000, projects=20, groups=60)


def random_layout(seed: int, *, max_hosts: int = 200) -> Scenario:
    """One layout of the random family: 10 to ``max_hosts`` hosts, a spare
    host or not, 1-4 groups per project with their own ranges of limits and
    recovery times, a full (about 75 % of the vcpus) or a half-full cloud."""
    rng = random.Random(seed)
    hosts = rng.randint(10, max(10, max_hosts))
    projects = rng.randint(1, max(1, min(20, hosts // 3)))
    per_host = rng.choice((20, 10))  # 1.5 vcpus each of 40: full, or half
    low_impact = rng.randint(1, 2)
    low_recovery = rng.choice((0, 30, 60))
    return Scenario(
        hosts=hosts,
        instances=hosts * per_host,
        projects=projects,
        groups=projects * rng.randint(1, 4),
        max_impacted=(low_impact, low_impact + rng.randint(0, 2)),
        recovery=(low_recovery, low_recovery + rng.choice((60, 120, 240))),
        seed=seed,
        spare_hosts=rng.choice((0, 0, 1, 2)),
    )
