import pytest

from characters import Character, UnknownCharacter, bundled_character, bundled_characters, fill_macros
from characters.registry import BadProfileFile, _profile_from_file


def test_bundled_profiles_load_and_validate() -> None:
    profiles = bundled_characters()
    assert "mira" in profiles
    mira = bundled_character(" MIRA ")
    assert isinstance(mira, Character) and mira.name == "Mira" and mira.personality


def test_unknown_character_lists_the_known_ones() -> None:
    with pytest.raises(UnknownCharacter, match="Mira"):
        bundled_character("Nobody")


def test_a_bad_profile_file_names_itself_and_the_field() -> None:
    with pytest.raises(BadProfileFile, match=r"broken\.yaml: name"):
        _profile_from_file("broken.yaml", "description: no name here\n")
    with pytest.raises(BadProfileFile, match=r"broken\.yaml: not valid YAML"):
        _profile_from_file("broken.yaml", "name: [unclosed\n")


def test_macros_are_filled_case_insensitively() -> None:
    text = "{{char}} greets {{User}}. <BOT> winks at <user>. {{CHAR}}"
    assert fill_macros(text, char="Mira", user="Tam") == "Mira greets Tam. Mira winks at Tam. Mira"
    assert fill_macros("{{user}}", char="x", user=r"A\1") == r"A\1"
