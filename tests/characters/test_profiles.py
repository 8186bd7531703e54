import pytest
from pydantic import ValidationError

from characters import Character, UnknownCharacter, bundled_character, bundled_characters, parse_card
from characters.base import MAX_LISTED_PROBLEMS, listed
from characters.registry import BadProfileFile, _profile_from_file, _profiles_by_name, profile_yaml
from tests.characters.cardfiles import full_v2_data, json_card, v2
from workflows.models import ChatJob


def test_bundled_profiles_load_and_validate() -> None:
    profiles = bundled_characters()
    assert len(profiles) >= 4 and "mira" in profiles
    mira = bundled_character(" MIRA ")
    assert isinstance(mira, Character) and mira.name == "Mira" and mira.personality
    for character in profiles.values():
        # What `characters list` shows, what a chat greets with, and the original worker's fields.
        assert character.creator_notes and character.first_mes and character.alternate_greetings
        assert character.appearance and character.background and character.speaking_style and character.scenarios


def test_unknown_character_lists_the_known_ones() -> None:
    with pytest.raises(UnknownCharacter, match="Mira"):
        bundled_character("Nobody")


def test_a_bad_profile_file_names_itself_and_the_field() -> None:
    with pytest.raises(BadProfileFile, match=r"broken\.yaml: name"):
        _profile_from_file("broken.yaml", "description: no name here\n")
    with pytest.raises(BadProfileFile, match=r"broken\.yaml: not valid YAML"):
        _profile_from_file("broken.yaml", "name: [unclosed\n")
    with pytest.raises(BadProfileFile, match=r"broken\.yaml: scenarios: .*unknown scenario type 'picnic'"):
        _profile_from_file("broken.yaml", "name: X\nscenarios: [casual, picnic]\n")
    with pytest.raises(BadProfileFile, match=r"broken\.yaml: character_book\.entries\.0\.keys: Input should be"):
        _profile_from_file("broken.yaml", "name: X\ncharacter_book: {entries: [{keys: 3}]}\n")
    with pytest.raises(BadProfileFile, match=r"broken\.yaml: apperance: Extra inputs are not permitted"):
        _profile_from_file("broken.yaml", "name: X\napperance: typo\n")


def test_two_files_with_one_name_are_refused_naming_both() -> None:
    with pytest.raises(BadProfileFile, match=r"b\.yaml: name: 'MIRA' is taken by a\.yaml"):
        _profiles_by_name({"a.yaml": "name: Mira\n", "b.yaml": "name: MIRA\n"})


def test_a_name_alone_is_a_whole_profile() -> None:
    orrin = Character.model_validate({"name": "  Orrin "})
    assert orrin.name == "Orrin" and orrin.char_name == "Orrin" and orrin.description == ""
    assert orrin.character_book is None and orrin.extensions == {} and orrin.tags == []
    with pytest.raises(ValidationError, match="name"):
        Character.model_validate({"name": "   "})


def test_a_full_profile_round_trips_as_json_and_inside_a_job() -> None:
    seraphina_like = parse_card(json_card(v2(full_v2_data()))).character.model_copy(update={"nickname": "Orr"})
    assert Character.model_validate_json(seraphina_like.model_dump_json()) == seraphina_like
    job = ChatJob(job_id="j1", messages=[{"role": "user", "content": "hi"}], character=seraphina_like)
    assert ChatJob.model_validate_json(job.model_dump_json()).character == seraphina_like


@pytest.mark.parametrize("name", sorted(bundled_characters()))
def test_the_yaml_of_a_profile_reads_back_as_the_same_profile(name: str) -> None:
    character = bundled_character(name)
    assert _profile_from_file("x.yaml", profile_yaml(character)) == character


def test_the_yaml_of_a_card_with_awkward_text_reads_back_the_same() -> None:
    character = parse_card(json_card(v2(full_v2_data()))).character.model_copy(
        update={"description": "trailing space \nand: colons\n- dashes\n\ttabs ", "tags": ["", "yes", "null"]}
    )
    assert _profile_from_file("x.yaml", profile_yaml(character)) == character


def test_listed_shows_the_first_problems_and_counts_the_rest() -> None:
    assert listed(["a", "b"]) == "a; b"
    many = [f"p{n}" for n in range(MAX_LISTED_PROBLEMS + 3)]
    assert listed(many) == "; ".join(many[:MAX_LISTED_PROBLEMS]) + "; and 3 more"
