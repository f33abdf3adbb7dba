"""The dashboard's pure payload builder: whatever the views hold, a project's
payload names no other project, instance or group of another project; and
1,000 host lanes stay a small answer to poll."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.model import HostView, InstanceView, Progress, ProjectView, SessionView, StuckWork
from fenix_core.rest.dashboard_view import Notice, session_payload
from fenix_core.sim.timeline import GroupLane, HostLane, Timeline

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _view(hosts: list[HostView], projects: dict[str, str | None], **kw: object) -> SessionView:
    fields: dict[str, object] = {
        "session_id": "s-1",
        "workflow": "constrained",
        "state": "PLANNED_MAINTENANCE",
        "percent_done": 40,
        "reason": "host cmp-1: vm of someone else could not move",
        "hosts": tuple(hosts),
        "projects": projects,
        "created_at": T0,
        "updated_at": T0 + timedelta(hours=1),
        "maintenance_at": None,
        "request": {},
        "waiting": "group grp-someone at its limit",
        "progress": Progress(
            hosts_done=1,
            hosts_in_progress=1,
            hosts_waiting=1,
            hosts_skipped=0,
            durations={},
            estimated_end=T0 + timedelta(hours=3),
            eta_seconds=7200.0,
        ),
    }
    fields.update(kw)
    return SessionView(**fields)  # type: ignore[arg-type]


def _timeline(view: SessionView, groups: list[GroupLane]) -> Timeline:
    return Timeline(
        session_id=view.session_id,
        workflow=view.workflow,
        state=view.state,
        reason=view.reason,
        start=T0,
        end=view.updated_at,
        hosts=tuple(
            HostLane(h.name, h.type, h.state, h.started_at, h.started_at, h.finished_at, h.reason)
            for h in view.hosts
        ),
        groups=tuple(groups),
    )


tenants = st.lists(
    st.sampled_from(["tenant-red-1", "tenant-green-2", "tenant-blue-3", "tenant-gold-4"]),
    min_size=2,
    max_size=4,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(
    tenants=tenants,
    layout=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=25),
    stuck=st.lists(st.integers(0, 24), max_size=5),
    detail=st.sets(st.integers(0, 24), max_size=5),
    refused=st.sets(st.integers(0, 24), max_size=5),
)
def test_a_project_sees_nothing_of_the_others(
    tenants: list[str],
    layout: list[tuple[int, int]],
    stuck: list[int],
    detail: set[int],
    refused: set[int],
) -> None:
    # Instance i belongs to tenants[owner % len] and sits on host cmp-<host>.
    owners = [tenants[o % len(tenants)] for o, _h in layout]
    owner_of = {f"inst-{i}-of-{t}": t for i, t in enumerate(owners)}
    names = list(owner_of)
    host_of = {name: f"cmp-{layout[i][1]}" for i, name in enumerate(names)}
    projects = {
        t: ProjectView(
            session_id="s-1",
            project_id=t,
            state="PLANNED_MAINTENANCE",
            reply_at=T0 + timedelta(minutes=30),
            instance_ids=tuple(n for n in names if owner_of[n] == t),
            instances=tuple(
                InstanceView(
                    instance_id=n,
                    instance_name=n,
                    host=host_of[n],
                    state="ACTION_REQUESTED",
                    action=None,
                    moves=0,
                    detail=f"evicting {n}: PodDisruptionBudget" if i in detail else "",
                )
                for i, n in enumerate(names)
                if owner_of[n] == t
            ),
        )
        for t in tenants
    }
    hosts = [
        HostView(f"cmp-{h}", "compute", "IN_MAINTENANCE", T0, None, f"moving {names[0]}")
        for h in range(5)
    ]
    stuck_names = [names[i % len(names)] for i in stuck]
    view = _view(
        hosts,
        dict.fromkeys(tenants, "PLANNED_MAINTENANCE"),
        stuck=tuple(
            StuckWork("migration", host_of[n], n, f"{n} timed out", T0, "wait_and_notify")
            for n in stuck_names
        ),
    )
    groups = [GroupLane(f"grp-of-{t}", t, 3, 1, ((T0, 1),)) for t in tenants]
    notices = [
        Notice(seq, t, "PLANNED_MAINTENANCE", 2, T0, None, "pending")
        for seq, t in enumerate(tenants, start=1)
    ]
    refusals = {names[i % len(names)]: {"cmp-9": "No valid host was found"} for i in refused}
    admin = session_payload(
        view, _timeline(view, groups), projects, notices, now=T0, refused=refusals
    )
    admin_text = json.dumps(admin)
    for name in names:
        assert name in admin_text  # the admin sees every instance (questions)
    for me in tenants:
        # Even handed every project's views, the builder keeps to the caller's.
        mine = session_payload(
            view,
            _timeline(view, groups),
            projects,
            notices,
            now=T0,
            project_id=me,
            refused=refusals,
        )
        text = json.dumps(mine)
        for other in tenants:
            if other != me:
                assert other not in text
        assert mine["hosts"] == admin["hosts"]
        assert mine["controls"] is None
        assert [q["project_id"] for q in mine["questions"]] == [me]


def test_a_thousand_host_lanes_are_a_small_answer() -> None:
    hosts = [
        HostView(
            f"cmp-{i:04d}",
            "compute",
            "MAINTAINED",
            T0 + timedelta(seconds=2000.125 * (i // 10) + 0.5 * i),
            T0 + timedelta(seconds=2000.125 * (i // 10) + 1234.567),
        )
        for i in range(1000)
    ]
    view = _view(hosts, {})
    payload = session_payload(view, _timeline(view, []), {}, [], now=T0 + timedelta(days=1))
    lanes = json.dumps(payload["hosts"], separators=(",", ":"))
    assert len(payload["hosts"]) == 1000
    assert len(lanes) / 1000 < 80  # bytes a host: docs/dashboard.md says about 60
    assert payload["waves"] == 100  # ten hosts at a time
    assert payload["hosts"][15][5] == 1
