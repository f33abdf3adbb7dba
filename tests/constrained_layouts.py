"""Layouts the constrained properties (tests/test_constrained.py,
tests/test_constrained_v2.py) once failed on, in the form their ``clusters()``
strategy draws: replayed as ``@example`` on every run."""

from __future__ import annotations

from typing import Any


def _group(*, anti_affine: bool, impacted: int, per_host: int, recovery: int) -> dict[str, Any]:
    return {
        "max_impacted_members": impacted,
        "max_instances_per_host": per_host,
        "anti_affinity_group": anti_affine,
        "recovery_time": recovery,
    }


#: Anti-affine g0 (p0) has four members on five hosts and starts broken (vm-0
#: and vm-2 share cmp-0, vm-7 and vm-8 cmp-3); g2 (p0) is anti-affine too, g1
#: (p1) at most 2 per host. Draining cmp-1 placed vm-3 and vm-4 on the emptied
#: cmp-0, which left g0's last two members (on cmp-3) one host without g0 with
#: room: the session failed after four hosts ("cannot empty any host"). The
#: placement counted cmp-2 and cmp-4, which hold a g0 member already, as
#: places kept for g0 (the rules it was given lacked g0's limit).
ANTI_AFFINE_PAIR_LEFT_ONE_HOST: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p0", 2), ("vm-1", "p0", 2), ("vm-2", "p0", 1)],
        "cmp-1": [("vm-3", "p0", 2), ("vm-4", "p1", 2), ("vm-5", "p1", 1)],
        "cmp-2": [("vm-6", "p0", 1)],
        "cmp-3": [("vm-7", "p0", 2), ("vm-8", "p0", 2)],
        "cmp-4": [("vm-9", "p0", 1)],
    },
    "capacity": 5,
    "groups": [
        _group(anti_affine=True, impacted=1, per_host=0, recovery=30),
        _group(anti_affine=False, impacted=3, per_host=2, recovery=0),
        _group(anti_affine=True, impacted=1, per_host=0, recovery=0),
    ],
    "membership": {
        "vm-0": 0,
        "vm-1": None,
        "vm-2": 0,
        "vm-3": None,
        "vm-4": 1,
        "vm-5": 1,
        "vm-6": 2,
        "vm-7": 0,
        "vm-8": 0,
        "vm-9": 2,
    },
    "managed": (),
    "cap": 1,
}

#: Anti-affine g0 (p0, managed) with three members on four hosts, two of them
#: on cmp-0 and cmp-3 and one among three instances on cmp-2: failed before
#: the s5-moves merge, passes since.
ANTI_AFFINE_MEMBER_ON_THE_FULLEST_HOST: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p0", 1)],
        "cmp-1": [("vm-1", "p0", 2)],
        "cmp-2": [("vm-2", "p0", 2), ("vm-3", "p0", 1), ("vm-4", "p1", 2)],
        "cmp-3": [("vm-5", "p0", 1)],
    },
    "capacity": 5,
    "groups": [_group(anti_affine=True, impacted=1, per_host=0, recovery=0)],
    "membership": {"vm-0": 0, "vm-1": None, "vm-2": 0, "vm-3": None, "vm-4": None, "vm-5": 0},
    "managed": ("p0",),
    "cap": None,
}


# Layouts where a plan exists (the check before the first wave finds an order
# to drain every host in, planner.drain_sequence) but the session failed
# half-way: found by running the properties with 1,000-2,000 examples per
# seed. The placement keeps a host able to take ONE member of each limited
# group still to come (planner.assign_moves' ``ahead``), not as many distinct
# hosts as the group needs; the dry run is what sees further.

