"""Kubernetes cloud plug-in for fenix-core (on the official kubernetes client).

Not implemented yet: ``pip install fenix-core[k8s]`` will provide
``KubernetesCloud`` here (see the project's issue tracker).
"""
