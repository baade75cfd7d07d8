"""Kubernetes API clients from the configured kubeconfig (or in-cluster)."""

from __future__ import annotations

import os
from functools import lru_cache

from kubernetes import client, config

from conveyor.settings import Settings


@lru_cache(maxsize=4)
def _api_client(kubeconfig: str | None, pool_size: int) -> client.ApiClient:
    configuration = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    # One client per process, shared by every activity thread: each rollout
    # wait keeps a watch open, so the pool must hold one connection per thread
    # (urllib3 otherwise opens and throws away a TLS connection per call).
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def api_client(settings: Settings) -> client.ApiClient:
    path = settings.effective_kubeconfig
    pool_size = max(settings.max_concurrent_activities, settings.api_threads) + 8
    if settings.kubeconfig is None and not path.exists() and _in_cluster():
        return _api_client(None, pool_size)
    return _api_client(str(path), pool_size)


def _in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


def namespace_for(settings: Settings, project_id: str) -> str:
    return settings.project_namespace(project_id)
