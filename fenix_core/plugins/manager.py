"""The plug-in manager: registers plug-ins, loads the ``fenix`` entry points and
resolves the cloud driver, the named actions and the workflows."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TypeVar

import pluggy

from ..clock import Clock
from ..contract import Workflow
from ..errors import PluginError
from .gates import BuiltinGates
from .hookspecs import PROJECT_NAME, Action, CloudDriver, Gate, _Specs, hookimpl

__all__ = ["ENTRY_POINT_GROUP", "Plugins"]

ENTRY_POINT_GROUP = "fenix"


class _BuiltinWorkflows:
    @hookimpl
    def fenix_workflows(self) -> Mapping[str, type[Workflow]]:
        from ..workflows import ConstrainedWorkflow, DecommissionWorkflow, RollingWorkflow

        return {
            RollingWorkflow.name: RollingWorkflow,
            ConstrainedWorkflow.name: ConstrainedWorkflow,
            DecommissionWorkflow.name: DecommissionWorkflow,
        }


_Named = TypeVar("_Named", Action, Gate)


def _by_name(
    answers: Sequence[Sequence[object] | None], kind: type[_Named], what: str, members: str
) -> dict[str, _Named]:
    """Merge the objects that plug-ins provide into one dict by their unique name."""
    found: dict[str, _Named] = {}
    for provided in answers:
        for item in provided or ():
            if not isinstance(item, kind):
                raise PluginError(type(item).__name__, f"is not a {kind.__name__} ({members})")
            if item.name in found and found[item.name] is not item:
                raise PluginError(item.name, f"two {what} plug-ins share this name")
            found[item.name] = item
    return found


def _plugin_name(plugin: object) -> str:
    """An entry point may register a module; anything else is named by its class."""
    return plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__name__


class Plugins:
    """Registered plug-ins and what they provide, resolved once at start."""

    def __init__(
        self, plugins: Sequence[object], clock: Clock, *, load_entry_points: bool = True
    ) -> None:
        self.manager = pluggy.PluginManager(PROJECT_NAME)
        self.manager.add_hookspecs(_Specs)
        self.manager.register(_BuiltinWorkflows(), name="fenix-builtin-workflows")
        self.manager.register(BuiltinGates(), name="fenix-builtin-gates")
        if load_entry_points:
            self.manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in plugins:
            try:
                self.manager.register(plugin)
            except (ValueError, pluggy.PluginValidationError) as exc:
                raise PluginError(type(plugin).__name__, str(exc)) from None
        self._check_hook_names()
        self.driver = self._resolve_driver(clock)
        self.actions = self._resolve_actions(clock)
        self.workflows = self._resolve_workflows()
        self.gates = self._resolve_gates()

    def _check_hook_names(self) -> None:
        """A ``@hookimpl`` whose name is no hook (``fenix_workflow`` for
        ``fenix_workflows``) would otherwise never be called, silently."""
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            callers = sorted(
                ((name, caller) for name, caller in vars(self.manager.hook).items()),
                key=lambda item: item[0],
            )
            callers = [(name, caller) for name, caller in callers if not name.startswith("_")]
            known = [name for name, caller in callers if caller.has_spec()]
            for name, caller in callers:
                if caller.has_spec():
                    continue
                for impl in caller.get_hookimpls():
                    if impl.plugin is exc.plugin:
                        raise PluginError(
                            _plugin_name(impl.plugin),
                            f"implements {name!r}, which is no fenix hook "
                            f"(the hooks: {', '.join(known)})",
                        ) from None
            raise PluginError(_plugin_name(exc.plugin), str(exc)) from None

    def _resolve_driver(self, clock: Clock) -> CloudDriver | None:
        drivers = [d for d in self.manager.hook.fenix_cloud_driver(clock=clock) if d is not None]
        if len(drivers) > 1:
            names = ", ".join(sorted(type(d).__name__ for d in drivers))
            raise PluginError("cloud", f"more than one plug-in provides a cloud driver: {names}")
        if not drivers:
            return None
        driver = drivers[0]
        if not isinstance(driver, CloudDriver):
            raise PluginError(
                type(driver).__name__,
                "fenix_cloud_driver returned an object that is no CloudDriver",
            )
        return driver

    def _resolve_actions(self, clock: Clock) -> dict[str, Action]:
        answers = self.manager.hook.fenix_actions(clock=clock)
        # mypy: a runtime-checkable Protocol is a fine isinstance() target
        return _by_name(answers, Action, "action", "name, start, poll")  # type: ignore[type-abstract]

    def _resolve_gates(self) -> dict[str, Gate]:
        answers = self.manager.hook.fenix_gates()
        return _by_name(answers, Gate, "gate", "name, check")  # type: ignore[type-abstract]

    def _resolve_workflows(self) -> dict[str, type[Workflow]]:
        workflows: dict[str, type[Workflow]] = {}
        for provided in self.manager.hook.fenix_workflows():
            for name, factory in (provided or {}).items():
                if not (isinstance(factory, type) and issubclass(factory, Workflow)):
                    raise PluginError(
                        name,
                        "a workflow must be a subclass of fenix_core.contract.Workflow "
                        "(see docs/plugins.md)",
                    )
                if inspect.isabstract(factory):
                    missing = ", ".join(sorted(factory.__abstractmethods__))
                    raise PluginError(name, f"workflow does not implement {missing}")
                if name in workflows and workflows[name] is not factory:
                    raise PluginError(name, "two workflow plug-ins share this name")
                workflows[name] = factory
        return workflows

    def require_driver(self) -> CloudDriver:
        if self.driver is None:
            raise PluginError(
                "cloud",
                "no cloud driver: pass a cloud plug-in (SimulatedCloud, OpenStackCloud, "
                "KubernetesCloud) in Engine(plugins=[...])",
            )
        return self.driver
