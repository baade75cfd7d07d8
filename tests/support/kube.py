"""Reading the cluster in tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException


def read_or_none(read: Callable[[str, str], Any], name: str, namespace: str) -> Any:
    """The object, or None when the cluster has none of that name."""
    try:
        return read(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
