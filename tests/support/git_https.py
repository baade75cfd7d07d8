"""A git server for the tests: `git http-backend` (smart HTTP) behind a small
HTTPS server on loopback, with a self-signed certificate.

The platform trusts it the way an operator trusts a private git server: its
certificate goes into the platform's git CA directory (CONVEYOR_GIT_CA_DIR,
default <home>/git-ca) while the server runs. So the tests need nothing that a
platform started by `conveyor up` refuses: https is an allowed scheme."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def self_signed(directory: Path, common_name: str = "conveyor test git server", stem: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA; returns (cert, key)
    files `<stem>.pem` and `<stem>.key` in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class _GitBackend(BaseHTTPRequestHandler):
    root: Path  # set on the subclass made per server

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass

    def _backend(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": self.client_address[0],
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60).stdout
        head, payload = _HEADER_END.split(out, 1) if _HEADER_END.search(out) else (out, b"")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class GitHttpsServer:
    """Serves the bare repositories under `root` at https://127.0.0.1:<port>/<name>.git."""

    def __init__(self, root: Path, workdir: Path, ca_dir: Path):
        self.root = root
        self.cert, key = self_signed(workdir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        handler = type("Backend", (_GitBackend,), {"root": root})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.trusted = ca_dir / f"test-git-server-{uuid.uuid4().hex[:8]}.pem"
        self._ca_dir = ca_dir
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> GitHttpsServer:
        self._ca_dir.mkdir(parents=True, exist_ok=True)
        self.trusted.write_bytes(self.cert.read_bytes())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.trusted.unlink(missing_ok=True)
        self.server.shutdown()
        self.server.server_close()
