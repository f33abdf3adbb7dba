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
