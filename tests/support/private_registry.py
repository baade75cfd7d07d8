"""A private registry for the tests: Debian's docker-registry (as the
platform's own) with htpasswd auth (bcrypt), behind TLS with a certificate
made here, on a free loopback port.

The platform trusts it as an operator trusts a private registry: the
certificate (its own CA, naming 127.0.0.1) goes into the platform's registry
CA directory (CONVEYOR_REGISTRY_CA_DIR, default <home>/registry-ca) while it
runs; the hosts a CA certificate names are allowed by the egress policy.

`TokenRealmServer` is a registry stand-in whose 401 names a token realm of
the test's choosing (to check where the worker goes for tokens)."""

from __future__ import annotations

import contextlib
import crypt  # bcrypt through libxcrypt: no extra package (deprecated in 3.11, present until 3.13)
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

from conveyor.clients.oci_registry import MANIFEST_ACCEPT
from conveyor.settings import Settings
from conveyor.stack import registry as platform_registry
from tests.support import git_https

REGISTRY_BINARY = "/usr/bin/docker-registry"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, with a name of its own
    (several may be in the CA directory at once); returns (cert, key) files."""
    mark = uuid.uuid4().hex[:8]
    return git_https.self_signed(directory, f"conveyor test registry {mark}", mark)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivateRegistry:
    host: str  # 127.0.0.1:<port>
    username: str
    password: str
    ca_file: Path

    def client(self, auth: bool = True) -> httpx.Client:
        return httpx.Client(
            base_url=f"https://{self.host}", verify=ssl.create_default_context(cafile=str(self.ca_file)), auth=(self.username, self.password) if auth else None, timeout=30
        )

    def copy_from_platform(self, settings: Settings, source: str, repository: str, tag: str) -> str:
        """Push `repository:tag` here with the manifest and blobs of the
        platform registry's `source` (repository:tag); returns its digest."""
        base = platform_registry.url(settings)
        src_repo, src_tag = source.rsplit(":", 1)
        got = httpx.get(f"{base}/v2/{src_repo}/manifests/{src_tag}", headers={"Accept": MANIFEST_ACCEPT})
        got.raise_for_status()
        manifest = got.json()
        with self.client() as here:
            for blob in [manifest["config"], *manifest["layers"]]:
                data = httpx.get(f"{base}/v2/{src_repo}/blobs/{blob['digest']}").content
                started = here.post(f"/v2/{repository}/blobs/uploads/")
                assert started.status_code == 202, started.text
                done = here.put(httpx.URL(started.headers["Location"]).copy_merge_params({"digest": blob["digest"]}), content=data,
                                headers={"Content-Type": "application/octet-stream"})
                assert done.status_code == 201, done.text
            put = here.put(f"/v2/{repository}/manifests/{tag}", content=got.content, headers={"Content-Type": got.headers["content-type"]})
            assert put.status_code == 201, put.text
            return put.headers["Docker-Content-Digest"]


def trusted(settings: Settings, ca_file: Path) -> contextlib.AbstractContextManager[Path]:
    """The certificate in the platform's registry CA directory while in the block."""

    @contextlib.contextmanager
    def put() -> Iterator[Path]:
        directory = settings.effective_registry_ca_dir
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"test-{uuid.uuid4().hex[:8]}.pem"
        shutil.copy(ca_file, target)
        try:
            yield target
        finally:
            target.unlink(missing_ok=True)

    return put()


@contextlib.contextmanager
def running(settings: Settings, workdir: Path) -> Iterator[PrivateRegistry]:
    cert, key = self_signed(workdir)
    username, password = "deployer", f"pw-{uuid.uuid4().hex}"
    (workdir / "htpasswd").write_text(f"{username}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}", "tls": {"certificate": str(cert), "key": str(key)}},
        "auth": {"htpasswd": {"realm": "conveyor-test", "path": str(workdir / "htpasswd")}},
    }
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    log = (workdir / "registry.log").open("w")
    proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    found = PrivateRegistry(f"127.0.0.1:{port}", username, password, cert)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"https://{found.host}/v2/", verify=ssl.create_default_context(cafile=str(cert)), timeout=2).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (workdir / "registry.log").read_text()
            time.sleep(0.1)
        with trusted(settings, cert):
            yield found
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@dataclass
class ChallengingServer:
    host: str  # 127.0.0.1:<port>
    challenge: str = ""  # the WWW-Authenticate of every 401; set it before use
    hits: list[str] = field(default_factory=list)


class _Challenging(BaseHTTPRequestHandler):
    state: ChallengingServer

    def do_HEAD(self) -> None:
        self.state.hits.append(self.path)
        self.send_response(401)
        self.send_header("WWW-Authenticate", self.state.challenge)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass


@contextlib.contextmanager
def challenging_server(settings: Settings, workdir: Path) -> Iterator[ChallengingServer]:
    """A TLS server on loopback (trusted like the private registry) that
    answers every request 401 with its `challenge`, recording the paths asked."""
    cert, key = self_signed(workdir)
    state = ChallengingServer("")
    handler = type("Handler", (_Challenging,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.host = f"127.0.0.1:{server.server_address[1]}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with trusted(settings, cert):
            yield state
    finally:
        server.shutdown()
        server.server_close()
