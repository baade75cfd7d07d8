"""What the API client commands print: `-o table` (the default) for people,
`-o json` for programs.

With `-o json`, stdout holds exactly one JSON document (the API's own shape:
a list, an app, a deployment), so `conveyor -o json apps list | jq` works;
progress lines meant for people go to stderr instead."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

FORMATS = ("table", "json")


class Output:
    def __init__(self, format: str = "table") -> None:
        self.format = format

    @property
    def json(self) -> bool:
        return self.format == "json"

    def say(self, message: str) -> None:
        """A line for the person at the terminal (stderr under -o json)."""
        click.echo(message, err=self.json)

    def document(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """`data` as JSON, or `human()` for a table (the JSON when there is none)."""
        if self.json or human is None:
            click.echo(json.dumps(data, indent=2))
        else:
            human()

    def rows(self, data: Sequence[Any], header: Sequence[str], row: Callable[[Any], Sequence[Any]], empty: str = "") -> None:
        """A list: JSON as the API gave it, or a table of one `row(item)` per item."""
        if self.json:
            click.echo(json.dumps(list(data), indent=2))
        elif not data and empty:
            click.echo(empty, err=True)
        else:
            table([row(item) for item in data], header)


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [[_cell(c) for c in header], *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """`key: value` lines, aligned."""
    pairs = [(key, _cell(value)) for key, value in pairs]
    width = max((len(key) for key, _ in pairs), default=0) + 1
    for key, value in pairs:
        click.echo(f"{key + ':':<{width}} {value}".rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
