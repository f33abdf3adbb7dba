"""``OpenStackCloud``: the plug-in object that gives the engine its driver.

Configuration is passed in, never read from files of our own: a clouds.yaml
cloud name (openstacksdk reads clouds.yaml, secure.yaml and the ``OS_*``
environment) or a ready :class:`openstack.connection.Connection`. For that
reason the package registers no ``fenix`` entry point: an entry point is
built without arguments and could not know which cloud to talk to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fenix_core.clock import Clock
from fenix_core.errors import InvalidInput, PluginError
from fenix_core.hookspecs import hookimpl

from .driver import PLUGIN, OpenStackDriver

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = ["OpenStackCloud"]


class OpenStackCloud:
    """``Engine(plugins=[OpenStackCloud(cloud="mycloud")])``.

    Give ``cloud`` (a clouds.yaml entry) or ``connection``; with neither,
    openstacksdk's defaults apply (``OS_CLOUD`` or ``OS_*`` variables). The
    driver is built, and the credentials and admin rights checked, when the
    engine starts: a bad password or a non-admin user raise
    :class:`~fenix_core.errors.PluginError` from ``Engine(...)``, not in the
    middle of a session. The other options are those of
    :class:`~fenix_core_openstack.OpenStackDriver`.
    """

    name = PLUGIN

    def __init__(
        self,
        cloud: str | None = None,
        *,
        connection: Connection | None = None,
        controllers: Sequence[str] = (),
        controller_aggregate: str | None = None,
        host_vcpus: int | Mapping[str, int] | None = None,
        poll_interval: float = 5.0,
    ) -> None:
        if cloud is not None and connection is not None:
            raise InvalidInput("cloud", "give a cloud name or a connection, not both")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise InvalidInput("poll_interval", f"expected seconds, got {poll_interval!r}")
        if poll_interval <= 0:
            raise InvalidInput("poll_interval", f"must be positive, got {poll_interval!r}")
        self.cloud = cloud
        self.connection = connection
        self.controllers = controllers
        self.controller_aggregate = controller_aggregate
        self.host_vcpus = host_vcpus
        self.poll_interval = float(poll_interval)
        self.driver: OpenStackDriver | None = None

    def _connect(self) -> Connection:
        if self.connection is not None:
            return self.connection
        import openstack
        from openstack import exceptions as sdk_exc

        try:
            return openstack.connect(cloud=self.cloud)
        except sdk_exc.SDKException as exc:
            raise PluginError(PLUGIN, f"cannot configure the cloud {self.cloud!r}: {exc}") from exc

    @hookimpl
    def fenix_cloud_driver(self, clock: Clock) -> OpenStackDriver:
        del clock  # Nova keeps its own time; polls are paced by poll_interval
        if self.driver is None:
            self.driver = OpenStackDriver(
                self._connect(),
                controllers=self.controllers,
                controller_aggregate=self.controller_aggregate,
                host_vcpus=self.host_vcpus,
                poll_interval=self.poll_interval,
            )
        return self.driver
