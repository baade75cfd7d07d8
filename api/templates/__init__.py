"""The one-click app catalogue: one YAML data file per template in this folder."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from conveyor.domain.workload import Probe, Process, ProcessName, Resources

FOLDER = Path(__file__).parent


class Template(BaseModel):
    id: str
    name: str
    description: str
    image_url: str
    port: int = Field(ge=1, le=65535)
    replicas: int = Field(default=1, ge=0)
    env: dict[str, str] = Field(default_factory=dict)
    # Processes besides web (conveyor/domain/workload.py), as an app takes them.
    processes: dict[ProcessName, Process] | None = None
    resources: Resources | None = None
    healthcheck: Probe | None = None


@lru_cache
def catalogue() -> dict[str, Template]:
    templates = [Template(**yaml.safe_load(path.read_text())) for path in sorted(FOLDER.glob("*.yaml"))]
    return {t.id: t for t in templates}
