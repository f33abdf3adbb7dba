"""Interleavings of constraint writes by two projects against the cloud's
ownership (issue 23): whatever the order, the constraints that apply to an
instance are its cloud owner's last write, a non-owner's write is refused
without a trace or a name, and the owner is never locked out. Run against
today's Engine and Engine (both call the one ConstraintService)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.errors import NotFound
from fenix_core.testing import SimulatedCloud
from fenix_core.workflows.rolling import RollingWorkflow

PROJECTS = ("proj-one", "proj-two")
INSTANCES = ("i-0", "i-1", "i-2")

step = st.one_of(
    st.tuples(
        st.just("put"), st.sampled_from(PROJECTS), st.sampled_from(INSTANCES), st.integers(0, 100)
    ),
    st.tuples(st.just("delete"), st.sampled_from(PROJECTS), st.sampled_from(INSTANCES), st.just(0)),
    # The cloud gives the instance id to another project (deleted and reused).
    st.tuples(st.just("reown"), st.sampled_from(PROJECTS), st.sampled_from(INSTANCES), st.just(0)),
)


def today(clock: SimClock, cloud: SimulatedCloud) -> Any:
    return Engine(clock=clock, plugins=[cloud], load_entry_points=False)


def core(clock: SimClock, cloud: SimulatedCloud) -> Any:
    return Engine(clock=clock, plugins=[cloud], workflows={"rolling": RollingWorkflow})


@pytest.mark.no_cover
@pytest.mark.slow
@pytest.mark.parametrize("make", [today, core], ids=["Engine", "Engine"])
@settings(max_examples=60, deadline=None)
@given(
    owners=st.lists(st.sampled_from(PROJECTS), min_size=3, max_size=3),
    steps=st.lists(step, max_size=25),
)
def test_interleaved_writes_follow_the_clouds_owner(
    make: Callable[[SimClock, SimulatedCloud], Any],
    owners: list[str],
    steps: list[tuple[str, str, str, int]],
) -> None:
    clock = SimClock()
    cloud = SimulatedCloud(clock=clock)
    cloud.add_host("cmp-0", vcpus=64)
    for iid, owner in zip(INSTANCES, owners, strict=True):
        cloud.add_instance(iid, owner, "cmp-0", vcpus=1)
    owner_of = dict(zip(INSTANCES, owners, strict=True))
    written: dict[tuple[str, str], int] = {}  # (project, instance) -> lead_time
    with make(clock, cloud) as engine:
        for kind, project, iid, lead in steps:
            other = next(p for p in PROJECTS if p != project)
            if kind == "reown":
                cloud.remove_instance(iid)
                cloud.add_instance(iid, project, "cmp-0", vcpus=1)
                owner_of[iid] = project
            elif kind == "put":
                body: dict[str, Any] = {"instance_id": iid, "project_id": project}
                try:
                    engine.set_instance_constraints({**body, "lead_time": lead}, project_id=project)
                except NotFound as refused:
                    answer = str(refused)
                    assert owner_of[iid] != project
                    assert other not in answer
                else:
                    assert owner_of[iid] == project  # the owner is never locked out
                    written[(project, iid)] = lead
            else:
                try:
                    engine.delete_instance_constraints(iid, project_id=project)
                except NotFound as missing:
                    answer = str(missing)
                    assert (project, iid) not in written
                    assert other not in answer
                else:
                    del written[(project, iid)]
            cs = engine.constraints()
            for instance_id, owner in owner_of.items():
                applied = cs.instance(instance_id, owner)
                expected = written.get((owner, instance_id))
                assert (applied.lead_time if applied else None) == expected
            stored = {
                (c.project_id, c.instance_id): c.lead_time
                for c in engine.list_instance_constraints()
            }
            assert stored == written
