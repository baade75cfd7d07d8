"""The commands of an app's one-off Jobs, as the API takes them (pure): the
release command and the scheduled jobs (`cron`). Checked before anything is
written; a 422 names the field (`cron.0.schedule`) and never its value."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _argv(items: list[str]) -> list[str]:
    for item in items:
        if "\0" in item:
            raise ValueError("must not contain NUL")
    return items


Argv = Annotated[list[Annotated[str, Field(max_length=4096)]], Field(min_length=1, max_length=64), AfterValidator(_argv)]


# --- commands ----------------------------------------------------------------------


def as_argv(command: str | list[str]) -> list[str]:
    """A command as the container runs it: an argv list as given; a string
    through the image's shell, as a Procfile line runs."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return list(command)


def _shell_line(text: str) -> str:
    if "\0" in text:
        raise ValueError("must not contain NUL")
    if not text.strip():
        raise ValueError("must not be empty")
    return text


# A string (run by /bin/sh -c) or an argv list.
ShellLine = Annotated[str, Field(min_length=1, max_length=16_384), AfterValidator(_shell_line)]
CommandField = ShellLine | Argv


# --- cron entries ------------------------------------------------------------------

DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# Longest entry name: it is part of the Temporal Schedule's id and a label value.
MAX_CRON_NAME = 40
MAX_CRON_ENTRIES = 20
DEFAULT_DEADLINE_SECONDS = 3600

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)},
    ),
    ("day of week", 0, 7, {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}),
)
# The shorthands Temporal's cron parser takes besides five fields.
_SHORTHANDS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_STEP = re.compile(r"(?P<range>[^/]+)(?:/(?P<step>[0-9]{1,2}))?")


def _cron_value(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not text.isdigit() or len(text) > 2:
            raise ValueError(f"the {what} field must hold numbers {low}-{high}" + (" or names" if names else ""))
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"the {what} field must be within {low}-{high}")
    return value


def check_schedule(expression: str) -> str:
    """A standard five-field cron expression (minute hour day-of-month month
    day-of-week; `*`, lists, ranges, steps, month and weekday names) or one of
    the @-shorthands. The messages never repeat the expression."""
    if len(expression) > 200:
        raise ValueError("must be a cron expression of at most 200 characters")
    if expression.strip().lower() in _SHORTHANDS:
        return expression
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("must be a cron expression of five fields (minute hour day-of-month month day-of-week) or @daily, @hourly, …")
    for text, (what, low, high, names) in zip(fields, _FIELDS, strict=True):
        for part in text.split(","):
            match = _STEP.fullmatch(part)
            if match is None:
                raise ValueError(f"the {what} field is not a cron field")
            if match["step"] is not None and int(match["step"]) == 0:
                raise ValueError(f"the {what} field has a step of 0")
            span = match["range"]
            if span == "*":
                continue
            start, _, end = span.partition("-")
            first = _cron_value(start, low, high, names, what)
            if end and _cron_value(end, low, high, names, what) < first:
                raise ValueError(f"the {what} field has a range that ends before it starts")
    return expression


def check_timezone(name: str) -> str:
    """An IANA time zone (`UTC`, `Europe/Berlin`)."""
    if len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
        raise ValueError("must be an IANA time zone such as UTC or Europe/Berlin")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as UTC or Europe/Berlin") from None
    return name


def _cron_name(name: str) -> str:
    if len(name) > MAX_CRON_NAME or not DNS_LABEL.fullmatch(name):
        raise ValueError(f"must be a DNS label: lowercase letters, digits and dashes, starting with a letter, at most {MAX_CRON_NAME} characters")
    return name


def _unique_names(entries: list[CronEntry]) -> list[CronEntry]:
    names = [entry.name for entry in entries]
    for position, name in enumerate(names):
        if name in names[:position]:
            raise ValueError(f"entry #{position} has the name of an earlier entry: names must be unique")
    return entries


class CronEntry(BaseModel):
    """A scheduled job: `command` run as a Job from the app's running image,
    with its env, on `schedule` in `timezone`, at most `deadline_seconds` long."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_cron_name)] = Field(description="A DNS label, unique within the app")
    schedule: Annotated[str, AfterValidator(check_schedule)] = Field(description="A cron expression: `0 3 * * *`, or @daily, @hourly, …")
    command: CommandField = Field(description="An argv list, or a string run by /bin/sh -c")
    timezone: Annotated[str, AfterValidator(check_timezone)] = Field(default="UTC", description="The IANA time zone the schedule is read in")
    deadline_seconds: int = Field(
        default=DEFAULT_DEADLINE_SECONDS, ge=10, le=86_400, description="How long a run may take before it is stopped and failed"
    )

    @property
    def argv(self) -> list[str]:
        return as_argv(self.command)


CronEntries = Annotated[list[CronEntry], Field(max_length=MAX_CRON_ENTRIES), AfterValidator(_unique_names)]
