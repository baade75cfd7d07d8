"""What an app's pods are asked to be (pure): health checks, resources and
autoscaling, and the project limits they must fit.

The same models are the API's input (validated before anything is written:
a 422 names the field and never echoes its value), the app's row (JSON),
each deployment's snapshot, and the release's payload, so what a release
renders is exactly what was asked for and a revert restores it whole.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.domain.commands import Argv as Argv
from conveyor.domain.commands import CommandField, CronEntries, CronEntry
from conveyor.domain.domains import Domains

# Kubernetes' quantity grammar (k8s.io/apimachinery resource.Quantity), less
# signs: a request or limit is never negative.
_QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}
# Far beyond any node: a bound that keeps the arithmetic on quantities small.
_MAX_QUANTITY = Decimal(10) ** 21


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity as a number (cores or bytes); ValueError if it is none."""
    match = _QUANTITY.fullmatch(text) if len(text) <= 64 else None
    if match is None:
        raise ValueError("must be a Kubernetes quantity such as 250m, 1, 1.5, 512Mi or 2Gi")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError("must be a Kubernetes quantity") from None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    elif suffix:
        exponent = int(suffix[1:])
        if abs(exponent) > 30:
            raise ValueError("must be a Kubernetes quantity of a sensible size")
        value = number.scaleb(exponent)
    else:
        value = number
    if value > _MAX_QUANTITY:
        raise ValueError("is larger than any cluster holds")
    return value


def _quantity(text: str) -> str:
    parse_quantity(text)
    return text


def _cores(text: str) -> str:
    if parse_quantity(text) % Decimal("0.001"):
        raise ValueError("must be a whole number of millicores (at least 1m)")
    return text


def _bytes(text: str) -> str:
    if parse_quantity(text) % 1:
        raise ValueError("must be a whole number of bytes, such as 256Mi (m means thousandths)")
    return text


Quantity = Annotated[str, AfterValidator(_quantity)]
# CPU in whole millicores, memory in whole bytes: what Kubernetes keeps as given.
Cores = Annotated[str, AfterValidator(_quantity), AfterValidator(_cores)]
Bytes = Annotated[str, AfterValidator(_quantity), AfterValidator(_bytes)]


def _one_line(text: str) -> str:
    if any(c in text for c in "\r\n\0"):
        raise ValueError("must be one line without NUL")
    return text


