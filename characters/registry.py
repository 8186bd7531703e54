"""Bundled profiles: YAML files under `characters/profiles/`, validated when first read."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml
from pydantic import ValidationError

from characters.profile import Character


class UnknownCharacter(LookupError):
    pass


class BadProfileFile(ValueError):
    pass


def _profile_from_file(name: str, text: str) -> Character:
    try:
        data = yaml.safe_load(text)
        return Character.model_validate(data)
    except yaml.YAMLError as error:
        raise BadProfileFile(f"characters/profiles/{name}: not valid YAML: {error}") from None
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'profile'}: {e['msg']}" for e in error.errors())
        raise BadProfileFile(f"characters/profiles/{name}: {fields}") from None


@cache
def bundled_characters() -> dict[str, Character]:
    """Every bundled profile, keyed by lower-cased name."""
    profiles: dict[str, Character] = {}
    for entry in sorted(files("characters").joinpath("profiles").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            character = _profile_from_file(entry.name, entry.read_text(encoding="utf-8"))
            profiles[character.name.lower()] = character
    return profiles


def bundled_character(name: str) -> Character:
    try:
        return bundled_characters()[name.strip().lower()]
    except KeyError:
        known = ", ".join(c.name for c in bundled_characters().values())
        raise UnknownCharacter(f"unknown character {name!r}; bundled characters: {known}") from None
