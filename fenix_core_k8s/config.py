"""Connecting to a cluster the Kubernetes way: kubeconfig or in-cluster config.

Uses the client's own loaders, so contexts, exec credential plug-ins, client
certificates and service-account tokens work as they do for kubectl.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration

from fenix_core.errors import PluginError

__all__ = ["PLUGIN_NAME", "connect"]

PLUGIN_NAME = "kubernetes"


def connect(
    *,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
) -> ApiClient:
    """An ApiClient from a kubeconfig file (and context) or the pod's service account.

    ``in_cluster=None`` (the default) does what kubectl does: the kubeconfig
    (``$KUBECONFIG`` or ``~/.kube/config``), or the in-cluster config when no
    kubeconfig exists and the process runs in a pod. Any failure raises
    :class:`~fenix_core.errors.PluginError` saying what was tried.
    """
    if in_cluster and (kubeconfig is not None or context is not None):
        raise PluginError(PLUGIN_NAME, "in_cluster=True cannot be combined with kubeconfig/context")
    path = Path(kubeconfig) if kubeconfig is not None else _default_kubeconfig()
    if in_cluster is None:
        in_cluster = (
            kubeconfig is None
            and context is None
            and not path.exists()
            and "KUBERNETES_SERVICE_HOST" in os.environ
        )
    if in_cluster:
        configuration = Configuration()
        try:
            kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except kube_config.ConfigException as exc:
            raise PluginError(
                PLUGIN_NAME, f"in-cluster configuration failed (is this a pod?): {exc}"
            ) from None
        return ApiClient(configuration=configuration)
    if not path.exists():
        raise PluginError(
            PLUGIN_NAME,
            f"no kubeconfig at {path}; pass kubeconfig=..., set $KUBECONFIG, run in a pod "
            "(in_cluster=True) or pass api_client=...",
        )
    try:
        client: ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(path), context=context, persist_config=False
        )
    except kube_config.ConfigException as exc:
        where = f"context {context!r} of " if context else ""
        raise PluginError(PLUGIN_NAME, f"cannot use {where}kubeconfig {path}: {exc}") from None
    except Exception as exc:  # malformed YAML, unreadable file, bad certificate data
        raise PluginError(
            PLUGIN_NAME, f"cannot read kubeconfig {path}: {type(exc).__name__}: {exc}"
        ) from None
    return client


def _default_kubeconfig() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = env.split(os.pathsep)[0] if env else ""
    return Path(first).expanduser() if first else Path("~/.kube/config").expanduser()
