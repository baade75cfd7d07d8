"""CONVEYOR_APP_ROLE_BINDINGS: the RoleBindings the worker applies in each app namespace."""

from __future__ import annotations

import pytest

from conveyor.domain import manifests
from conveyor.settings import Settings


def test_each_item_becomes_one_role_binding_in_the_app_namespace():
    settings = Settings(app_role_bindings="conveyor-app-manager=conveyor/conveyor-worker, conveyor-app-reader=conveyor/conveyor-api")
    bindings = manifests.role_bindings(settings.role_bindings, "conveyor-team")
    assert [(b["metadata"]["namespace"], b["metadata"]["name"], b["roleRef"]["name"], b["subjects"]) for b in bindings] == [
        ("conveyor-team", "conveyor-app-manager-conveyor-worker", "conveyor-app-manager",
         [{"kind": "ServiceAccount", "namespace": "conveyor", "name": "conveyor-worker"}]),
        ("conveyor-team", "conveyor-app-reader-conveyor-api", "conveyor-app-reader",
         [{"kind": "ServiceAccount", "namespace": "conveyor", "name": "conveyor-api"}]),
    ]
    assert all(b["roleRef"]["kind"] == "ClusterRole" for b in bindings)


def test_unset_means_none_and_a_malformed_item_names_the_variable():
    assert Settings().role_bindings == []
    with pytest.raises(ValueError, match="CONVEYOR_APP_ROLE_BINDINGS"):
        _ = Settings(app_role_bindings="conveyor-app-manager=conveyor-worker").role_bindings
