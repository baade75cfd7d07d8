"""Image tag markers that make a simulated pod fail the way a real one would.

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
