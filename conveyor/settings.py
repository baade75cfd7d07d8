"""One Settings object for every process (env prefix CONVEYOR_).

Read once at process start through `get_settings()`; never at import time of a
workflow module.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor.domain.workload import ProjectLimits

if TYPE_CHECKING:
    from temporalio.envconfig import ClientConfigProfile


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    # Where the local platform keeps its state (databases, logs, kubeconfig).
    home: Path = Field(default_factory=lambda: Path.cwd() / ".conveyor")

    # Kubernetes. When `kubeconfig` is set Conveyor talks to that cluster and
    # `conveyor up` does not start a local one.
    kubeconfig: Path | None = None
    cluster_name: str = "conveyor"
    kube_apiserver_port: int = 6443
    nodes: int = 3
    node_cpu: str = "8"
    node_memory: str = "16Gi"
    # Simulated nodes cost nothing per pod: room for the apps of a whole test
    # suite run twice (SQLite, then PostgreSQL) on one cluster, as CI does.
    node_pods: str = "1000"
    pod_create_delay_ms: int = 200
    pod_ready_delay_ms: int = 1000
    pod_ready_jitter_ms: int = 500
    pod_crash_delay_ms: int = 2000
    pod_delete_delay_ms: int = 500
    # A Job's pod (release command, scheduled job) ends this long after it
    # runs; with the slow marker in its command (conveyor/domain/markers.py), this long.
    pod_job_delay_ms: int = 300
    pod_job_slow_delay_ms: int = 15000
    metrics_server: bool = True

    # Temporal. The connection is read as the `temporal` CLI reads it
    # (temporalio.envconfig: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    # TEMPORAL_API_KEY, TEMPORAL_TLS_*, the profile TEMPORAL_PROFILE of the
    # TOML file TEMPORAL_CONFIG_FILE, by default ~/.config/temporalio/temporal.toml);
    # each CONVEYOR_TEMPORAL_* setting below that is set wins over what it names.
    # With neither: the local dev server.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    temporal_task_queue: str = "conveyor"
    # A Temporal cluster other than the local dev server: TLS (server CA, and
    # a client certificate and key for mTLS), or an API key (Temporal Cloud;
    # implies TLS). Files are PEM. `temporal_tls` unset: TLS when a file, a
    # server name or an API key asks for it, or the profile does.
    temporal_tls: bool | None = None
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: SecretStr | None = None
    # Keys that encrypt every Temporal payload: `id:base64key,...` (32-byte
    # keys, newest first: the first encrypts, all decrypt). Unset: read from
    # `payload_key_file` (default <home>/payload-keys), which `conveyor up` creates.
    payload_keys: SecretStr | None = None
    payload_key_file: Path | None = None
    # Origins allowed to call the codec endpoint from a browser (comma-separated);
    # the local Temporal Web UI's origin is always allowed.
    codec_cors_origins: str = ""
    # How long a browser's codec sign-in (GET /api/v1/codec/login) lasts.
    codec_session_ttl_seconds: int = 8 * 3600

    # Registry and builder
    registry: str = "127.0.0.1:5000"
    registry_insecure: bool = True
    # PEM certificates (*.pem) of CAs that registries' TLS is trusted with
    # besides the system's: a private registry's CA (default <home>/registry-ca).
    registry_ca_dir: Path | None = None
    # Hosts, host:port or CIDRs the worker may reach for registries and git
    # although they are (or resolve to) loopback, private, shared or
    # link-local addresses (comma-separated). The platform's own registry and
    # the hosts named by the certificates of the CA directories are allowed
    # without being listed.
    outbound_allow: str = ""

    # Database: SQLite under `home` unless a URL is given (PostgreSQL:
    # postgresql+psycopg://user:pass@host/db).
    database_url: str | None = None

    # PostgreSQL connection pool of each API or worker process. The API's
    # threads (`api_threads` + `api_read_threads`) should not exceed pool
    # size + overflow.
    db_pool_size: int = 10
    db_max_overflow: int = 30

    # API and apps
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Threads that run the API's writes (and plain `def` routes).
    api_threads: int = 30
    # Threads of their own for the API's short reads (the caller's token, the
    # reads of `async` routes such as the app list), so that writes queued on
    # the database never hold those up.
    api_read_threads: int = 10
    # Writes of one API process past their turn at a time (api/admission.py);
    # the rest wait in arrival order, so reads are not held up behind a burst.
    api_concurrent_writes: int = Field(default=4, ge=1, le=1000)
    # Operations committed but not handed to Temporal this long (a crash, or
    # Temporal away) are handed off by the reconciler, which looks this often.
    # (longer than a request waits for its own hand-off, so the two do not race)
    handoff_grace_seconds: float = 15.0
    handoff_interval_seconds: float = 2.0
    # An Idempotency-Key answers its repeats for this long; after that the key
    # is free again and its record is pruned.
    idempotency_key_hours: float = 24.0
    base_domain: str = "apps.localhost"
    # Custom domains' TLS: a cert-manager ClusterIssuer that issues the
    # certificate of every domain without an uploaded one (unset: only
    # uploaded certificates), and the annotations that redirect plain HTTP to
    # HTTPS for apps with `redirect_http` (comma-separated; ingress-nginx's by default).
    tls_cluster_issuer: str | None = None
    ingress_redirect_annotations: str = "nginx.ingress.kubernetes.io/ssl-redirect,nginx.ingress.kubernetes.io/force-ssl-redirect"
    # Every project's defaults and ceilings (a project's own, set by
    # `conveyor project create/update`, win): the most replicas one app may
    # have; the LimitRange defaults of a container that asks for nothing; the
    # ResourceQuota totals over all of a project's pods. Unset: no such limit.
    max_replicas: int = 50
    default_cpu: str | None = None
    default_memory: str | None = None
    default_cpu_limit: str | None = None
    default_memory_limit: str | None = None
    quota_pods: int | None = None
    quota_cpu: str | None = None
    quota_memory: str | None = None
    default_progress_deadline_seconds: int = 600
    # A new pod stuck in CrashLoopBackOff/ImagePullBackOff this long fails the
    # rollout before the progress deadline (never later than the deadline).
    rollout_stuck_seconds: int = 30
    # A deployment retries transient failures (an API, registry or database
    # away) for this long after it starts, plus its app's progress deadline
    # and, for source apps, the build timeout; then it fails with the last error.
    deploy_deadline_seconds: int = 1800
    # How long a release command may run (its Job's activeDeadlineSeconds);
    # past it the release fails and nothing of it was applied.
    release_timeout_seconds: int = 600
    # An idle progress stream (SSE) sends a keep-alive comment this often.
    progress_ping_seconds: float = 15.0
    # Progress streams and log follows one API process holds at once; one more is a 503.
    max_streams: int = 200
    # ... of which one token holds at most this many; one more is a 429.
    max_streams_per_token: int = 20
    # A delete waits this long for the app's objects to go (finalizers), then
    # fails with what is left; DELETE can then be tried again.
    delete_timeout_seconds: int = 120
    namespace_prefix: str = "conveyor-"
    # RoleBindings the worker puts in each app namespace it creates, as
    # `clusterrole=namespace/serviceaccount,...` (deploy/ binds the worker and
    # the API this way, so neither needs rights in any other namespace).
    app_role_bindings: str = ""
    # Builds from source
    base_image: str | None = None  # default: <registry>/conveyor/base:busybox
    allowed_repo_schemes: str = "https,ssh"
    # PEM certificates (*.pem) of CAs that git over HTTPS trusts besides the
    # system's: a private git server's CA (default <home>/git-ca).
    git_ca_dir: Path | None = None
    build_timeout_seconds: int = 900
    upload_max_bytes: int = 50 * 1024 * 1024
    upload_max_uncompressed_bytes: int = 200 * 1024 * 1024
    upload_max_entries: int = 10_000
    # The build sandbox (conveyor/builds/sandbox.py). Outbound network for build
    # steps (package installs), through slirp4netns: the host's own addresses,
    # its loopback and the deny ranges below stay unreachable. Off: no network.
    build_network: bool = True
    # With the build network on, these IPv4 ranges are routed to nowhere too
    # (private, shared, link-local: the cluster, cloud metadata, internal
    # services). Narrow it to let builds reach, say, a private package mirror.
    build_network_deny: str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,169.254.0.0/16"
    # Registries a Dockerfile's FROM may name besides the platform's own (comma-separated).
    build_from_registries: str = "docker.io,ghcr.io,quay.io,registry.k8s.io,public.ecr.aws,gcr.io"
    # Pull-through mirrors: `docker.io=127.0.0.1:5000/mirror/docker.io,ghcr.io=…`;
    # a base image of that registry is pulled from the mirror instead.
    registry_mirrors: str = ""
    # Layers kept between builds of one app (conveyor/builds/cache.py): on
    # the worker host, and (`build_cache_shared`) in the platform's registry
    # for every worker. A store over the max is neither kept nor shared; the
    # total bounds the host's caches; caches unused for the days go.
    build_cache: bool = True
    build_cache_shared: bool = True
    build_cache_max_mb: int = 2048
    build_cache_total_mb: int = 20480
    build_cache_days: int = 7
    build_memory_mb: int = 2048
    build_cpus: float = 1.0
    build_max_processes: int = 1024
    build_max_file_mb: int = 4096

    # OpenTelemetry collector base URL (OTLP over HTTP), e.g. http://127.0.0.1:4318
    otlp_endpoint: str | None = None
    # Run workflow code in Temporal's sandbox, which refuses a clock, random or
    # I/O call in it as it happens (README: "The workflow sandbox"). Off, the
    # worker saves about 8 ms of CPU per release; the tests run it on.
    workflow_sandbox: bool = False
    # Activities one worker runs at once (threads): every rollout wait holds one.
    max_concurrent_activities: int = 100
    # On SIGTERM the worker stops polling and gives running activities this
    # long to finish before it cancels them (keep the orchestrator's grace
    # period, e.g. terminationGracePeriodSeconds, longer than this).
    worker_shutdown_seconds: float = 60.0

    # The profile temporalio.envconfig loaded, None when there was nothing to load.
    _temporal_profile: ClientConfigProfile | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        profile = load_temporal_profile(os.environ)
        self._temporal_profile = profile
        if profile is not None:
            if "temporal_address" not in self.model_fields_set and profile.address:
                self.temporal_address = profile.address
            if "temporal_namespace" not in self.model_fields_set and profile.namespace:
                self.temporal_namespace = profile.namespace

    @property
    def temporal_profile(self) -> ClientConfigProfile | None:
        """The Temporal client config (TEMPORAL_* variables and profile) that
        the CONVEYOR_TEMPORAL_* settings override; its TLS, API key and gRPC
        metadata are merged in `conveyor.clients.temporal_client`."""
        return self._temporal_profile

    @model_validator(mode="after")
    def _project_limits(self) -> Settings:
        # A bad quantity or a quota without a default refuses to start, naming the setting.
        self.project_limits()
        return self

    @field_validator("registry_mirrors")
    @classmethod
    def _mirrors(cls, value: str) -> str:
        for entry in filter(None, (e.strip() for e in value.split(","))):
            registry, _, prefix = entry.partition("=")
            if not registry.strip() or not prefix.strip():
                raise ValueError("each mirror is registry=mirror-prefix, e.g. docker.io=127.0.0.1:5000/mirror/docker.io")
        return value

    @property
    def mirrors(self) -> dict[str, str]:
        found = (e.strip().partition("=") for e in self.registry_mirrors.split(",") if e.strip())
        return {registry.strip(): prefix.strip() for registry, _, prefix in found}

    @property
    def from_registries(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.build_from_registries.split(",") if r.strip())

    @field_validator("build_network_deny")
    @classmethod
    def _ipv4_networks(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if entry and not isinstance(ipaddress.ip_network(entry, strict=False), ipaddress.IPv4Network):
                raise ValueError("must be comma-separated IPv4 networks (the build network has no IPv6)")
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _outbound_allow(cls, value: str) -> str:
        from conveyor.domain.egress import parse_allow

        parse_allow(value)
        return value

    @property
    def redirect_annotations(self) -> list[str]:
        return [name.strip() for name in self.ingress_redirect_annotations.split(",") if name.strip()]

    @property
    def build_network_denied(self) -> list[str]:
        return [str(ipaddress.ip_network(e.strip(), strict=False)) for e in self.build_network_deny.split(",") if e.strip()]

    @property
    def local_kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def effective_kubeconfig(self) -> Path:
        return self.kubeconfig or self.local_kubeconfig

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'conveyor.db'}"

    def project_limits(self, own: dict | None = None) -> ProjectLimits:
        """The limits of a project whose row holds `own`, over these settings."""
        everyone = ProjectLimits(
            default_cpu=self.default_cpu,
            default_memory=self.default_memory,
            default_cpu_limit=self.default_cpu_limit,
            default_memory_limit=self.default_memory_limit,
            quota_pods=self.quota_pods,
            quota_cpu=self.quota_cpu,
            quota_memory=self.quota_memory,
            max_replicas_per_app=self.max_replicas,
        )
        return everyone.over(own)

    def project_namespace(self, project_id: str) -> str:
        """Apps of project `proj_x` live in namespace `<prefix>x`."""
        return self.namespace_prefix + project_id.removeprefix("proj_").replace("_", "-").lower()

    @property
    def repo_schemes(self) -> list[str]:
        return [s.strip().lower() for s in self.allowed_repo_schemes.split(",") if s.strip()]

    @property
    def role_bindings(self) -> list[tuple[str, str, str]]:
        """(cluster role, service account namespace, service account name) of `app_role_bindings`."""
        bindings = []
        for item in filter(None, (part.strip() for part in self.app_role_bindings.split(","))):
            role, _, account = item.partition("=")
            namespace, _, name = account.partition("/")
            if not (role and namespace and name):
                raise ValueError("CONVEYOR_APP_ROLE_BINDINGS: each item is clusterrole=namespace/serviceaccount")
            bindings.append((role, namespace, name))
        return bindings

    @property
    def build_base_image(self) -> str:
        return self.base_image or f"{self.registry}/conveyor/base:busybox"

    @property
    def effective_payload_key_file(self) -> Path:
        return self.payload_key_file or self.home / "payload-keys"

    @property
    def effective_git_ca_dir(self) -> Path:
        return self.git_ca_dir or self.home / "git-ca"

    @property
    def effective_registry_ca_dir(self) -> Path:
        return self.registry_ca_dir or self.home / "registry-ca"

    @property
    def admin_token_file(self) -> Path:
        return self.home / "admin-token"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def codec_endpoint(self) -> str:
        """Temporal's remote codec protocol, served by the API."""
        return f"{self.api_url}/api/v1/codec"

    @property
    def temporal_ui_url(self) -> str:
        """The local Temporal Web UI (the origin the codec endpoint allows by default)."""
        host = self.temporal_address.rsplit(":", 1)[0]
        return f"http://{host}:{self.temporal_ui_port}"

    @property
    def temporal_port(self) -> int:
        return int(self.temporal_address.rsplit(":", 1)[1])

    @property
    def registry_port(self) -> int:
        return int(self.registry.rsplit(":", 1)[1])


