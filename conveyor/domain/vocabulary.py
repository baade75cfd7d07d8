"""The words Conveyor's records, payloads and workflows share: statuses and
operation kinds. They are `StrEnum`s, so the database and the payloads keep
the plain strings (`"active"`, `"deploy"`) that earlier histories hold."""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    QUEUED = "queued"
    PENDING = "pending"
    BUILDING = "building"
    DEPLOYING = "deploying"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({DeploymentStatus.ACTIVE, DeploymentStatus.SUPERSEDED, DeploymentStatus.FAILED, DeploymentStatus.CANCELLED})
IN_FLIGHT = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.PENDING, DeploymentStatus.BUILDING, DeploymentStatus.DEPLOYING})
# Waiting for their turn on the app's lane; cancelling them needs no workflow.
NOT_STARTED = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.PENDING})
# Rolled out at some point: what a revert may go back to.
ONCE_RAN = frozenset({DeploymentStatus.ACTIVE, DeploymentStatus.SUPERSEDED})


class OperationKind(StrEnum):
    DEPLOY = "deploy"
    UPDATE = "update"
    RESTART = "restart"
    ROLLBACK = "rollback"
    SCALE = "scale"
    DELETE = "delete"


# The kinds that are a release: a new deployment record and a rollout.
RELEASES = frozenset({OperationKind.DEPLOY, OperationKind.UPDATE, OperationKind.RESTART, OperationKind.ROLLBACK})


class AppStatus(StrEnum):
    CREATED = "created"
    DEPLOYING = "deploying"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"
    DELETING = "deleting"
    DELETE_FAILED = "delete_failed"


class SourceType(StrEnum):
    """Where an app's image comes from: a registry, a git repository, or uploaded tarballs."""

    IMAGE = "image"
    GIT = "git"
    UPLOAD = "upload"


# The source types that are built by the worker.
BUILT = frozenset({SourceType.GIT, SourceType.UPLOAD})


class BuildStatus(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REUSED = "reused"


BUILD_FINISHED = frozenset({BuildStatus.SUCCEEDED, BuildStatus.FAILED, BuildStatus.REUSED})