#: Anti-affine g2 has five members on six hosts (two pairs share cmp-1 and
#: cmp-2): each host that stays must hold one during the last drains. After
#: cmp-3 and cmp-0, cmp-5's three instances (none of g2) all went to cmp-0, a
#: host without g2; the two pairs then lacked distinct hosts without g2 with
#: room, and the session failed after three hosts ("cannot empty any host").
#: The dry run that let cmp-5 open had placed its members all at once: vm-9
#: on cmp-0, then vm-10 on cmp-3 (cmp-0 already held vm-9 of the same
#: implicit group of p0, counted by assign_moves within one call), and it
#: found an order for the rest. The waves move them in rounds of each
#: group's budget (p0's implicit group: one at a time) and re-place what is
#: left after each round: vm-9 and vm-11 went to cmp-0, and vm-10, placed
#: alone afterwards, went to cmp-0 too (the fullest; a target does not count
#: the members of a group without a per-host limit). Fixed: the dry run
#: empties each host in those rounds, counting on a target only the members
#: of limited groups (planner.drain_sequence, ``_emptied_in_rounds``), so it
#: sees the dead end and cmp-5 waits; cmp-4 and cmp-1 go first. (Counting
#: every group's members on the targets, in the waves too, also ended it
#: DONE but cost the reference scenario 258 s: benchmarks/makespan.py, 12,703
#: s instead of 12,445 s.)
ANTI_AFFINE_FIVE_ON_SIX_HOSTS: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p1", 2)],
        "cmp-1": [("vm-1", "p0", 2), ("vm-2", "p0", 1), ("vm-3", "p0", 1)],
        "cmp-2": [("vm-4", "p0", 1), ("vm-5", "p0", 2), ("vm-6", "p0", 1)],
        "cmp-3": [],
        "cmp-4": [("vm-7", "p1", 2), ("vm-8", "p0", 2)],
        "cmp-5": [("vm-9", "p0", 2), ("vm-10", "p0", 1), ("vm-11", "p1", 1)],
    },
    "capacity": 4,
    "groups": [
        _group(anti_affine=True, impacted=2, per_host=0, recovery=0),
        _group(anti_affine=False, impacted=3, per_host=2, recovery=120),
        _group(anti_affine=True, impacted=3, per_host=2, recovery=0),
    ],
    "membership": {
        "vm-0": 1,
        "vm-1": 0,
        "vm-2": 2,
        "vm-3": 2,
        "vm-4": 2,
        "vm-5": 0,
        "vm-6": 2,
        "vm-7": None,
        "vm-8": 2,
        "vm-9": None,
        "vm-10": None,
        "vm-11": 1,
    },
    "managed": (),
    "cap": 1,
}

#: Three hosts exactly full while one is out (8 vcpus on 3 x 4). The first
#: wave opens cmp-0; p1 is managed and asked about one instance at a time, so
#: vm-0 (1 vcpu) was placed alone, on cmp-1's 2 free vcpus, before vm-1 (2
#: vcpus, anti-affine g1 with vm-4 on cmp-2) was answered: vm-1 had no host
#: left ("no target host has room for vm-1"). vm-0 on cmp-2 (1 free) and vm-1
#: on cmp-1 drain it. Fixed: the placement also places, in their turn, the
#: members of the draining hosts that cannot start yet (planner.assign_moves'
#: ``held``), so vm-1 keeps cmp-1.
ASKED_ONE_AT_A_TIME_TAKES_THE_ROOM_OF_THE_NEXT: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p1", 1), ("vm-1", "p1", 2)],
        "cmp-1": [("vm-2", "p0", 1), ("vm-3", "p0", 1)],
        "cmp-2": [("vm-4", "p1", 1), ("vm-5", "p0", 1), ("vm-6", "p1", 1)],
    },
    "capacity": 4,
    "groups": [
        _group(anti_affine=True, impacted=1, per_host=2, recovery=120),
        _group(anti_affine=True, impacted=2, per_host=1, recovery=0),
        _group(anti_affine=True, impacted=1, per_host=2, recovery=30),
    ],
    "membership": {
        "vm-0": None,
        "vm-1": 1,
        "vm-2": 0,
        "vm-3": None,
        "vm-4": 1,
        "vm-5": 2,
        "vm-6": None,
    },
    "managed": ("p0", "p1"),
    "cap": None,
}

#: g0 (p0, at most 2 per host) has five members, three on cmp-0 (over its
#: limit at the start). On the contract driver (tests/test_constrained_v2.py)
#: cmp-1, cmp-2 and cmp-3 were maintained first and cmp-0's three members then
#: found no room within the limit: SCALE_IN, then failed after three hosts.
#: The dry run that let cmp-3 open had put one of its 1-vcpu instances on
#: cmp-1's last free vcpu, the moves placed in rounds (group budgets, vm-3 of
#: managed p0 not answered yet) filled cmp-2 instead, and g0's last member had
#: nowhere to go. Fixed with the layout above (``held``). The engine run
#: (tests/test_constrained.py) ended DONE already.
PER_HOST_LIMIT_OVER_AT_THE_START: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p0", 2), ("vm-1", "p0", 2), ("vm-2", "p0", 1)],
        "cmp-1": [("vm-3", "p0", 1), ("vm-4", "p1", 1)],
        "cmp-2": [("vm-5", "p0", 1), ("vm-6", "p0", 1), ("vm-7", "p0", 2)],
        "cmp-3": [("vm-8", "p1", 1), ("vm-9", "p1", 2)],
    },
    "capacity": 5,
    "groups": [
        _group(anti_affine=False, impacted=3, per_host=2, recovery=120),
        _group(anti_affine=False, impacted=3, per_host=2, recovery=120),
        _group(anti_affine=False, impacted=1, per_host=2, recovery=120),
    ],
    "membership": {
        "vm-0": 0,
        "vm-1": 0,
        "vm-2": 0,
        "vm-3": 2,
        "vm-4": None,
        "vm-5": 2,
        "vm-6": 0,
        "vm-7": 0,
        "vm-8": 1,
        "vm-9": None,
    },
    "managed": ("p0",),
    "cap": 2,
}


