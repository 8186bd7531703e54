"""Scenario types as data templates woven with the character; free-text scenarios pass through."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from characters import SCENARIO_TYPES, Character, scenario_text
from characters.scenarios import BadScenarioFile, templates_from_yaml

FULL = Character(
    name="Orrin",
    personality="PERSONALITY",
    appearance="APPEARANCE",
    background="BACKGROUND",
    speaking_style="SPEAKING-STYLE",
    scenario="OWN-SETTING",
)
# The detail each type turns on, besides the character's own setting.
DETAIL = {"casual": "SPEAKING-STYLE", "romantic": "PERSONALITY", "adventure": "BACKGROUND", "intimate": "APPEARANCE"}


def test_the_original_types_are_all_there() -> None:
    assert set(SCENARIO_TYPES) == {"casual", "romantic", "adventure", "intimate"}


@pytest.mark.parametrize("kind", sorted(DETAIL))
def test_each_type_weaves_in_the_characters_details(kind: str) -> None:
    text = scenario_text(FULL, kind)
    assert kind in text.lower() and "OWN-SETTING" in text and DETAIL[kind] in text
    assert "{{char}}" in text and "{{user}}" in text  # macros are filled with the rest of the prompt
    assert "$" not in text


def test_a_line_naming_an_empty_field_is_left_out() -> None:
    text = scenario_text(Character(name="Orrin"), "adventure")
    assert text.count("\n") == 0 and "It begins" not in text and text.startswith("An adventure with {{char}}")


def test_the_type_is_matched_in_any_case() -> None:
    assert scenario_text(FULL, "  Romantic ") == scenario_text(FULL, "romantic")


def test_free_text_is_the_scene_as_given_and_no_scenario_is_the_characters_own() -> None:
    assert scenario_text(FULL, "A duel at dawn, {{user}} late.") == "A duel at dawn, {{user}} late."
    assert scenario_text(FULL, None) == scenario_text(FULL, "  ") == "OWN-SETTING"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("casual:\n  - 'Hi ${mood}'\n", "casual.0: unknown field 'mood'"),
        ("casual:\n  - 'ok'\n  - 'costs $5'\n", "casual.1: a '$' that is not ${field}"),
        ("- just a list\n", "1 validation error"),
        ("casual: [unclosed\n", "while parsing"),
    ],
)
def test_a_bad_template_file_names_the_type_and_line(text: str, says: str) -> None:
    with pytest.raises(BadScenarioFile) as error:
        templates_from_yaml(text)
    assert str(error.value).startswith("characters/scenarios.yaml: ")
    assert says in str(error.value)


def test_a_profiles_scenarios_are_known_types() -> None:
    assert Character(name="Orrin", scenarios=[" Casual", "INTIMATE"]).scenarios == ["casual", "intimate"]
    with pytest.raises(ValidationError, match="scenarios\n.*unknown scenario type 'picnic'"):
        Character(name="Orrin", scenarios=["picnic"])
