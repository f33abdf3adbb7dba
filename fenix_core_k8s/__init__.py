"""Kubernetes cloud plug-in for fenix-core (``pip install 'fenix-core[k8s]'``).

Node maintenance through fenix-core sessions on the official ``kubernetes``
client: nodes are hosts, pods are instances, a host is disabled by cordoning
its node and an instance moves by the Eviction API, which honours
PodDisruptionBudgets::

    from fenix_core import Engine
    from fenix_core_k8s import KubernetesCloud

    engine = Engine(database_url="sqlite:///fenix.db",
                    plugins=[KubernetesCloud(context="prod"), MyUpgrade()])

See docs/kubernetes.md. ``fenix_core_k8s.testing`` has a fake apiserver.
"""

from __future__ import annotations

from .driver import CORDONED_ANNOTATION, QUEUED_TAINT, KubernetesDriver
from .notify import NodeNotifier
from .plugin import KubernetesCloud

__all__ = [
    "CORDONED_ANNOTATION",
    "QUEUED_TAINT",
    "KubernetesCloud",
    "KubernetesDriver",
    "NodeNotifier",
]