#: Three hosts of 4 vcpus; g1 (p1) and g0 (p0) at most one per host, both
#: over it at the start (vm-0 and vm-1 on cmp-0, vm-2 and vm-3 on cmp-1),
#: cmp-1 full, cmp-2 empty. A schedule exists: cmp-2 first, then cmp-1 (vm-2
#: onto queued cmp-0, moving twice; vm-3 and vm-4 onto cmp-2), then cmp-0
#: (the check before the first wave found it). The session opened
#: cmp-2, and once it was maintained neither loaded host could open where
#: instances stay, nor in a first wave: the targets offered to the planner
#: were those of the smallest instance (vm-0), which leave out its own host
#: cmp-0, the only other host with room for cmp-1's instances. It failed
#: after disabling cmp-2 ("cannot empty any host: ... cmp-0 has 2 vcpus of
#: instances and the other hosts have 4 vcpus free"). Found by
#: tests/test_constrained_v2_core.py's property, seed
#: 328804242801941844195144431508392797071. Fixed: the window holds the
#: smallest instance's own host too.
PER_HOST_LIMITS_NEED_THE_SMALLEST_INSTANCES_HOST: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p1", 1), ("vm-1", "p1", 1)],
        "cmp-1": [("vm-2", "p0", 1), ("vm-3", "p0", 1), ("vm-4", "p0", 2)],
        "cmp-2": [],
    },
    "capacity": 4,
    "groups": [
        _group(anti_affine=False, impacted=1, per_host=1, recovery=0),
        _group(anti_affine=False, impacted=1, per_host=1, recovery=0),
        _group(anti_affine=False, impacted=1, per_host=0, recovery=0),
    ],
    "membership": {"vm-0": 1, "vm-1": 1, "vm-2": 0, "vm-3": 0, "vm-4": 2},
    "managed": (),
    "cap": None,
}


#: Three hosts of 5 vcpus, no group: cmp-0 holds 4 vcpus (1, 1, 2), cmp-1 4
#: (2, 2), cmp-2 2; 1, 1 and 3 free. Only cmp-0 can be emptied at the start
#: (its instances fit, split over the two others), so it is the first wave
#: alone. The first wave's partial last host rule made it partial, only two
#: of its instances allowed to move twice: the third waited for room where
#: it stays, which no other host of the wave was maintained to give. The
#: session failed after disabling cmp-0 and moving two instances ("no target
#: host has room for vm-1 ..."). Found by
#: tests/test_constrained_v2_core.py's property (an unseeded run). Fixed: a
#: host is never partial as the wave's only host.
PARTIAL_HOST_ALONE_IN_THE_FIRST_WAVE: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p0", 1), ("vm-1", "p0", 1), ("vm-2", "p0", 2)],
        "cmp-1": [("vm-3", "p0", 2), ("vm-4", "p0", 2)],
        "cmp-2": [("vm-5", "p0", 2)],
    },
    "capacity": 5,
    "groups": [],
    "membership": {f"vm-{i}": None for i in range(6)},
    "managed": (),
    "cap": None,
}


