"""``--cloud``: read a live cloud (read-only) into a scenario, for ``fenix plan``
and ``fenix export``.

The plug-in's driver is built as the engine would build it (which checks the
credentials and admin rights) and then only asked for its hosts, instances
and constraints (:func:`fenix_core.sim.snapshot.read_cloud`); constraints stored
in a fenix database are read with ``--database``. The plug-ins are named by
their import path and loaded when asked for, as ``--plugin MODULE:CALLABLE``
and entry points are: fenix-core itself never imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ..clock import RealClock
from ..errors import InvalidInput
from ..plugins.hookspecs import CloudDriver
from ..sim.snapshot import CloudSnapshot, read_cloud, scenario_data
from .sessions import open_engine

__all__ = ["CLOUDS", "cloud_options", "cloud_scenario_data"]

F = TypeVar("F", bound=Callable[..., Any])

#: --cloud name -> (the plug-in class's module and name, the extra that installs it)
PLUGINS = {
    "openstack": ("fenix_core_openstack", "OpenStackCloud", "openstack"),
    "k8s": ("fenix_core_k8s", "KubernetesCloud", "k8s"),
}
CLOUDS = tuple(PLUGINS)

_OPTIONS = [
    click.option(
        "--cloud",
        type=click.Choice(CLOUDS),
        help="Read the live cloud (read-only) instead of a scenario file.",
    ),
    click.option(
        "--os-cloud",
        metavar="NAME",
        help="With --cloud openstack: the clouds.yaml cloud (default: $OS_CLOUD / OS_* variables).",
    ),
    click.option(
        "--context",
        metavar="C",
        help="With --cloud k8s: the kubeconfig context (default: current).",
    ),
    click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, path_type=Path),
        help="With --cloud k8s: the kubeconfig file (default: as kubectl finds it).",
    ),
    click.option(
        "--database",
        metavar="URL",
        help="Also apply the constraints stored in this fenix database (e.g. sqlite:///fenix.db).",
    ),
    click.option("--name", "scenario_name", help="The scenario's name (default: the cloud's)."),
    click.option(
        "--workflow",
        default="rolling",
        show_default=True,
        help="With --cloud: the session's workflow (rolling, constrained, ...).",
    ),
    click.option(
        "--max-parallel-hosts",
        type=click.IntRange(min=1),
        help="With --cloud: the session's max_parallel_hosts.",
    ),
    click.option(
        "--topology-cap",
        "topology_caps",
        multiple=True,
        metavar="LABEL=N",
        help=(
            "With --cloud: at most N domains of the host label LABEL in maintenance at once "
            "(repeat; e.g. topology.kubernetes.io/zone=1, aggregate=2)."
        ),
    ),
    click.option(
        "--host",
        "hosts",
        multiple=True,
        metavar="NAME",
        help="With --cloud: maintain only these hosts (repeat; default: every host).",
    ),
    *(
        click.option(
            flag, type=click.FloatRange(min=0), default=default, help=f"With --cloud: {what}."
        )
        for flag, default, what in (
            ("--action-seconds", 600.0, "how long the maintenance of one host takes (600)"),
            ("--migration-seconds", None, "how long a cold migration takes (30)"),
            ("--live-migration-seconds", None, "how long a live migration takes (20)"),
        )
    ),
]


def cloud_options(command: F) -> F:
    """The options that read a live cloud into a scenario."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def cloud_scenario_data(
    *,
    cloud: str,
    os_cloud: str | None,
    context: str | None,
    kubeconfig: Path | None,
    database: str | None,
    scenario_name: str | None,
    workflow: str,
    max_parallel_hosts: int | None,
    topology_caps: tuple[str, ...],
    hosts: tuple[str, ...],
    action_seconds: float,
    migration_seconds: float | None,
    live_migration_seconds: float | None,
) -> dict[str, Any]:
    """Read the cloud (and the database's constraints) into scenario data."""
    snapshot = read_cloud(_driver(cloud, os_cloud, context, kubeconfig))
    groups, instances = _stored(database) if database else ([], [])
    session: dict[str, Any] = {"workflow": workflow}
    if max_parallel_hosts is not None:
        session["max_parallel_hosts"] = max_parallel_hosts
    if topology_caps:
        session["controls"] = {
            "max_topology_in_maintenance": [_topology_cap(c) for c in topology_caps]
        }
    if hosts:
        _check_hosts(snapshot, hosts)
        session["hosts"] = list(hosts)
    where = os_cloud or context or "default"
    return scenario_data(
        snapshot,
        groups,
        instances,
        name=scenario_name or f"{cloud} {where}",
        start=datetime.now(UTC).replace(microsecond=0),
        session=session,
        actions=[{"plugin": "maintenance", "type": "host", "seconds": action_seconds}],
        migration_seconds=migration_seconds,
        live_migration_seconds=live_migration_seconds,
    )


def check_cloud_options(cloud: str | None, **given: Any) -> None:
    """Options that belong to another cloud (or to --cloud at all) are refused."""
    only = {"os_cloud": "openstack", "context": "k8s", "kubeconfig": "k8s"}
    for name, value in given.items():
        if value in (None, (), False):
            continue
        flag = "--" + name.replace("_", "-")
        if cloud is None:
            raise InvalidInput(name, f"{flag} needs --cloud")
        if name in only and only[name] != cloud:
            raise InvalidInput(name, f"{flag} is for --cloud {only[name]}, not {cloud}")


def _driver(
    cloud: str, os_cloud: str | None, context: str | None, kubeconfig: Path | None
) -> CloudDriver:
    module_name, class_name, extra = PLUGINS[cloud]
    try:
        plugin_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError:  # pragma: no cover - depends on the installation
        raise InvalidInput(
            "cloud", f"--cloud {cloud} needs: pip install 'fenix-core[{extra}]'"
        ) from None
    options: dict[str, Any] = (
        {"cloud": os_cloud}
        if cloud == "openstack"
        else {"kubeconfig": kubeconfig, "context": context}
    )
    driver: CloudDriver = plugin_class(**options).fenix_cloud_driver(RealClock())
    return driver


def _stored(database: str) -> tuple[list[Any], list[Any]]:
    with open_engine(database) as engine:
        return engine.list_group_constraints(), engine.list_instance_constraints()


def _topology_cap(text: str) -> dict[str, Any]:
    """``LABEL=N`` as a ``max_topology_in_maintenance`` entry (the session
    request checks the figures)."""
    key, sep, limit = text.rpartition("=")
    if not sep or not key.strip() or not limit.strip().isdigit():
        raise InvalidInput("topology_cap", f"expected LABEL=N (e.g. zone=1), got {text!r}")
    return {"key": key.strip(), "max": int(limit)}


def _check_hosts(snapshot: CloudSnapshot, hosts: tuple[str, ...]) -> None:
    known = {h.name for h in snapshot.hosts}
    for index, name in enumerate(hosts):
        if name not in known:
            raise InvalidInput(f"host[{index}]", f"the cloud has no host {name!r}")
