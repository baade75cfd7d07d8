"""How things fail: one named type per kind of failure, each either transient
or permanent (kopf's TemporaryError/PermanentError idea).

- A `TransientError` may pass by itself (a system that is away, busy, or not
  yet granted a permission): the activity's retry policy tries it again, with
  backoff, until the operation's deadline.
- A `PermanentError` will fail the same way however often it is tried (an
  invalid image, a refused object, a failing build step): the operation fails
  at once with its message as the reason.

Activities raise these; the worker (worker/failures.py) hands each to Temporal
as an `ApplicationError` whose `type` is its `kind` and which is non-retryable
when it is permanent, so no activity builds an ApplicationError by hand.
Workflows match a failure by its type with `is_kind`, never by a string.

A kind is the class name, and it is written into workflow histories: running
executions (and their replays) match on it, so renaming a class is a change of
the wire format (tests/unit/test_errors.py pins every kind).
"""

from __future__ import annotations

from typing import ClassVar

from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError


class ConveyorError(Exception):
    """A failure with a name. Raise a subclass of `TransientError` or `PermanentError`."""

    transient: ClassVar[bool]
    # The `type` of the ApplicationError Temporal carries: the class name.
    kind: ClassVar[str] = "ConveyorError"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = cls.__name__

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TransientError(ConveyorError):
    """Retried until the operation's deadline: a later attempt may pass."""

    transient = True


class PermanentError(ConveyorError):
    """Not retried: the operation fails at once with this message."""

    transient = False


# --- the deployment's own record ----------------------------------------------------


class DeploymentEnded(PermanentError):
    """A cluster write on behalf of a deployment that has ended already (a run
    started by a workflow Reset after it finished). Nothing was written; the
    recorded outcome stands."""


class DeploymentGone(PermanentError):
    """The deployment's (or its build's) row no longer exists: the API commits
    it before the workflow starts, so it was deleted with its app."""


# --- Kubernetes ---------------------------------------------------------------------


class KubernetesUnreachable(TransientError):
    """The Kubernetes API cannot be reached (connection refused, timeout, TLS)."""


class KubernetesUnavailable(TransientError):
    """The Kubernetes API answered that it cannot take the request now:
    408, 409 (a conflicting write), 429 or a 5xx."""


class KubernetesForbidden(TransientError):
    """The worker's account lacks an RBAC permission (a 403 from the
    authorizer). Transient: a grant added (or a RoleBinding that reaches the
    authorizer a moment after it was applied) lets the next attempt pass."""


class KubernetesRefused(PermanentError):
    """Kubernetes refused the request for good: any other 4xx (an invalid
    object, an admission webhook or policy, a quota)."""


class RolloutFailed(PermanentError):
    """The rollout failed: its progress deadline passed, or a new pod is stuck
    (CrashLoopBackOff, ImagePullBackOff)."""


class DeletionStuck(PermanentError):
    """The app's objects were still there at the delete's timeout (a finalizer
    holds them): waiting again would wait on the same finalizer."""


# --- images and the registry --------------------------------------------------------


class InvalidImage(PermanentError):
    """The image reference cannot be parsed."""


class RegistryUnreachable(TransientError):
    """The registry cannot be reached, or answered that it cannot serve now (5xx, 429)."""


class RegistryRefused(PermanentError):
    """The registry answered that it will not: the image or source is not
    there, access is refused, or what it holds is not what was asked for."""


# --- sources and builds -------------------------------------------------------------


class SourceUnreachable(TransientError):
    """The git server cannot be read now (network, server error)."""


class SourceRefused(PermanentError):
    """The source cannot be used: the URL is not allowed, the repository or
    the branch does not exist, access is denied."""


class BuildFailed(PermanentError):
    """The build cannot succeed as it is: a step failed, the source or its
    Dockerfile is refused, the build timed out."""


class BuildInterrupted(TransientError):
    """A pull from or push to the registry failed during the build in a way a
    later attempt may pass (the registry was away)."""


# --- jobs (the release command, scheduled jobs) -------------------------------------


class JobFailed(PermanentError):
    """A Job ran and failed (its command exited non-zero, or passed its
    deadline): the release fails with its last lines; it is not run again."""


class JobNotRunnable(PermanentError):
    """A scheduled run has nothing to run: the app has no active release, or
    the active release has no such cron entry (it was removed)."""


class TemporalUnavailable(TransientError):
    """Temporal cannot be reached or cannot serve now (a Schedule's create, update or delete)."""


class SchedulesRefused(PermanentError):
    """Temporal refused a Schedule as it was asked for."""


KINDS: tuple[type[ConveyorError], ...] = (
    DeploymentEnded,
    DeploymentGone,
    KubernetesUnreachable,
    KubernetesUnavailable,
    KubernetesForbidden,
    KubernetesRefused,
    RolloutFailed,
    DeletionStuck,
    InvalidImage,
    RegistryUnreachable,
    RegistryRefused,
    SourceUnreachable,
    SourceRefused,
    BuildFailed,
    BuildInterrupted,
    JobFailed,
    JobNotRunnable,
    TemporalUnavailable,
    SchedulesRefused,
)


def kind_of(err: BaseException) -> str | None:
    """The kind of failure under Temporal's wrappers (an activity's or a child
    workflow's): the `type` of the ApplicationError it carries."""
    while isinstance(err, (ActivityError, ChildWorkflowError)) and err.cause is not None:
        err = err.cause
    if isinstance(err, ConveyorError):
        return err.kind
    return err.type if isinstance(err, ApplicationError) else None


def is_kind(err: BaseException, *kinds: type[ConveyorError]) -> bool:
    """Whether `err` (an ActivityError, say) is a failure of one of `kinds`."""
    found = kind_of(err)
    return found is not None and any(found == kind.kind for kind in kinds)


# What a transient failure that is being retried is about, for the person
# waiting: its kind and the host they gave, never an internal address.
_RETRIED: dict[str, str] = {
    RegistryUnreachable.kind: "registry {image_host} unreachable",
    BuildInterrupted.kind: "the platform's registry unreachable during the build",
    SourceUnreachable.kind: "git server {source_host} unreachable",
    KubernetesUnreachable.kind: "the Kubernetes API unreachable",
    KubernetesUnavailable.kind: "the Kubernetes API unavailable",
    KubernetesForbidden.kind: "a Kubernetes permission of the worker missing (see the Temporal Web UI)",
}


def retrying(
    kind: str | None, image_host: str | None, source_host: str | None, attempt: int, next_in_seconds: float | None, gives_up_at: str | None
) -> str:
    """`retrying: registry myregistry.com unreachable (attempt 5, next in 20s, gives up at 18:25:00Z)`.
    `image_host`: the registry of an image app's `image_url` (else the
    platform's own registry is meant); `source_host`: its git server."""
    words = _RETRIED.get(kind or "", "a transient failure")
    if "{image_host}" in words and not image_host:
        words = "the platform's registry unreachable"
    what = words.format(image_host=image_host, source_host=source_host or "of the app")
    when = [f"attempt {attempt}"]
    if next_in_seconds is not None:
        when.append(f"next in {max(0, round(next_in_seconds))}s")
    if gives_up_at:
        when.append(f"gives up at {gives_up_at}")
    return f"retrying: {what} ({', '.join(when)})"
