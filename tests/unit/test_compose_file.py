"""docker-compose.yml: valid against the Compose specification's JSON schema, and
everything it names exists (the Conveyor image and its commands, Settings)."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from conveyor.cli import operator
from conveyor.cli.main import cli
from conveyor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
# The image `make image` builds from the Containerfile.
CONVEYOR_REPOSITORY = "conveyor/conveyor"


def resolve(argv: list[str]) -> click.Command:
    """The command that `conveyor <argv>` runs, as the root group finds it."""
    command: click.Command | None = cli
    ctx = click.Context(cli)
    for word in argv:
        assert isinstance(command, click.Group), f"{word!r} is an argument of {command.name}, not a command"
        command = command.get_command(ctx, word)
        assert command is not None, f"no command {word!r} in {argv}"
    assert not isinstance(command, click.Group), f"{argv} names a group, not a command"
    return command


def validate(document: dict) -> None:
    # The file names its draft by a URI jsonschema does not know; it is 2019-09.
    jsonschema.Draft201909Validator(SCHEMA).validate(document)


def conveyor_services() -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if CONVEYOR_REPOSITORY in s["image"]}


def test_valid_against_the_compose_schema():
    validate(COMPOSE)


def test_the_schema_refuses_what_compose_would():
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    with pytest.raises(jsonschema.ValidationError, match="service_finished"):
        validate(broken)


def test_every_part_is_there_with_health_checks_and_conditions():
    assert set(SERVICES) == {"postgres", "temporal", "temporal-ui", "registry", "migrate", "api", "worker"}
    for name in ("postgres", "temporal", "registry", "api"):
        assert SERVICES[name]["healthcheck"]["test"], name
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert SERVICES[name]["depends_on"]["temporal"] == {"condition": "service_healthy"}
    assert SERVICES["temporal"]["environment"]["DB"] == "postgres12"
    assert SERVICES["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgres"
    assert set(COMPOSE["volumes"]) == {"postgres-data", "registry-data", "conveyor-home"}


def test_images_are_the_conveyor_image_or_pinned():
    assert set(conveyor_services()) == {"migrate", "api", "worker"}
    assert CONVEYOR_REPOSITORY in (ROOT / "Makefile").read_text()
    for name, service in SERVICES.items():
        if name not in conveyor_services():
            assert re.fullmatch(r"[a-z0-9/_.-]+:\d[\w.-]*", service["image"]), f"{name}: pin a version, not {service['image']}"


def test_commands_are_the_images_entrypoints():
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    commands = {name: s["command"] for name, s in conveyor_services().items()}
    assert commands["migrate"] == ["conveyor", "db", "upgrade"]
    assert scripts["conveyor"] == "conveyor.cli.main:main"
    assert resolve(commands["migrate"][1:]) is operator.db_upgrade
    assert commands["api"][:3] == ["uvicorn", "--factory", "api.main:create_app"]
    assert "uvicorn" in scripts
    assert commands["worker"] == ["python", "-m", "worker"]
    import api.main
    import worker

    assert callable(api.main.create_app) and callable(worker.run)


def test_every_conveyor_variable_is_a_setting():
    fields = {f"CONVEYOR_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"\b(CONVEYOR_[A-Z0-9_]+)", COMPOSE_TEXT))
    assert named, "the compose file configures Conveyor through CONVEYOR_* variables"
    assert named <= fields, f"not in Settings: {sorted(named - fields)}"
