"""docker-compose.yml as `docker compose` would see it with no .env file: YAML parsed, `${VAR:-default}`
replaced by its default (or by an override, as a shell variable would), `$$` by `$`. Test helpers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_REFERENCE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?P<default>:?-[^}]*)?\}|\$(?P<bare>\w+)")


def interpolated(text: str, overrides: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match["name"] or match["bare"]
        if name in overrides:
            return overrides[name]
        if match["default"] is None:
            raise AssertionError(f"{match[0]} has no default: `docker compose up` would need it set")
        return match["default"].split("-", 1)[1]

    return _REFERENCE.sub(value, text)


def _resolved(node: Any, overrides: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolated(node, overrides)
    if isinstance(node, list):
        return [_resolved(item, overrides) for item in node]
    if isinstance(node, dict):
        return {key: _resolved(item, overrides) for key, item in node.items()}
    return node


def load_compose(**overrides: str) -> dict[str, Any]:
    """The compose model with every variable at its default, or at `overrides[name]`."""
    return _resolved(yaml.safe_load(COMPOSE_FILE.read_text()), overrides)


def services(**overrides: str) -> dict[str, dict[str, Any]]:
    return load_compose(**overrides)["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, list or mapping form, as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → repo path, for the service's `./…` bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {name.strip(): value for name, value in pairs}
