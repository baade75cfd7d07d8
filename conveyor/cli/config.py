"""The config file of the API client commands: named contexts, as kubeconfig has.

A context is an API URL and a token; `current-context` names the one commands
use unless told otherwise. `conveyor login` writes the file (mode 0600, in a
directory of mode 0700), `conveyor config use-context` switches:

    {
      "current-context": "prod",
      "contexts": {
        "local": {"api-url": "http://127.0.0.1:8000", "token": "…"},
        "prod": {"api-url": "https://conveyor.example.com", "token": "…"}
      }
    }

Where: $CONVEYOR_CONFIG, else $XDG_CONFIG_HOME/conveyor/config.json, else
~/.config/conveyor/config.json. A file of the earlier shape,
{"url": …, "token": …}, reads as one context named `default`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.cli.errors import CliError

DEFAULT_CONTEXT = "default"


def config_path() -> Path:
    if explicit := os.environ.get("CONVEYOR_CONFIG"):
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "conveyor" / "config.json"


@dataclass(frozen=True)
class Context:
    name: str
    api_url: str
    token: str | None = None


@dataclass
class Config:
    path: Path
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)

    def context(self, name: str) -> Context:
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(sorted(self.contexts)) or "none yet: `conveyor login --context NAME` adds one"
            raise CliError(f"no context named {name!r} in {self.path} (contexts: {known})") from None

    @property
    def current_context(self) -> Context | None:
        return self.contexts.get(self.current) if self.current else None


def load(path: Path | None = None) -> Config:
    path = path or config_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Config(path)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CliError(f"the config file {path} is not a JSON object")
    if "contexts" not in raw and "url" in raw:  # the shape before contexts
        return Config(path, DEFAULT_CONTEXT, {DEFAULT_CONTEXT: Context(DEFAULT_CONTEXT, raw["url"], raw.get("token"))})
    contexts = {
        name: Context(name, str(entry.get("api-url", "")), entry.get("token"))
        for name, entry in (raw.get("contexts") or {}).items()
        if isinstance(entry, dict)
    }
    return Config(path, raw.get("current-context"), contexts)


def save(config: Config) -> None:
    """Write the whole file at once (a reader never sees half of it), readable by its owner only."""
    document = {
        "current-context": config.current,
        "contexts": {
            name: {"api-url": ctx.api_url, **({"token": ctx.token} if ctx.token else {})}
            for name, ctx in sorted(config.contexts.items())
        },
    }
    folder = config.path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".config-", suffix=".json")  # created 0600
    try:
        with os.fdopen(descriptor, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, config.path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