class Probe(BaseModel):
    """A health check: `healthcheck` (readiness), `liveness` or `startup`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["http", "tcp", "exec"] = Field(description="http: a GET of `path` on `port`; tcp: a connection to `port`; exec: `command` in the container")
    path: Annotated[str, AfterValidator(_one_line)] | None = Field(
        default=None, max_length=1024, pattern=r"^/", description="http only: the path to GET (default /)"
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="http and tcp: the port (default the app's port)")
    command: Argv | None = Field(default=None, description="exec only: the argv to run")
    initial_delay_seconds: int = Field(default=0, ge=0, le=3600)
    period_seconds: int = Field(default=10, ge=1, le=3600)
    timeout_seconds: int = Field(default=1, ge=1, le=3600)
    failure_threshold: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> Probe:
        if self.type == "exec" and not self.command:
            raise ValueError("an exec check needs `command`")
        if self.type != "exec" and self.command is not None:
            raise ValueError("`command` is for exec checks only")
        if self.type != "http" and self.path is not None:
            raise ValueError("`path` is for http checks only")
        if self.type == "exec" and self.port is not None:
            raise ValueError("`port` is for http and tcp checks only")
        return self

    def render(self, app_port: int) -> dict[str, Any]:
        """The probe as the Kubernetes container spec takes it."""
        probe: dict[str, Any]
        if self.type == "http":
            probe = {"httpGet": {"path": self.path or "/", "port": self.port or app_port}}
        elif self.type == "tcp":
            probe = {"tcpSocket": {"port": self.port or app_port}}
        else:
            probe = {"exec": {"command": list(self.command or [])}}
        probe.update(
            initialDelaySeconds=self.initial_delay_seconds,
            periodSeconds=self.period_seconds,
            timeoutSeconds=self.timeout_seconds,
            failureThreshold=self.failure_threshold,
        )
        return probe


# Without a `healthcheck`: a TCP readiness check on the app's port, as before.
DEFAULT_READINESS: dict[str, Any] = {"periodSeconds": 5}


def readiness(healthcheck: Probe | None, app_port: int) -> dict[str, Any]:
    if healthcheck is None:
        return {"tcpSocket": {"port": app_port}, **DEFAULT_READINESS}
    return healthcheck.render(app_port)


class Resources(BaseModel):
    """CPU and memory of each pod: requests (what the scheduler reserves) and limits."""

    model_config = ConfigDict(extra="forbid")

    cpu: Cores | None = Field(default=None, description="CPU request, e.g. 250m")
    memory: Bytes | None = Field(default=None, description="memory request, e.g. 256Mi")
    cpu_limit: Cores | None = Field(default=None, description="CPU limit, e.g. 1")
    memory_limit: Bytes | None = Field(default=None, description="memory limit, e.g. 512Mi")

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
            asked, bound = getattr(self, request), getattr(self, limit)
            if asked is not None and bound is not None and parse_quantity(bound) < parse_quantity(asked):
                raise ValueError(f"`{limit}` must be at least `{request}`")
        return self

    def render(self) -> dict[str, Any]:
        """The container's `resources` (empty: the namespace's LimitRange defaults apply)."""
        requests = {name: value for name, value in (("cpu", self.cpu), ("memory", self.memory)) if value is not None}
        limits = {name: value for name, value in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if value is not None}
        rendered: dict[str, Any] = {}
        if requests:
            rendered["requests"] = requests
        if limits:
            rendered["limits"] = limits
        return rendered


class Autoscaling(BaseModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) for the app's pods, on the
    CPU they use against what they request."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(ge=1, le=100_000)
    max_replicas: int = Field(ge=1, le=100_000)
    target_cpu_percent: int = Field(default=70, ge=1, le=1000, description="average CPU use, in percent of the CPU request")
    scale_down_delay_seconds: int = Field(
        default=300, ge=0, le=3600, description="how long a lower recommendation must hold before pods are removed"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("`max_replicas` must be at least `min_replicas`")
        return self

    def starting(self, replicas: int) -> int:
        """The count a new Deployment starts at: `replicas`, within the bounds."""
        return min(max(replicas, self.min_replicas), self.max_replicas)


WEB = "web"
# A process's Deployment is `<slug>-<name>`: short DNS labels, never `web`
# (the app's own fields are its web process).
PROCESS_NAME = re.compile(r"[a-z]([-a-z0-9]{0,28}[a-z0-9])?")
MAX_PROCESSES = 10


def _process_name(name: str) -> str:
    if not PROCESS_NAME.fullmatch(name):
        raise ValueError("process names are DNS labels: lowercase letters, digits and dashes, starting with a letter, at most 30 characters")
    if name == WEB:
        raise ValueError("`web` is the app itself: set its replicas, resources and checks on the app")
    return name


ProcessName = Annotated[str, AfterValidator(_process_name)]


class Process(BaseModel):
    """A process other than web (a Procfile line, or declared here): its own
    Deployment `<slug>-<name>`, with no Service or Ingress."""

    model_config = ConfigDict(extra="forbid")

    command: CommandField | None = Field(
        default=None, description="What the process runs (a string runs in a shell); git and upload apps may take it from the Procfile's line"
    )
    replicas: int = Field(default=1, ge=0, le=100_000, description="How many pods (a PATCH of it alone is a scale, not a release)")
    resources: Resources | None = None
    autoscaling: Autoscaling | None = None
    healthcheck: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None

    @model_validator(mode="after")
    def _checks_name_their_port(self) -> Process:
        for name in ("healthcheck", "liveness", "startup"):
            probe: Probe | None = getattr(self, name)
            if probe is not None and probe.type != "exec" and probe.port is None:
                raise ValueError(f"`{name}` needs a `port`: only web has the app's port")
        return self

    def definition(self) -> Process:
        """The process without its count: what a release of it renders."""
        return self.model_copy(update={"replicas": 0})


# A Procfile's `release:` line (Heroku's release phase) is not a process: it would run in a loop.
PROCFILE_RELEASE = "release"


def parse_procfile(text: str) -> dict[str, str]:
    """A Procfile's processes, name → command line, web among them. Lines
    that are not `name: command` with a process name are left out, and so is
    `release:` (Conveyor's `release_command` is the release phase); the
    first line of a name counts."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, command = line.partition(":")
        name, command = name.strip(), command.strip()
        if colon and command and name != PROCFILE_RELEASE and PROCESS_NAME.fullmatch(name) and len(found) <= MAX_PROCESSES and len(command) <= 4096:
            found.setdefault(name, command)
    return found


def with_procfile(processes: dict[str, Process] | None, procfile: dict[str, str] | None) -> dict[str, Process] | None:
    """The processes a release of an image built from a Procfile runs: those
    declared, each without a command taking its Procfile line, and every other
    line of the Procfile as a process of one replica."""
    merged = dict(processes or {})
    for name, line in (procfile or {}).items():
        if name not in merged:
            merged[name] = Process(command=line)
        elif merged[name].command is None:
            merged[name] = merged[name].model_copy(update={"command": line})
    return merged or None


def at_counts(processes: dict[str, Process] | None, app: Workload) -> dict[str, Process] | None:
    """`processes` (a release's, or another deployment's) at the app's
    process counts now: scaling a process is not a release, and a revert or
    retry keeps today's counts as web keeps its `replicas`."""
    counts = {name: p.replicas for name, p in (app.processes or {}).items()}
    return {name: p.model_copy(update={"replicas": counts.get(name, p.replicas)}) for name, p in (processes or {}).items()} or None


class Workload(BaseModel):
    """An app's health checks and resources, as its row and each deployment's
    snapshot hold them (JSON, only what is set)."""

    model_config = ConfigDict(extra="forbid")

    healthcheck: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    resources: Resources | None = None
    autoscaling: Autoscaling | None = None
    processes: Annotated[dict[ProcessName, Process], Field(max_length=MAX_PROCESSES)] | None = None
    # Custom domains served by the app's Ingress besides its default host,
    # and whether plain HTTP is redirected to HTTPS (None: the controller's default).
    domains: Domains | None = None
    redirect_http: bool | None = None
    # Run once per release, before any Deployment changes (conveyor/domain/jobs.py).
    release_command: CommandField | None = None
    # Scheduled jobs: a Temporal Schedule each, following the active release.
    cron: CronEntries | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "healthcheck", "liveness", "startup", "resources", "autoscaling", "processes", "domains", "redirect_http", "release_command", "cron"
    )

    @field_validator("domains")
    @classmethod
    def _no_empty_list(cls, value: list[str] | None) -> list[str] | None:
        # No domains is stored as none: `[]` and null are one state, not a release apart.
        return value or None

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> Workload:
        return cls.model_validate(stored or {})

    @field_validator("cron")
    @classmethod
    def _no_entries_is_none(cls, entries: list[CronEntry] | None) -> list[CronEntry] | None:
        # `[]` removes them, as null does: the same app, the same release.
        return entries or None

    @staticmethod
    def process_names(stored: dict[str, Any] | None) -> list[str]:
        """The names of the processes besides web in a stored workload (what
        `stored` wrote), read without validating the rest of it."""
        return list((stored or {}).get("processes") or {})

    def stored(self) -> dict[str, Any] | None:
        """What the row holds: None when nothing is set."""
        return self.model_dump(exclude_none=True, mode="json") or None

    def autoscaling_of(self, process: str) -> Autoscaling | None:
        """The autoscaling of web (the app's own) or of another process."""
        if process == WEB:
            return self.autoscaling
        found = (self.processes or {}).get(process)
        return found.autoscaling if found is not None else None

    def cron_entries(self) -> list[CronEntry]:
        return list(self.cron or [])

    def demand(self, replicas: int) -> Demand:
        """What the web process may ask of its project: its replicas, or with
        autoscaling on, as many as the autoscaler may make."""
        return Demand.of(replicas, self.resources, self.autoscaling)

    def demands(self, replicas: int) -> list[Demand]:
        """What every process of the app may ask of its project, web first."""
        others = [Demand.of(p.replicas, p.resources, p.autoscaling, f"processes.{name}.") for name, p in sorted((self.processes or {}).items())]
        return [self.demand(replicas), *others]


