"""The platform registry's client speaks the domain's failures, whatever the
call: the registry away is transient (`RegistryUnreachable`), a refusal is
permanent (`RegistryRefused`), never a bare httpx error."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from conveyor.clients import oci_registry
from conveyor.domain.errors import RegistryRefused, RegistryUnreachable
from conveyor.settings import Settings
from tests.support.in_process import closed_port


@pytest.fixture
def answering() -> Iterator[dict[str, int]]:
    """A registry that answers every request with the status the test sets."""
    status = {"code": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    status["port"] = server.server_address[1]
    try:
        yield status
    finally:
        server.shutdown()


def test_a_registry_that_is_away_is_unreachable_for_every_call():
    settings = Settings(registry=f"127.0.0.1:{closed_port()}")
    for call in (
        lambda: oci_registry.manifest_digest(settings, "proj_a/web", "v1"),
        lambda: oci_registry.list_tags(settings, "proj_a/cache/app_1"),
        lambda: oci_registry.delete_tag(settings, "proj_a/cache/app_1", "c-1"),
        lambda: oci_registry.catalog(settings),
    ):
        with pytest.raises(RegistryUnreachable):
            call()


def test_a_5xx_is_unreachable_and_a_refusal_is_refused(answering):
    settings = Settings(registry=f"127.0.0.1:{answering['port']}")
    with pytest.raises(RegistryUnreachable):
        oci_registry.manifest_digest(settings, "proj_a/web", "v1")
    answering["code"] = 403
    with pytest.raises(RegistryRefused):
        oci_registry.manifest_digest(settings, "proj_a/web", "v1")
    answering["code"] = 404
    assert oci_registry.manifest_digest(settings, "proj_a/web", "v1") is None
    assert oci_registry.list_tags(settings, "proj_a/cache/app_1") == []
