"""KubernetesCloud: the plug-in object to pass to ``Engine(plugins=[...])``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fenix_core.clock import Clock
from fenix_core.hookspecs import CloudDriver, hookimpl

from .driver import KubernetesDriver
from .moves import UnmanagedPods

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["KubernetesCloud"]


class KubernetesCloud:
    """Provides a :class:`KubernetesDriver` on the engine's clock.

    Takes the driver's options (``api_client``, ``kubeconfig``, ``context``,
    ``in_cluster``, ``project_label``, ``unmanaged_pods``). The connection is
    made when the engine starts, so a bad kubeconfig or context fails
    ``Engine(...)`` with a :class:`~fenix_core.errors.PluginError` that says why.
    ``driver`` is the driver once the engine has started.
    """

    def __init__(
        self,
        api_client: ApiClient | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        project_label: str | None = None,
        unmanaged_pods: UnmanagedPods = "fail",
    ) -> None:
        self.api_client = api_client
        self.kubeconfig = kubeconfig
        self.context = context
        self.in_cluster = in_cluster
        self.project_label = project_label
        self.unmanaged_pods: UnmanagedPods = unmanaged_pods
        self.driver: KubernetesDriver | None = None

    @hookimpl
    def fenix_cloud_driver(self, clock: Clock) -> CloudDriver:
        self.driver = KubernetesDriver(
            self.api_client,
            kubeconfig=self.kubeconfig,
            context=self.context,
            in_cluster=self.in_cluster,
            clock=clock,
            project_label=self.project_label,
            unmanaged_pods=self.unmanaged_pods,
        )
        return self.driver
