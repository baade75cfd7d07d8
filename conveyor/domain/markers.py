"""Markers that make a simulated pod fail (or a Job end) the way a real one would.

KWOK plays the kubelets, so no container ever runs. An image whose *tag* ends
with one of these markers gets the matching failure from the KWOK stages in
`conveyor/stack/kwok/`; every other image becomes Running and Ready. The tag
may be followed by a digest (`repo:v1-crashloop@sha256:...`): Conveyor deploys
`tag@digest` references so the marker survives digest pinning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FailureMarker:
    suffix: str
    # The waiting reason the container status reports; None when the container
    # runs but never passes readiness.
    reason: str | None
    description: str


CRASHLOOP = FailureMarker("-crashloop", "CrashLoopBackOff", "the container exits with an error and is restarted with back-off")
PULLFAIL = FailureMarker("-pullfail", "ImagePullBackOff", "the image cannot be pulled")
NEVERREADY = FailureMarker("-neverready", None, "the container runs but never becomes ready")

ALL = (CRASHLOOP, PULLFAIL, NEVERREADY)


def tag_regex(suffixes: list[str]) -> str:
    """A regex matching image references whose tag ends with one of `suffixes`.

    The tag is the part after the last ':' that has no '/' after it, optionally
    followed by '@sha256:<hex>'. Shared by the KWOK stages and `marker_of`.
    """
    alternatives = "|".join(re.escape(s.lstrip("-")) for s in suffixes)
    return f":[^/:@]*-({alternatives})(@sha256:[0-9a-f]+)?$"


def marker_of(image: str) -> FailureMarker | None:
    for marker in ALL:
        if re.search(tag_regex([marker.suffix]), image):
            return marker
    return None


# --- Jobs (release command, scheduled jobs) --------------------------------------
#
# A Job runs the app's own image (the release's), so its outcome is marked
# in the command instead: a word in the container's command (joined by
# spaces). Every other Job pod succeeds (exit 0) once it has run for
# CONVEYOR_POD_JOB_DELAY_MS.


@dataclass(frozen=True)
class JobMarker:
    word: str
    description: str


JOB_FAIL = JobMarker("kwok-job-fail", "the Job's container exits with status 1")
JOB_SLOW = JobMarker("kwok-job-slow", "the Job's container runs for CONVEYOR_POD_JOB_SLOW_DELAY_MS, then succeeds")

JOB_MARKERS = (JOB_FAIL, JOB_SLOW)


def command_regex(markers: tuple[JobMarker, ...]) -> str:
    """A regex matching a command line (argv joined by spaces) holding one of the markers as a word."""
    alternatives = "|".join(re.escape(m.word) for m in markers)
    return f"(^|[^a-z0-9-])({alternatives})([^a-z0-9-]|$)"


def job_marker_of(argv: list[str]) -> JobMarker | None:
    line = " ".join(argv)
    for marker in JOB_MARKERS:
        if re.search(command_regex((marker,)), line):
            return marker
    return None
