"""The constraint API as a user relies on it: Fenix-style dicts validated field by
field, set/get/list/delete for groups and instances, ownership checks that
write nothing, persistence across engines, implicit groups and the resolution
order of ConstraintSet."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.constraints import (
    DEFAULT_GROUP,
    CloudConstraints,
    ConstraintSet,
    GroupConstraints,
    InstanceConstraints,
    implicit_group_id,
)
from fenix_core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fenix_core.store.schema import (
    ConstraintRevisionRow,
    GroupConstraintRow,
    InstanceConstraintRow,
)
from fenix_core.testing import SimulatedCloud

Factory = Callable[..., Engine]

GROUP: dict[str, Any] = {
    "group_id": "web",
    "project_id": "pa",
    "group_name": "web tier",
    "anti_affinity_group": True,
    "max_instances_per_host": 1,
    "max_impacted_members": 2,
    "recovery_time": 30,
    "resource_mitigation": True,
}
INSTANCE: dict[str, Any] = {
    "instance_id": "a-1",
    "project_id": "pa",
    "group_id": "web",
    "instance_name": "web-1",
    "max_interruption_time": 120,
    "migration_type": "LIVE_MIGRATE",
    "resource_mitigation": False,
    "lead_time": 60,
}


def group(group_id: Any = "web", project_id: Any = "pa", **fields: Any) -> dict[str, Any]:
    return {"group_id": group_id, "project_id": project_id, **fields}


def instance(
    instance_id: Any = "a-1", project_id: Any = "pa", group_id: Any = None, **fields: Any
) -> dict[str, Any]:
    return {"instance_id": instance_id, "project_id": project_id, "group_id": group_id, **fields}


def count(engine: Engine, table: Any) -> int:
    with Session(engine.database) as orm:
        return int(orm.scalar(select(func.count()).select_from(table)) or 0)


def revision(engine: Engine) -> int:
    with Session(engine.database) as orm:
        return int(
            orm.scalar(select(ConstraintRevisionRow.revision).where(ConstraintRevisionRow.id == 1))
            or 0
        )


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything the constraint tables hold, to show a failed call wrote nothing."""
    return (
        engine.list_group_constraints(),
        engine.list_instance_constraints(),
        count(engine, GroupConstraintRow),
        count(engine, InstanceConstraintRow),
        revision(engine),
    )


@pytest.fixture
def engine() -> Iterator[Engine]:
    with Engine(clock=SimClock(), load_entry_points=False) as made:
        yield made


# --------------------------------------------------------------------------- from_dict / to_dict


def test_group_from_dict_round_trips() -> None:
    value = GroupConstraints.from_dict(GROUP)
    assert value.to_dict() == GROUP
    assert GroupConstraints.from_dict(value.to_dict()) == value
    assert GroupConstraints.from_dict(value) is value


def test_instance_from_dict_round_trips() -> None:
    value = InstanceConstraints.from_dict(INSTANCE)
    assert value.to_dict() == INSTANCE
    assert InstanceConstraints.from_dict(value.to_dict()) == value
    assert InstanceConstraints.from_dict(value) is value


@pytest.mark.parametrize(
    ("sent", "stored"), [("MIGRATION", "MIGRATE"), ("LIVE_MIGRATION", "LIVE_MIGRATE")]
)
def test_older_migration_type_names_are_aliases(sent: str, stored: str) -> None:
    """The OPNFV Doctor VNFM and early Fenix clients send these names."""
    value = InstanceConstraints.from_dict({**INSTANCE, "migration_type": sent})
    assert value.migration_type == stored
    assert value.to_dict()["migration_type"] == stored


