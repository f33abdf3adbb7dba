"""The plug-in manager: registers plug-ins, loads the ``fenix`` entry points and
resolves the cloud driver, the named actions and the workflows."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import pluggy

from .clock import Clock
from .errors import PluginError
from .hookspecs import PROJECT_NAME, Action, CloudDriver, _Specs, hookimpl
from .workflows.base import Workflow

__all__ = ["ENTRY_POINT_GROUP", "Plugins"]

ENTRY_POINT_GROUP = "fenix"


class _BuiltinWorkflows:
    @hookimpl
    def fenix_workflows(self) -> Mapping[str, type[Workflow]]:
        from .workflows.constrained import ConstrainedWorkflow
        from .workflows.rolling import RollingWorkflow

        return {
            RollingWorkflow.name: RollingWorkflow,
            ConstrainedWorkflow.name: ConstrainedWorkflow,
        }


class Plugins:
    """Registered plug-ins and what they provide, resolved once at start."""

    def __init__(
        self, plugins: Sequence[object], clock: Clock, *, load_entry_points: bool = True
    ) -> None:
        self.manager = pluggy.PluginManager(PROJECT_NAME)
        self.manager.add_hookspecs(_Specs)
        self.manager.register(_BuiltinWorkflows(), name="fenix-builtin-workflows")
        if load_entry_points:
            self.manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in plugins:
            try:
                self.manager.register(plugin)
            except ValueError as exc:
                raise PluginError(type(plugin).__name__, str(exc)) from None
        self.driver = self._resolve_driver(clock)
        self.actions = self._resolve_actions(clock)
        self.workflows = self._resolve_workflows()

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
        actions: dict[str, Action] = {}
        for provided in self.manager.hook.fenix_actions(clock=clock):
            for action in provided or ():
                if not isinstance(action, Action):
                    raise PluginError(type(action).__name__, "is not an Action (name, start, poll)")
                if action.name in actions and actions[action.name] is not action:
                    raise PluginError(action.name, "two action plug-ins share this name")
                actions[action.name] = action
        return actions

    def _resolve_workflows(self) -> dict[str, type[Workflow]]:
        workflows: dict[str, type[Workflow]] = {}
        for provided in self.manager.hook.fenix_workflows():
            for name, factory in (provided or {}).items():
                if not (isinstance(factory, type) and issubclass(factory, Workflow)):
                    raise PluginError(name, "a workflow must be a subclass of Workflow")
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
