"""The instance index keeps no container per instance that Python's full
garbage collections walk (issue 18: a run's full collections walked one set
per (project, host) pair, most of one instance, and grew with the fleet)."""

from __future__ import annotations

import gc

from fenix_core.core.indexes import InstanceIndex


def test_members_by_project_and_host_are_untracked_after_a_collection() -> None:
    index = InstanceIndex()
    for n in range(200):
        index.add(f"vm-{n}", f"p{n % 7}", f"cmp-{n % 40}", "PENDING")
    for n in range(0, 200, 3):
        index.rehost(f"vm-{n}", f"p{n % 7}", f"cmp-{n % 40}", f"cmp-{(n + 1) % 40}")
    gc.collect()
    members = list(index.by_project_host.values())
    assert members
    assert not any(gc.is_tracked(m) for m in members)
    assert sum(len(m) for m in members) == 200