class ProjectLimits(BaseModel):
    """A project's defaults and ceilings: its namespace's LimitRange (the
    defaults of a container that asks for nothing) and ResourceQuota (totals
    over all its pods), and the most replicas one app may ask for."""

    model_config = ConfigDict(extra="forbid")

    default_cpu: Cores | None = None
    default_memory: Bytes | None = None
    default_cpu_limit: Cores | None = None
    default_memory_limit: Bytes | None = None
    quota_pods: int | None = Field(default=None, ge=0, le=1_000_000)
    quota_cpu: Cores | None = None
    quota_memory: Bytes | None = None
    max_replicas_per_app: int = Field(default=50, ge=0, le=10_000)

    @model_validator(mode="after")
    def _quotas_have_defaults(self) -> ProjectLimits:
        # A CPU or memory quota refuses every pod that asks for none: the
        # LimitRange must give such pods a request.
        if self.quota_cpu is not None and self.default_cpu is None and self.default_cpu_limit is None:
            raise ValueError("a CPU quota needs a default CPU request (default_cpu)")
        if self.quota_memory is not None and self.default_memory is None and self.default_memory_limit is None:
            raise ValueError("a memory quota needs a default memory request (default_memory)")
        return self

    def has_quota(self) -> bool:
        """Whether a total over the project's apps is bounded (pods, CPU or memory)."""
        return self.quota_pods is not None or self.quota_cpu is not None or self.quota_memory is not None

    def over(self, given: dict[str, Any] | None) -> ProjectLimits:
        """These limits with a project's own settings on top."""
        return ProjectLimits.model_validate(self.model_dump() | {k: v for k, v in (given or {}).items() if v is not None})

    def defaults(self) -> Resources:
        return Resources(cpu=self.default_cpu, memory=self.default_memory, cpu_limit=self.default_cpu_limit, memory_limit=self.default_memory_limit)


