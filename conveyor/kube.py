"""Kubernetes API clients from the configured kubeconfig (or in-cluster)."""

from __future__ import annotations

import os
from functools import lru_cache

from kubernetes import client, config

from conveyor.settings import Settings


@lru_cache(maxsize=4)
def _api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig is None:
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=kubeconfig)


def api_client(settings: Settings) -> client.ApiClient:
    path = settings.effective_kubeconfig
    if settings.kubeconfig is None and not path.exists() and _in_cluster():
        return _api_client(None)
    return _api_client(str(path))


def _in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


def namespace_for(settings: Settings, project_id: str) -> str:
    return settings.project_namespace(project_id)
