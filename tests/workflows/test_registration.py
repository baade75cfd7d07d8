"""The worker registers every activity the workflows call: the fakes stand
for each real one under its name, so the two lists must name the same set
(an activity missing on the worker fails only at run time, as NotFoundError)."""

from __future__ import annotations

from temporalio import activity

from conveyor.settings import Settings
from tests.workflows.fakes import Fakes
from worker import activities


def names(functions) -> set[str]:
    return {activity._Definition.must_from_callable(f).name for f in functions}


def test_the_worker_registers_every_activity_the_fakes_stand_for():
    assert names(activities(Settings())) == names(Fakes().activities())