def pod_requests(resources: Resources | None, defaults: Resources) -> tuple[Decimal, Decimal]:
    """(CPU cores, memory bytes) one pod counts against a quota: its requests,
    else its limits (Kubernetes sets a missing request to the limit), else the
    LimitRange's default requests, else its default limits."""
    mine = resources or Resources()

    def pick(*values: str | None) -> Decimal:
        return next((parse_quantity(v) for v in values if v is not None), Decimal(0))

    cpu = pick(mine.cpu, mine.cpu_limit, defaults.cpu, defaults.cpu_limit)
    memory = pick(mine.memory, mine.memory_limit, defaults.memory, defaults.memory_limit)
    return cpu, memory


def cpu_request(resources: Resources | None, limits: ProjectLimits) -> str | None:
    """The CPU a pod requests (what autoscaling measures use against), from
    its own resources or the project's defaults."""
    mine = resources or Resources()
    return mine.cpu or mine.cpu_limit or limits.default_cpu or limits.default_cpu_limit


def format_cores(value: Decimal) -> str:
    return f"{value.normalize():f}" if value >= 1 else f"{(value * 1000).normalize():f}m"


def format_bytes(value: Decimal) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value >= size:
            return f"{(value / size).quantize(Decimal('0.1')).normalize():f}{unit}"
    return f"{value.normalize():f}"


# A rollout brings up to this share of an app's replicas more pods at once
# (the Deployment's maxSurge); the quota must hold them too.
SURGE_PERCENT = 25


