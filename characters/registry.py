"""Bundled profiles: YAML files under `characters/profiles/`, validated when first read."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml
from pydantic import ValidationError

from characters.base import describe_validation_error
from characters.profile import Character

# Who speaks in a job without a character: `{{char}}` in prompts, the reply's speaker, the validator's name.
ASSISTANT_NAME = "Assistant"


class _ProfileDumper(yaml.SafeDumper):
    pass


# Multi-line text as a `|` block, as a person writes a profile (PyYAML quotes it where a block cannot hold it).
_ProfileDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def profile_yaml(character: Character) -> str:
    """The profile as a bundled YAML file holds it: fields left at their defaults are left out."""
    data = character.model_dump(mode="json", exclude_defaults=True)
    return yaml.dump(data, Dumper=_ProfileDumper, sort_keys=False, allow_unicode=True, width=110)


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
        raise BadProfileFile(f"characters/profiles/{name}: {describe_validation_error(error)}") from None


def _profiles_by_name(texts: dict[str, str]) -> dict[str, Character]:
    """Profiles keyed by lower-cased name, from {file name: YAML text}; two files with one name are an error."""
    profiles: dict[str, Character] = {}
    file_of: dict[str, str] = {}
    for file_name, text in sorted(texts.items()):
        character = _profile_from_file(file_name, text)
        key = character.name.lower()
        if key in profiles:
            raise BadProfileFile(
                f"characters/profiles/{file_name}: name: {character.name!r} is taken by {file_of[key]}"
            )
        profiles[key], file_of[key] = character, file_name
    return profiles


@cache
def bundled_characters() -> dict[str, Character]:
    """Every bundled profile, keyed by lower-cased name."""
    folder = files("characters").joinpath("profiles")
    return _profiles_by_name(
        {entry.name: entry.read_text(encoding="utf-8") for entry in folder.iterdir() if entry.name.endswith(".yaml")}
    )


def bundled_character(name: str) -> Character:
    try:
        return bundled_characters()[name.strip().lower()]
    except KeyError:
        known = ", ".join(c.name for c in bundled_characters().values())
        raise UnknownCharacter(f"unknown character {name!r}; bundled characters: {known}") from None


def resolve(ref: str | Character | None) -> Character | None:
    """A job's character: a bundled profile by name (any case), an inline profile as it is, or none.
    Raises UnknownCharacter naming the bundled ones."""
    return bundled_character(ref) if isinstance(ref, str) else ref