def test_from_dict_defaults_and_nulls() -> None:
    g = GroupConstraints.from_dict({"group_id": "g", "project_id": "p", "recovery_time": None})
    assert (g.max_impacted_members, g.recovery_time, g.anti_affinity_group) == (1, 0, False)
    assert g.max_instances_per_host == 0
    i = InstanceConstraints.from_dict({"instance_id": "i", "project_id": "p", "group_id": None})
    assert i.group_id is None
    assert i.migration_type is None
    assert i.max_interruption_time is None
    assert i.lead_time == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (group(max_impacted_members=0), "max_impacted_members"),
        (group(max_impacted_members=-1), "max_impacted_members"),
        (group(max_impacted_members="2"), "max_impacted_members"),
        (group(max_impacted_members=True), "max_impacted_members"),
        (group(recovery_time=-5), "recovery_time"),
        (group(recovery_time=1.5), "recovery_time"),
        (group(anti_affinity_group="yes"), "anti_affinity_group"),
        (group(max_instances_per_host=-1), "max_instances_per_host"),
        (group(resource_mitigation=1), "resource_mitigation"),
        (group(group_name=7), "group_name"),
        (group(group_id=""), "group_id"),
        (group(group_id=3), "group_id"),
        (group(project_id=None), "project_id"),
        (group(colour="red"), "colour"),
        ({"project_id": "pa"}, "group_id"),
        ({"group_id": "web"}, "project_id"),
        (["web", "pa"], "group"),
        ("web", "group"),
    ],
)
def test_group_from_dict_names_the_bad_field(data: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        GroupConstraints.from_dict(data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (instance(migration_type="TELEPORT"), "migration_type"),
        (instance(migration_type="live_migrate"), "migration_type"),
        (instance(lead_time=1.5), "lead_time"),
        (instance(lead_time=-1), "lead_time"),
        (instance(lead_time=True), "lead_time"),
        (instance(max_interruption_time=-1), "max_interruption_time"),
        (instance(max_interruption_time="60"), "max_interruption_time"),
        (instance(resource_mitigation="no"), "resource_mitigation"),
        (instance(group_id=""), "group_id"),
        (instance(group_id=5), "group_id"),
        (instance(instance_name=None, extra=1), "extra"),
        ({"project_id": "pa"}, "instance_id"),
        ({"instance_id": "a-1"}, "project_id"),
        (instance(instance_id=""), "instance_id"),
        (None, "instance"),
        (42, "instance"),
    ],
)
def test_instance_from_dict_names_the_bad_field(data: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        InstanceConstraints.from_dict(data)
    assert caught.value.field == field


def test_the_engine_validates_before_writing(engine: Engine) -> None:
    before = snapshot(engine)
    with pytest.raises(InvalidInput) as caught:
        engine.set_group_constraints(group(max_impacted_members=0))
    assert caught.value.field == "max_impacted_members"
    with pytest.raises(InvalidInput) as caught:
        engine.set_instance_constraints(instance(lead_time=1.5), group=group())
    assert caught.value.field == "lead_time"
    with pytest.raises(InvalidInput) as caught:
        engine.set_instance_constraints(instance(group_id="web"), group=group(recovery_time=-5))
    assert caught.value.field == "recovery_time"
    assert snapshot(engine) == before


def test_a_group_object_with_no_recovery_time_is_invalid_input(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as caught:
        engine.set_group_constraints(GroupConstraints("g", "p", recovery_time=None))  # type: ignore[arg-type]
    assert caught.value.field == "recovery_time"


# ------------------------------------------------------------------- set / get / list / delete


def test_set_get_list_delete_groups(engine: Engine) -> None:
    web = engine.set_group_constraints(GROUP)
    assert web == GroupConstraints.from_dict(GROUP)
    db = engine.set_group_constraints(group("db", "pa", max_impacted_members=1))
    other = engine.set_group_constraints(GroupConstraints("cache", "pb"))
    assert engine.get_group_constraints("web") == web
    assert engine.get_group_constraints("web", project_id="pa") == web
    assert engine.list_group_constraints() == [other, db, web]  # by group_id
    assert engine.list_group_constraints("pa") == [db, web]
    assert engine.list_group_constraints("pb") == [other]
    assert engine.list_group_constraints("pc") == []
    # Replacing keeps one row with the new values.
    web2 = engine.set_group_constraints({**GROUP, "max_impacted_members": 3})
    assert engine.get_group_constraints("web").max_impacted_members == 3
    assert count(engine, GroupConstraintRow) == 3
    engine.delete_group_constraints("web", project_id="pa")
    assert engine.list_group_constraints("pa") == [db]
    with pytest.raises(NotFound):
        engine.get_group_constraints("web")
    assert web2 not in engine.list_group_constraints()


def test_set_get_list_delete_instances(engine: Engine) -> None:
    a1 = engine.set_instance_constraints(INSTANCE, group=GROUP)
    a2 = engine.set_instance_constraints(instance("a-2", "pa", lead_time=5))
    b1 = engine.set_instance_constraints(InstanceConstraints("b-1", "pb"), project_id="pb")
    assert engine.get_instance_constraints("a-1") == a1
    assert engine.get_instance_constraints("a-2", project_id="pa") == a2
    assert engine.list_instance_constraints() == [a1, a2, b1]
    assert engine.list_instance_constraints("pa") == [a1, a2]
    assert engine.list_instance_constraints("pb") == [b1]
    assert engine.list_instance_constraints("pc") == []
    engine.set_instance_constraints({**INSTANCE, "migration_type": "EVICT"})
    assert engine.get_instance_constraints("a-1").migration_type == "EVICT"
    assert count(engine, InstanceConstraintRow) == 3
    engine.delete_instance_constraints("a-1")
    assert engine.list_instance_constraints() == [a2, b1]
    with pytest.raises(NotFound):
        engine.get_instance_constraints("a-1")
    # The group stays when its member's constraints go.
    assert engine.get_group_constraints("web").group_id == "web"


def test_unknown_ids_are_not_found(engine: Engine) -> None:
    engine.set_group_constraints(GROUP)
    before = snapshot(engine)
    with pytest.raises(NotFound):
        engine.get_group_constraints("nope")
    with pytest.raises(NotFound):
        engine.get_instance_constraints("nope")
    with pytest.raises(NotFound):
        engine.delete_group_constraints("nope")
    with pytest.raises(NotFound):
        engine.delete_instance_constraints("nope", project_id="pa")
    assert snapshot(engine) == before


def test_bad_ids_are_invalid_input(engine: Engine) -> None:
    calls: list[Callable[[], object]] = [
        lambda: engine.get_group_constraints(""),
        lambda: engine.get_instance_constraints(3),  # type: ignore[arg-type]
        lambda: engine.delete_group_constraints(None),  # type: ignore[arg-type]
        lambda: engine.list_group_constraints(""),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()


# --------------------------------------------------------------------------- ownership


def test_a_project_cannot_act_for_another(engine: Engine) -> None:
    engine.set_group_constraints(GROUP)
    engine.set_instance_constraints(INSTANCE)
    before = snapshot(engine)
    writes: list[Callable[[], object]] = [
        lambda: engine.set_group_constraints(group("new", "pa"), project_id="pb"),
        lambda: engine.set_group_constraints(GROUP, project_id="pb"),
        lambda: engine.set_instance_constraints(instance("a-9", "pa"), project_id="pb"),
        lambda: engine.set_instance_constraints(
            instance("a-9", "pa", "g9"), group=group("g9", "pa"), project_id="pb"
        ),
    ]
    for call in writes:
        with pytest.raises(Forbidden) as caught:
            call()
        assert caught.value.project_id == "pb"
        assert "pa" not in str(caught.value)
        assert snapshot(engine) == before
    # Reading or deleting pa's ids answers as for ids nobody holds.
    probes: list[Callable[[], object]] = [
        lambda: engine.get_group_constraints("web", project_id="pb"),
        lambda: engine.get_instance_constraints("a-1", project_id="pb"),
        lambda: engine.delete_group_constraints("web", project_id="pb"),
        lambda: engine.delete_instance_constraints("a-1", project_id="pb"),
    ]
    for call in probes:
        with pytest.raises(NotFound) as missing:
            call()
        assert "pa" not in str(missing.value)
        assert snapshot(engine) == before
    with pytest.raises(NotFound) as nobody:
        engine.get_group_constraints("nobody-has-it", project_id="pb")
    with pytest.raises(NotFound) as held:
        engine.get_group_constraints("web", project_id="pb")
    assert str(nobody.value).replace("nobody-has-it", "web") == str(held.value)
    assert engine.get_group_constraints("web") == GroupConstraints.from_dict(GROUP)


def test_a_project_writing_an_id_another_holds_gets_its_own_row(engine: Engine) -> None:
    engine.set_group_constraints(GROUP)
    engine.set_instance_constraints(instance("a-1", "pa"))
    theirs = (engine.get_group_constraints("web"), engine.get_instance_constraints("a-1"))
    # pb (and the admin writing for pb) write pb's own rows; pa's stay as they were.
    engine.set_group_constraints(group("web", "pb", max_impacted_members=5), project_id="pb")
    engine.set_instance_constraints(instance("a-1", "pb", lead_time=7), project_id="pb")
    engine.set_group_constraints(group("web", "pb", max_impacted_members=6))
    assert engine.get_group_constraints("web", project_id="pa") == theirs[0]
    assert engine.get_instance_constraints("a-1", project_id="pa") == theirs[1]
    assert engine.get_group_constraints("web", project_id="pb").max_impacted_members == 6
    # pa is never locked out of its own ids.
    engine.set_group_constraints({**GROUP, "max_impacted_members": 4}, project_id="pa")
    assert engine.get_group_constraints("web", project_id="pa").max_impacted_members == 4
    # The admin must say whose row it means when two projects hold an id.
    with pytest.raises(Conflict):
        engine.get_group_constraints("web")
    engine.delete_group_constraints("web", project_id="pb")
    assert engine.get_group_constraints("web").project_id == "pa"


def test_an_instance_cannot_join_another_projects_group(engine: Engine) -> None:
    engine.set_group_constraints(group("web", "pa"))
    before = snapshot(engine)
    for acting in (None, "pb"):
        with pytest.raises(InvalidInput) as caught:
            engine.set_instance_constraints(instance("b-1", "pb", "web"), project_id=acting)
        assert caught.value.field == "group_id"
        assert snapshot(engine) == before
    # Not even with the other project's group given in the same call.
    with pytest.raises(InvalidInput) as caught:
        engine.set_instance_constraints(instance("b-1", "pb", "g2"), group=group("g2", "pa"))
    assert caught.value.field == "group_id"
    assert snapshot(engine) == before


def test_an_instance_naming_a_missing_group_is_invalid_and_writes_nothing(
    engine: Engine,
) -> None:
    before = snapshot(engine)
    with pytest.raises(InvalidInput) as caught:
        engine.set_instance_constraints(INSTANCE)
    assert caught.value.field == "group_id"
    # A group given in the same call but with another id does not help.
    with pytest.raises(InvalidInput) as caught:
        engine.set_instance_constraints(INSTANCE, group=group("other", "pa"))
    assert caught.value.field == "group_id"
    assert snapshot(engine) == before


def test_group_created_in_the_same_call_is_written_with_the_instance(engine: Engine) -> None:
    rev = revision(engine)
    engine.set_instance_constraints(INSTANCE, group=GROUP, project_id="pa")
    assert engine.get_group_constraints("web") == GroupConstraints.from_dict(GROUP)
    assert engine.get_instance_constraints("a-1") == InstanceConstraints.from_dict(INSTANCE)
    assert revision(engine) == rev + 1  # one transaction, one revision
    assert engine.constraints().group_of("a-1", "pa").max_impacted_members == 2


def test_the_failing_half_of_a_combined_call_writes_neither(engine: Engine) -> None:
    engine.set_group_constraints(group("web", "pb"))
    before = snapshot(engine)
    # The group is fine, the instance's group is pb's, not pa's: nothing written.
    with pytest.raises(InvalidInput):
        engine.set_instance_constraints(instance("a-1", "pa", "web"), group=group("new", "pa"))
    # The instance is fine, the group is another project's: nothing written.
    with pytest.raises(Forbidden):
        engine.set_instance_constraints(
            instance("a-1", "pa"), group=group("web", "pb"), project_id="pa"
        )
    assert snapshot(engine) == before


def test_an_instance_seen_in_a_session_belongs_to_the_clouds_project(
    fenix_cloud: SimulatedCloud, fenix_engine_factory: Factory
) -> None:
    fenix_cloud.add_host("cmp-0", vcpus=8)
    fenix_cloud.add_host("cmp-1", vcpus=8)
    fenix_cloud.add_instance("a-1", "pa", "cmp-0", vcpus=2)
    fenix_cloud.add_instance("b-1", "pb", "cmp-1", vcpus=2)
    engine = fenix_engine_factory()
    engine.create_session({"hosts": ["cmp-0"]})  # b-1 is recorded too, out of scope
    engine.set_group_constraints(group("gb", "pb"))
    before = snapshot(engine)
    for acting in (None, "pb"):
        with pytest.raises(NotFound):
            engine.set_instance_constraints(instance("a-1", "pb"), project_id=acting)
        with pytest.raises(NotFound):
            engine.set_instance_constraints(instance("a-1", "pb", "gb"), project_id=acting)
        assert snapshot(engine) == before
    for acting in (None, "pa"):
        with pytest.raises(NotFound):
            engine.set_instance_constraints(instance("b-1", "pa"), project_id=acting)
    assert snapshot(engine) == before
    # The real owners may.
    engine.set_instance_constraints(instance("a-1", "pa"), project_id="pa")
    engine.set_instance_constraints(instance("b-1", "pb", "gb"), project_id="pb")
    assert [i.instance_id for i in engine.list_instance_constraints()] == ["a-1", "b-1"]


# --------------------------------------------------------------------------- deleting a group


def test_deleting_a_group_sends_its_members_to_the_implicit_group(engine: Engine) -> None:
    engine.set_instance_constraints(INSTANCE, group=GROUP)
    engine.set_instance_constraints(instance("a-2", "pa", "web", lead_time=9))
    engine.set_instance_constraints(instance("a-3", "pa"))
    cs = engine.constraints()
    assert cs.group_id_of("a-1", "pa") == cs.group_id_of("a-2", "pa") == "web"
    assert cs.group_id_of("a-3", "pa") == implicit_group_id("pa")

    engine.delete_group_constraints("web", project_id="pa")
    cs = engine.constraints()
    for iid in ("a-1", "a-2", "a-3"):
        assert cs.group_id_of(iid, "pa") == implicit_group_id("pa")
        assert cs.group_of(iid, "pa").max_impacted_members == DEFAULT_GROUP["max_impacted_members"]
    # Their own constraints stay, without the group.
    a1 = engine.get_instance_constraints("a-1")
    assert a1 == InstanceConstraints.from_dict({**INSTANCE, "group_id": None})
    assert engine.get_instance_constraints("a-2").lead_time == 9
    assert count(engine, InstanceConstraintRow) == 3
    # A group of the same id created again does not take them back.
    engine.set_group_constraints(GROUP)
    assert engine.constraints().group_id_of("a-1", "pa") == implicit_group_id("pa")


# --------------------------------------------------------------------------- persistence


def test_constraints_persist_and_every_engine_sees_changes(
    fenix_clock: SimClock, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    with Engine(url, clock=fenix_clock, load_entry_points=False) as first:
        first.set_instance_constraints(INSTANCE, group=GROUP)
    with (
        Engine(url, clock=fenix_clock, load_entry_points=False) as a,
        Engine(url, clock=fenix_clock, load_entry_points=False) as b,
    ):
        assert b.get_group_constraints("web") == GroupConstraints.from_dict(GROUP)
        assert b.list_instance_constraints() == [InstanceConstraints.from_dict(INSTANCE)]
        assert a.constraints().group_of("a-1", "pa").max_impacted_members == 2  # cached now
        b.set_group_constraints({**GROUP, "max_impacted_members": 5})
        assert a.constraints().group_of("a-1", "pa").max_impacted_members == 5
        b.delete_group_constraints("web")
        assert a.constraints().group_id_of("a-1", "pa") == implicit_group_id("pa")
        b.delete_instance_constraints("a-1")
        assert a.constraints().instance("a-1", "pa") is None
        a.set_instance_constraints(instance("a-2", "pa"))
        assert b.constraints().instance("a-2", "pa") is not None


def test_constraints_are_cached_between_changes(engine: Engine) -> None:
    engine.set_group_constraints(GROUP)
    first = engine.constraints()
    assert engine.constraints() is first
    engine.set_group_constraints(group("db", "pa"))
    second = engine.constraints()
    assert second is not first
    assert set(second.groups) == {("pa", "db"), ("pa", "web")}


# --------------------------------------------------------------------------- implicit groups


def test_default_group_constraints_rule_implicit_groups(fenix_clock: SimClock) -> None:
    with Engine(
        clock=fenix_clock,
        load_entry_points=False,
        default_group_constraints={"max_impacted_members": 2, "recovery_time": 90},
    ) as engine:
        engine.set_instance_constraints(instance("a-1", "pa"))
        cs = engine.constraints()
        for iid in ("a-1", "unknown-vm"):
            rules = cs.group_of(iid, "pa")
            assert rules.group_id == implicit_group_id("pa")
            assert rules.project_id == "pa"
            assert (rules.max_impacted_members, rules.recovery_time) == (2, 90)
            assert rules.anti_affinity_group is False
        # An API group is not affected by the default.
        engine.set_group_constraints(group("web", "pa"))
        assert engine.constraints().group("web", "pa").max_impacted_members == 1


def test_the_built_in_default_is_one_impacted_at_a_time(engine: Engine) -> None:
    rules = engine.constraints().group_of("vm", "pz")
    assert rules.group_id == "project:pz"
    assert rules.max_impacted_members == 1
    assert rules.recovery_time == 0
    assert not rules.anti_affinity_group
    assert rules.max_instances_per_host == 0


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"max_impacted_members": 0}, "default_group_constraints.max_impacted_members"),
        ({"recovery_time": -1}, "default_group_constraints.recovery_time"),
        ({"anti_affinity_group": "yes"}, "default_group_constraints.anti_affinity_group"),
        ({"resource_mitigation": 1}, "default_group_constraints.resource_mitigation"),
        ({"group_id": "x"}, "default_group_constraints.group_id"),
        ({"colour": "red"}, "default_group_constraints.colour"),
    ],
)
def test_bad_default_group_constraints_name_the_field(
    fenix_clock: SimClock, rules: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        Engine(clock=fenix_clock, load_entry_points=False, default_group_constraints=rules)
    assert caught.value.field == field


def test_default_group_constraints_reject_a_null_recovery_time(fenix_clock: SimClock) -> None:
    with pytest.raises(InvalidInput) as caught:
        Engine(
            clock=fenix_clock,
            load_entry_points=False,
            default_group_constraints={"recovery_time": None},
        )
    assert caught.value.field == "default_group_constraints.recovery_time"


# --------------------------------------------------------------------------- resolution order


def resolved(
    *,
    groups: Sequence[GroupConstraints] = (),
    instances: Sequence[InstanceConstraints] = (),
    cloud: CloudConstraints | None = None,
) -> ConstraintSet:
    return ConstraintSet.of(groups, instances, cloud=cloud or CloudConstraints())


CLOUD = CloudConstraints(
    groups=(
        GroupConstraints("srv-grp", "pa", anti_affinity_group=True),
        GroupConstraints("pdb", "pa", max_impacted_members=3),
    ),
    members={"a-1": "srv-grp", "a-2": "srv-grp", "a-3": "pdb", "a-4": "gone"},
)


def test_api_instance_constraints_win_over_cloud_members() -> None:
    api_group = GroupConstraints("api", "pa", max_impacted_members=4)
    cs = resolved(
        groups=[api_group],
        instances=[
            InstanceConstraints("a-1", "pa", group_id="api"),
            InstanceConstraints("a-2", "pa"),  # own constraints, no group: implicit
        ],
        cloud=CLOUD,
    )
    assert cs.group_id_of("a-1", "pa") == "api"
    assert cs.group_of("a-1", "pa") == api_group
    assert cs.group_id_of("a-2", "pa") == implicit_group_id("pa")
    # Cloud members without API constraints follow the cloud.
    assert cs.group_id_of("a-3", "pa") == "pdb"
    assert cs.group_of("a-3", "pa").max_impacted_members == 3
    # A cloud member of a group the cloud does not describe: implicit.
    assert cs.group_id_of("a-4", "pa") == implicit_group_id("pa")
    # Nobody knows a-5: implicit.
    assert cs.group_id_of("a-5", "pa") == implicit_group_id("pa")
    assert cs.group_of("a-5", "pa").max_impacted_members == 1


def test_an_api_group_replaces_the_cloud_group_of_the_same_id() -> None:
    api = GroupConstraints("srv-grp", "pa", max_impacted_members=2, anti_affinity_group=False)
    cs = resolved(groups=[api], cloud=CLOUD)
    assert cs.group_id_of("a-1", "pa") == "srv-grp"
    assert cs.group_of("a-1", "pa") == api
    assert cs.group("srv-grp", "pa") == api
    assert cs.group("pdb", "pa") == CLOUD.groups[1]


def test_an_instance_whose_group_is_gone_falls_back_to_the_implicit_group() -> None:
    cs = resolved(instances=[InstanceConstraints("a-1", "pa", group_id="deleted")], cloud=CLOUD)
    # Not even the cloud's membership (srv-grp) applies: the API constraints win.
    assert cs.group_id_of("a-1", "pa") == implicit_group_id("pa")
    assert cs.group_of("a-1", "pa").group_id == "project:pa"
    # An instance's group may also be a cloud group.
    cs = resolved(instances=[InstanceConstraints("a-9", "pa", group_id="pdb")], cloud=CLOUD)
    assert cs.group_id_of("a-9", "pa") == "pdb"


def test_engine_constraints_merge_the_clouds_defaults(engine: Engine) -> None:
    engine.set_instance_constraints(instance("a-2", "pa", "mine"), group=group("mine", "pa"))
    engine.set_group_constraints(group("pdb", "pa", max_impacted_members=7))
    cs = engine.constraints(CLOUD)
    assert cs.cloud == CLOUD
    assert cs.group_id_of("a-1", "pa") == "srv-grp"
    assert cs.group_of("a-1", "pa").anti_affinity_group is True
    assert cs.group_id_of("a-2", "pa") == "mine"
    assert cs.group_of("a-3", "pa").max_impacted_members == 7
    # Without the cloud, its members are in the implicit group.
    assert engine.constraints().group_id_of("a-1", "pa") == implicit_group_id("pa")