def surge(replicas: int) -> int:
    return -(-replicas * SURGE_PERCENT // 100)


class Demand(BaseModel):
    """What one process asks of its project: replicas of pods with these
    resources (`field`: where the replica count was asked for; `prefix`: where
    the process's fields are, "" for web)."""

    replicas: int
    resources: Resources | None = None
    field: str = "replicas"
    prefix: str = ""

    @classmethod
    def of(cls, replicas: int, resources: Resources | None, autoscaling: Autoscaling | None, prefix: str = "") -> Demand:
        """Its replicas, or with autoscaling on, as many as the autoscaler may make."""
        if autoscaling is not None:
            return cls(replicas=autoscaling.max_replicas, resources=resources, field=f"{prefix}autoscaling.max_replicas", prefix=prefix)
        return cls(replicas=replicas, resources=resources, field=f"{prefix}replicas", prefix=prefix)


def _totals(limits: ProjectLimits, demands: list[Demand]) -> tuple[int, Decimal, Decimal]:
    defaults = limits.defaults()
    pods, cpu, memory = 0, Decimal(0), Decimal(0)
    for demand in demands:
        pod_cpu, pod_memory = pod_requests(demand.resources, defaults)
        pods, cpu, memory = pods + demand.replicas, cpu + pod_cpu * demand.replicas, memory + pod_memory * demand.replicas
    return pods, cpu, memory


def grows(limits: ProjectLimits, changed: list[Demand], before: list[Demand]) -> bool:
    """Whether `changed` asks the project for more than `before` did: more
    pods, or more CPU or memory in all."""
    (new_pods, new_cpu, new_memory), (old_pods, old_cpu, old_memory) = _totals(limits, changed), _totals(limits, before)
    return new_pods > old_pods or new_cpu > old_cpu or new_memory > old_memory


def above_default_limits(limits: ProjectLimits, resources: Resources | None, prefix: str = "") -> tuple[str, str] | None:
    """A request above the limit the namespace's LimitRange would give a
    container that sets none: Kubernetes would refuse every pod."""
    mine = resources or Resources()
    for request, own_limit, default, what in (
        ("cpu", mine.cpu_limit, limits.default_cpu_limit, "CPU"),
        ("memory", mine.memory_limit, limits.default_memory_limit, "memory"),
    ):
        asked = getattr(mine, request)
        if asked is not None and own_limit is None and default is not None and parse_quantity(asked) > parse_quantity(default):
            return f"{prefix}resources.{request}", f"more than the project's default {what} limit of {default}: set {prefix}resources.{request}_limit too"
    return None


def over_quota(
    limits: ProjectLimits, changed: Demand | list[Demand], others: list[Demand], before: Demand | list[Demand] | None = None
) -> tuple[str, str] | None:
    """The first limit that `changed` (one app's new replicas and resources,
    of each of its processes) breaks, with every other app of the project as
    it is and room for the changed processes' rollout surge: (field, message),
    or None when it fits. A change that asks for no more than the app had
    (`before`) is never refused: a project over a quota lowered since can
    still shrink. Messages name the limit and the totals, never a value the
    caller gave."""
    mine = changed if isinstance(changed, list) else [changed]
    earlier = before if isinstance(before, list) else [before] if before is not None else []
    if before is not None and not grows(limits, mine, earlier):
        return None
    # The process whose change asks for more is the one a refusal names.
    was = {d.prefix: d for d in earlier}
    named = next((d for d in mine if d.prefix in was and grows(limits, [d], [was[d.prefix]])), None)
    named = named or next((d for d in mine if d.prefix not in was), mine[0])
    for demand in mine:
        if demand.replicas > limits.max_replicas_per_app:
            return demand.field, (
                f"more than the {limits.max_replicas_per_app} replicas one app of this project may have "
                "(its max_replicas_per_app, else CONVEYOR_MAX_REPLICAS)"
            )
    surged = [d.model_copy(update={"replicas": d.replicas + surge(d.replicas)}) for d in mine]
    pods, cpu, memory = _totals(limits, surged + others)
    if limits.quota_pods is not None and pods > limits.quota_pods:
        return named.field, f"the project's apps would need {pods} pods during this rollout, over its quota of {limits.quota_pods}"
    asking = named.prefix
    if limits.quota_cpu is not None and cpu > parse_quantity(limits.quota_cpu):
        return f"{asking}resources.cpu", f"the project's apps would request {format_cores(cpu)} CPU during this rollout, over its quota of {limits.quota_cpu}"
    if limits.quota_memory is not None and memory > parse_quantity(limits.quota_memory):
        return f"{asking}resources.memory", f"the project's apps would request {format_bytes(memory)} of memory during this rollout, over its quota of {limits.quota_memory}"
    return None


# The names of a project's LimitRange and ResourceQuota in its namespace.
LIMIT_RANGE = "conveyor-defaults"
RESOURCE_QUOTA = "conveyor-quota"


def limit_range(limits: ProjectLimits, namespace: str, labels: dict[str, str]) -> dict[str, Any] | None:
    """The namespace's LimitRange: the defaults of a container that asks for nothing."""
    defaults = limits.defaults()
    requests = {k: v for k, v in (("cpu", defaults.cpu), ("memory", defaults.memory)) if v is not None}
    bounds = {k: v for k, v in (("cpu", defaults.cpu_limit), ("memory", defaults.memory_limit)) if v is not None}
    if not requests and not bounds:
        return None
    item: dict[str, Any] = {"type": "Container"}
    if requests:
        item["defaultRequest"] = requests
    if bounds:
        item["default"] = bounds
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": LIMIT_RANGE, "namespace": namespace, "labels": labels},
        "spec": {"limits": [item]},
    }


def resource_quota(limits: ProjectLimits, namespace: str, labels: dict[str, str]) -> dict[str, Any] | None:
    """The namespace's ResourceQuota: totals over all the project's pods."""
    hard = {
        key: value
        for key, value in (("pods", None if limits.quota_pods is None else str(limits.quota_pods)), ("requests.cpu", limits.quota_cpu), ("requests.memory", limits.quota_memory))
        if value is not None
    }
    if not hard:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": RESOURCE_QUOTA, "namespace": namespace, "labels": labels},
        "spec": {"hard": hard},
    }
