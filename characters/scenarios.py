"""Scenarios: the original worker's types (casual, romantic, adventure, intimate) as data templates in
`characters/scenarios.yaml`, woven with a character's details. Read and checked once, at import."""

from __future__ import annotations

from importlib.resources import files
from string import Template
from typing import TYPE_CHECKING

import yaml
from pydantic import TypeAdapter, ValidationError

if TYPE_CHECKING:
    from characters.profile import Character

# The character's text a template line may name as ${field}.
TEMPLATE_FIELDS = ("personality", "appearance", "background", "speaking_style", "scenario")


class BadScenarioFile(ValueError):
    pass


def templates_from_yaml(text: str, source: str = "characters/scenarios.yaml") -> dict[str, list[Template]]:
    try:
        raw = TypeAdapter(dict[str, list[str]]).validate_python(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as error:
        raise BadScenarioFile(f"{source}: {error}") from None
    templates: dict[str, list[Template]] = {}
    for name, lines in raw.items():
        parsed = [Template(line) for line in lines]
        for number, template in enumerate(parsed):
            if not template.is_valid():
                raise BadScenarioFile(f"{source}: {name}.{number}: a '$' that is not ${{field}}")
            unknown = set(template.get_identifiers()) - set(TEMPLATE_FIELDS)
            if unknown:
                raise BadScenarioFile(
                    f"{source}: {name}.{number}: unknown field {sorted(unknown)[0]!r}; "
                    f"known: {', '.join(TEMPLATE_FIELDS)}"
                )
        templates[name.strip().lower()] = parsed
    return templates


_TEMPLATES = templates_from_yaml(files("characters").joinpath("scenarios.yaml").read_text(encoding="utf-8"))
SCENARIO_TYPES: tuple[str, ...] = tuple(_TEMPLATES)


def _woven(templates: list[Template], character: Character) -> str:
    """The template's lines with the character's text; a line naming an empty field is left out."""
    values = {field: getattr(character, field).strip() for field in TEMPLATE_FIELDS}
    return "\n".join(
        line.substitute(values) for line in templates if all(values[field] for field in line.get_identifiers())
    )


def scenario_text(character: Character, scenario: str | None) -> str:
    """The scene of a job: the character's own scenario when the job gives none; a scenario type's template
    woven with the character when the job names a type (any case); else the job's free text as given."""
    if scenario is None or not scenario.strip():
        return character.scenario
    templates = _TEMPLATES.get(scenario.strip().lower())
    return _woven(templates, character) if templates else scenario
