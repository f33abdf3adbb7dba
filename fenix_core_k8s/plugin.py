"""KubernetesCloud: the plug-in object to pass to ``Engine(plugins=[...])``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

from fenix_core.clock import Clock
from fenix_core.hookspecs import CloudDriver, hookimpl

from .driver import DriverOptions, KubernetesDriver

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["KubernetesCloud"]


class KubernetesCloud:
    """Provides a :class:`KubernetesDriver` on the engine's clock.

    Takes the driver's options (``api_client``, ``kubeconfig``, ``context``,
    ``in_cluster``, ``project_label``, ``unmanaged_pods``,
    ``delete_emptydir_data``, ``steer_replacements``). The connection is
    made when the engine starts, so a bad kubeconfig or context fails
    ``Engine(...)`` with a :class:`~fenix_core.errors.PluginError` that says why.
    ``driver`` is the driver once the engine has started.
    """

    def __init__(
        self, api_client: ApiClient | None = None, **options: Unpack[DriverOptions]
    ) -> None:
        self.api_client = api_client
        self.options = options
        self.driver: KubernetesDriver | None = None

    @hookimpl
    def fenix_cloud_driver(self, clock: Clock) -> CloudDriver:
        self.driver = KubernetesDriver(self.api_client, clock=clock, **self.options)
        return self.driver
