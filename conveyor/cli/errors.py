"""The exit codes of the `conveyor` command, and the errors that carry them.

A script can tell from the code alone what went wrong (the README lists them):
whether to retry later (3), to fix its token (4), its arguments (2), or the
deployment itself (1)."""

from __future__ import annotations

from enum import IntEnum

import click


class ExitCode(IntEnum):
    OK = 0
    # A deployment ended other than active (failed, cancelled, deleted), a delete
    # failed, or a wait passed its --timeout.
    NOT_ACTIVE = 1
    # Bad arguments (Click's own code), or the API refused the request as given:
    # an unknown app, a conflict, invalid input (4xx other than 401/403).
    USAGE = 2
    # The platform is down: the API refuses connections or answers 5xx; a part of
    # the local platform is not running (`conveyor status`).
    PLATFORM_DOWN = 3
    # No token, a token the API does not know (401), or one whose role or
    # project does not allow the request (403).
    NOT_AUTHORISED = 4
    # Ctrl-C, as a shell reports a process that SIGINT ended.
    INTERRUPTED = 130


class CliError(click.ClickException):
    """Printed as `Error: <message>` on stderr; the process exits with `exit_code`."""

    exit_code = ExitCode.USAGE


class Refused(CliError):
    exit_code = ExitCode.USAGE


class NotActive(CliError):
    exit_code = ExitCode.NOT_ACTIVE


class PlatformDown(CliError):
    exit_code = ExitCode.PLATFORM_DOWN


class NotAuthorised(CliError):
    exit_code = ExitCode.NOT_AUTHORISED


class Interrupted(click.exceptions.Exit):
    """Ctrl-C: whatever was printed stays, no traceback, exit 130."""

    def __init__(self) -> None:
        super().__init__(ExitCode.INTERRUPTED)