def load_temporal_profile(env: Mapping[str, str]) -> ClientConfigProfile | None:
    """The Temporal client profile as the `temporal` CLI would load it, or None
    when there is nothing to load (no TEMPORAL_* variable, no config file at
    the default place): temporalio, and its 0.3 s of imports, stays unloaded."""
    if not any(key.startswith("TEMPORAL_") for key in env) and not _default_temporal_config_file(env).exists():
        return None
    from temporalio.envconfig import ClientConfigProfile

    try:
        return ClientConfigProfile.load(override_env_vars=dict(env))
    except Exception as exc:  # noqa: BLE001 - temporalio's ConfigError (profile not found, bad TOML) has no public type
        raise ValueError(f"the Temporal client config (TEMPORAL_* variables, TEMPORAL_CONFIG_FILE): {exc}") from None


def _default_temporal_config_file(env: Mapping[str, str]) -> Path:
    """Where temporalio looks without TEMPORAL_CONFIG_FILE (its config dir: XDG on Linux)."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    if sys.platform != "darwin" and xdg.startswith("/"):
        return Path(xdg) / "temporalio" / "temporal.toml"
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry (an arbitrary uid in a container)
        return Path("/nonexistent")
    base = home / "Library" / "Application Support" if sys.platform == "darwin" else home / ".config"
    return base / "temporalio" / "temporal.toml"


@lru_cache
def get_settings() -> Settings:
    return Settings()
