"""OpenStack cloud plug-in for fenix-core, on openstacksdk
(``pip install 'fenix-core[openstack]'``).

::

    from fenix_core import Engine
    from fenix_core_openstack import OpenStackCloud

    engine = Engine(database_url="sqlite:///fenix.db",
                    plugins=[OpenStackCloud(cloud="mycloud", controllers=["ctl-0"])])

``fenix_core_openstack.testing`` has a fake Keystone + Nova + Placement to
test workflows through the real openstacksdk. See docs/openstack.md.
"""

from __future__ import annotations

from .driver import OpenStackDriver
from .plugin import OpenStackCloud

__all__ = ["OpenStackCloud", "OpenStackDriver"]