#: The dead ends found and fixed since: replayed as plain tests by both
#: properties' test files.
#: Five hosts of 4 vcpus; g0 at most one member per host, and cmp-2 starts
#: with three of them (vm-5, vm-6, vm-7; vm-8 on cmp-4). After the first
#: wave (cmp-3, cmp-4) the session opened cmp-0 and cmp-1 together: the dry
#: run emptied them one after the other, cmp-1's members onto the emptied
#: cmp-0, so it saw room for g0 afterwards. The waves drain them at the same
#: time: their six members filled cmp-3 and cmp-4 (vm-8, a g0 member, on
#: cmp-3), and cmp-2's three members then had two hosts without g0 with
#: room. It failed after moving instances ("cannot empty any host: the least
#: loaded host cmp-2 has 3 vcpus of instances and the other hosts have 8
#: vcpus free"). Found by an unseeded run of tests/test_constrained_v2.py's
#: property. Fixed: the dry run drains the hosts opened together (and those
#: draining) at the same time, none a target of another
#: (``planner.drain_sequence(together=True)``).
HOSTS_OPENED_TOGETHER_FILL_THE_ROOM_OF_A_PER_HOST_LIMIT: dict[str, Any] = {
    "layout": {
        "cmp-0": [("vm-0", "p0", 1), ("vm-1", "p0", 2), ("vm-2", "p0", 1)],
        "cmp-1": [("vm-3", "p0", 1), ("vm-4", "p0", 2)],
        "cmp-2": [("vm-5", "p0", 1), ("vm-6", "p0", 1), ("vm-7", "p0", 1)],
        "cmp-3": [],
        "cmp-4": [("vm-8", "p0", 1)],
    },
    "capacity": 4,
    "groups": [_group(anti_affine=False, impacted=1, per_host=1, recovery=0)],
    "membership": {
        "vm-0": None,
        "vm-1": None,
        "vm-2": None,
        "vm-3": None,
        "vm-4": None,
        "vm-5": 0,
        "vm-6": 0,
        "vm-7": 0,
        "vm-8": 0,
    },
    "managed": (),
    "cap": None,
}


ONCE_DEAD_ENDS = {
    "partial-host-alone-in-the-first-wave": PARTIAL_HOST_ALONE_IN_THE_FIRST_WAVE,
    "five-anti-affine-on-six-hosts": ANTI_AFFINE_FIVE_ON_SIX_HOSTS,
    "asked-one-at-a-time": ASKED_ONE_AT_A_TIME_TAKES_THE_ROOM_OF_THE_NEXT,
    "per-host-limit-over": PER_HOST_LIMIT_OVER_AT_THE_START,
    "smallest-instances-host": PER_HOST_LIMITS_NEED_THE_SMALLEST_INSTANCES_HOST,
    "opened-together-fill-per-host-room": HOSTS_OPENED_TOGETHER_FILL_THE_ROOM_OF_A_PER_HOST_LIMIT,
}


#: Layouts where the session still fails half-way ("no target host has room
#: for ..."): the dry run found an order, but it places a host's instances
#: where its own greedy placement puts them, and the waves, placing as
#: members become free to move, put them elsewhere (a group's member then
#: finds every host without that group full). About 4 in 2,500 of the
#: property's random layouts (tests/test_constrained_v2.py), the same before
#: and after the dry run drained the hosts opened together together; each
#: found by a 3,000-example run of that property. Fixing them needs the waves
#: to follow the dry run's placement, or the dry run the waves'.
STILL_DEAD_ENDS: dict[str, dict[str, Any]] = {
    # First wave cmp-2 + cmp-1; cmp-0 then opens with cmp-1's last instance:
    # vm-1 lands on cmp-2, which the dry run kept for vm-2 (anti-affine).
    # Ended DONE before the dry run drained hosts opened together together
    # (the first wave was cmp-2 + cmp-3 then).
    "anti-affine-pair-on-a-full-cloud": {
        "layout": {
            "cmp-0": [("vm-0", "p0", 1), ("vm-1", "p0", 2), ("vm-2", "p0", 1)],
            "cmp-1": [("vm-3", "p0", 1), ("vm-4", "p0", 2), ("vm-5", "p0", 2)],
            "cmp-2": [],
            "cmp-3": [("vm-6", "p0", 1)],
        },
        "capacity": 5,
        "groups": [_group(anti_affine=True, impacted=2, per_host=0, recovery=0)],
        "membership": {
            "vm-0": 0,
            "vm-1": None,
            "vm-2": 0,
            "vm-3": None,
            "vm-4": None,
            "vm-5": None,
            "vm-6": 0,
        },
        "managed": (),
        "cap": None,
    },
    # Fails the same way on 2ceb5e7 and since.
    "per-host-two-on-three-hosts": {
        "layout": {
            "cmp-0": [("vm-0", "p0", 1), ("vm-1", "p0", 1)],
            "cmp-1": [("vm-2", "p0", 1)],
            "cmp-2": [("vm-3", "p0", 1), ("vm-4", "p1", 1)],
        },
        "capacity": 5,
        "groups": [
            _group(anti_affine=False, impacted=1, per_host=2, recovery=0),
            _group(anti_affine=False, impacted=1, per_host=0, recovery=0),
            _group(anti_affine=False, impacted=1, per_host=0, recovery=0),
        ],
        "membership": {"vm-0": 0, "vm-1": 0, "vm-2": 0, "vm-3": 0, "vm-4": 1},
        "managed": (),
        "cap": None,
    },
}
