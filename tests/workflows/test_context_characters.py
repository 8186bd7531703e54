"""What of a character reaches the system message: its details, a scenario type woven with it, its nickname."""

from characters import Character, bundled_character
from workflows.context import build_context, estimate_tokens
from workflows.models import ChatJob


def system_text(character: Character, **job: object) -> str:
    values = {"job_id": "j1", "messages": [{"role": "user", "content": "Hello"}], "user_name": "Tam", **job}
    job = ChatJob.model_validate({**values, "character": character})
    return build_context(job, character, budget=100_000, count=estimate_tokens).messages[0].content


def test_the_original_workers_fields_reach_the_prompt() -> None:
    mira = bundled_character("Mira")
    system = system_text(mira)
    for text in (mira.appearance, mira.background, mira.speaking_style):
        assert text in system


def test_a_scenario_type_is_woven_with_the_character_and_its_macros_filled() -> None:
    system = system_text(bundled_character("Mira"), scenario="Adventure")
    assert "An adventure with Mira and Tam" in system
    assert "It begins: A stormy night at The Drowned Lantern" in system and "{{" not in system


def test_char_is_the_nickname_in_the_prompt() -> None:
    system = system_text(Character(name="Seraphina", nickname="Sera", description="{{char}} guards the glade."))
    assert "You are Sera " in system and "Sera guards the glade." in system
