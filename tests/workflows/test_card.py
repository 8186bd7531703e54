"""chat_character's pure parts (workflows/card.py): the schema, the prompt within its budget, reading the model's
output, the checks, and the card made of it reading back through the project's own card import. No servers."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from characters import Character, bundled_character, describe_validation_error, export_card, parse_card
from characters.cards import chunk_bytes, png_text_chunks
from tests.characters.cardfiles import REAL_CARDS
from tests.helpers import job
from workflows.card import (
    CARD_REASONS,
    card_prompt,
    card_schema,
    card_texts,
    character_spoke,
    reply_object,
    starting_profile,
    validate_card,
)
from workflows.context import ContextTooLarge, estimate_tokens
from workflows.models import CardCheck, CardVerdict, ChatJob, JobType
from workflows.policy import Policy

CONVERSATION = [
    {"role": "user", "content": "*shakes the rain off his coat* Evening, Mira. Is there a room free tonight?"},
    {
        "role": "assistant",
        "content": '"One room left, under the eaves. Two silver, and you mop your own puddles, Tam."',
    },
    {"role": "user", "content": "*sets two coins on the counter* I'll take it. Has anyone asked after me?"},
    {"role": "assistant", "content": '*leans in* "A tall man in a grey cloak. Too clean for a sailor, love."'},
]
WRITTEN = {
    "description": "Mira keeps the Drowned Lantern, a harbour tavern; scarred eyebrow, sleeves rolled up.",
    "personality": "teasing, watchful, loyal, blunt",
    "scenario": "A rainy night; Tam takes the last room and asks who came looking for him.",
    "first_mes": 'Mira: *wipes the bar* "Shut the door, Tam, the rain drinks my profits."',
    "example_dialogue": [{"user": "Any news?", "char": 'Mira: "News costs a drink, love."'}],
}


def card_job(**overrides: object) -> ChatJob:
    return job(**{"job_type": JobType.character, "messages": CONVERSATION, **overrides})


def checked(
    written: object,
    profile: Character | None = None,
    finish: str = "stop",
    policy: Policy | None = None,
    character_spoke: bool = True,
) -> CardVerdict:
    reply = written if isinstance(written, str) else json.dumps(written)
    check = CardCheck(
        reply=reply,
        finish_reason=finish,
        profile=profile or Character(name="Mira"),
        user_name="Tam",
        character_spoke=character_spoke,
    )
    return validate_card(check, policy)


def test_the_schema_asks_for_every_field_and_nothing_else() -> None:
    schema = card_schema(700)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(WRITTEN, schema)
    for field in WRITTEN:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({k: v for k, v in WRITTEN.items() if k != field}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**WRITTEN, "name": "Someone else"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**WRITTEN, "description": "x" * 501}, schema)


@pytest.mark.parametrize("max_tokens", [60, 250, 700, 2048])
def test_the_longest_card_the_schema_allows_fits_its_tokens_at_three_characters_each(max_tokens: int) -> None:
    schema = card_schema(max_tokens)["properties"]
    exchange = schema["example_dialogue"]["items"]["properties"]
    longest = sum(schema[field]["maxLength"] for field in ("description", "personality", "scenario", "first_mes"))
    longest += schema["example_dialogue"]["maxItems"] * sum(line["maxLength"] for line in exchange.values())
    assert longest <= max(max_tokens - 40, 0) * 3 or max_tokens < 100
    assert all(schema[f]["maxLength"] >= schema[f]["minLength"] for f in ("description", "personality", "first_mes"))


def test_a_whole_card_is_valid_and_reads_back_through_the_card_import() -> None:
    verdict = checked(WRITTEN)
    assert verdict.valid and verdict.reasons == []
    assert verdict.card["spec"] == "chara_card_v3" and verdict.card["spec_version"] == "3.0"
    data = verdict.card["data"]
    assert data["name"] == "Mira"
    # The user's name becomes the macro; a spoken line's speaker label is dropped.
    assert data["first_mes"] == '*wipes the bar* "Shut the door, {{user}}, the rain drinks my profits."'
    assert data["mes_example"] == '<START>\n{{user}}: Any news?\n{{char}}: "News costs a drink, love."'
    assert data["personality"] == WRITTEN["personality"]
    imported = parse_card(json.dumps(verdict.card).encode())
    assert imported.spec == "v3" and imported.character.first_mes == data["first_mes"]
    png = parse_card(export_card(imported.character, "v3-png"))
    assert png.spec == "v3" and png.character == imported.character
    assert verdict.cleaned.startswith("Name: Mira\nDescription: Mira keeps")
    assert "Example dialogue:\n<START>" in verdict.cleaned


def test_prose_stopped_mid_sentence_keeps_its_full_sentences() -> None:
    cut = {**WRITTEN, "description": "Mira keeps a tavern. She loves to talk about", "personality": "loyal, sly and"}
    data = checked(cut).card["data"]
    assert data["description"] == "Mira keeps a tavern." and data["personality"] == "loyal, sly and"
    assert checked({**WRITTEN, "scenario": "a rainy night at the bar"}).card["data"]["scenario"] == (
        "a rainy night at the bar"
    )


def test_the_starting_profile_keeps_what_the_model_does_not_write() -> None:
    mira = bundled_character("Mira")
    verdict = checked(WRITTEN, mira)
    data = verdict.card["data"]
    assert data["tags"] == mira.tags and data["alternate_greetings"] == mira.alternate_greetings
    assert data["extensions"]["chat_worker"]["appearance"] == mira.appearance
    assert data["description"] == WRITTEN["description"]


def test_a_field_copied_from_the_profile_is_rejected_only_when_the_chat_says_more() -> None:
    mira = bundled_character("Mira")
    copied = {**WRITTEN, "description": "  " + mira.description.upper() + " "}
    assert checked(copied, mira).reasons == ["copied_profile"]
    assert checked(copied, mira, character_spoke=False).valid


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ({k: v for k, v in WRITTEN.items() if k != "scenario"}, "missing_fields"),
        ({**WRITTEN, "personality": 7}, "missing_fields"),
        ({**WRITTEN, "example_dialogue": "none"}, "missing_fields"),
        ({**WRITTEN, "first_mes": "   "}, "empty_field"),
        ({**WRITTEN, "personality": "Personality."}, "placeholder"),
        ({**WRITTEN, "example_dialogue": [{"user": "Tam", "char": "Hello there, love."}]}, "placeholder"),
        ({**WRITTEN, "scenario": " mira "}, "placeholder"),
        ({**WRITTEN, "example_dialogue": [{"user": "hi"}]}, "empty_field"),
        ({**WRITTEN, "description": "{{Mira.first_mes}} keeps a tavern by the harbour."}, "stray_macro"),
        ({**WRITTEN, "personality": "She pours the ale. " * 4}, "repetitive"),
    ],
)
def test_each_flaw_of_a_parsed_card_is_named_and_the_card_stays_whole(written: dict, reason: str) -> None:
    verdict = checked(written)
    assert not verdict.valid and reason in verdict.reasons
    assert set(verdict.reasons) <= set(CARD_REASONS)
    # A field left out or empty is the profile's: the flagged card still reads back.
    assert parse_card(json.dumps(verdict.card).encode()).character.name == "Mira"


def test_output_that_is_no_object_is_not_json_or_cut_off_and_has_no_card() -> None:
    assert checked("Mira is a tavern keeper.").reasons == ["not_json"]
    assert checked('{"description": "Mira keeps', finish="length").reasons == ["cut_off"]
    verdict = checked("[1, 2]")
    assert verdict.reasons == ["not_json"] and verdict.card is None and verdict.cleaned == ""


def test_control_characters_inside_strings_are_read_and_dropped() -> None:
    raw = json.dumps(WRITTEN).replace("Mira keeps", "Mira\x0b keeps\x01").replace("teasing", "tea\tsing")
    raw = raw.replace("\\u000b", "\x0b").replace("\\u0001", "\x01").replace("\\t", "\t")
    assert "\x0b" in raw and "\t" in raw  # raw control characters, as llama-cpp-python's grammar lets them through
    data = checked(raw).card["data"]
    assert data["description"].startswith("Mira keeps the") and data["personality"].startswith("tea\tsing")


def test_an_object_wrapped_in_prose_or_a_fence_is_read() -> None:
    assert reply_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert reply_object('Here is the card: {"a": {"b": 2}} Enjoy!') == {"a": {"b": 2}}
    assert reply_object("{not json}") is None


def test_a_field_the_policy_forbids_is_named() -> None:
    policy = Policy(patterns=[{"pattern": "forbidden-word"}])
    verdict = checked({**WRITTEN, "scenario": "A night with a forbidden-word in it."}, policy=policy)
    assert "policy" in verdict.reasons


def test_the_prompt_keeps_the_newest_messages_that_fit_and_the_profile() -> None:
    chat = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i} " + "word " * 30}
        for i in range(40)
    ]
    submitted = job(job_type=JobType.character, messages=chat)
    profile = starting_profile(bundled_character("Mira"))
    prompt = card_prompt(submitted, profile, budget=600, count=estimate_tokens)
    assert prompt.prompt_tokens <= 600 and 0 < prompt.first_message < 39
    body = prompt.messages[1].content
    assert "message number 39" in body and f"message number {prompt.first_message} " in body
    assert f"message number {prompt.first_message - 1} " not in body
    assert body.startswith("What is known about Mira so far:\nCharacter: Mira\nDescription: Mira is")
    assert body.endswith("Write the character card of Mira as JSON.")
    assert prompt.messages[0].role == "system" and '"first_mes"' in prompt.messages[0].content
    assert "Tam" in prompt.messages[0].content and "{{" not in prompt.messages[0].content
    # The whole chat fits a large budget; every text the prompt counts is among card_texts.
    whole = card_prompt(submitted, profile, budget=100_000, count=estimate_tokens)
    assert whole.first_message == 0
    counted = set(card_texts(submitted, profile))
    assert all(line in counted for line in whole.messages[1].content.split("\n")[-41:-2])


def test_a_last_message_longer_than_the_room_is_cut_and_a_profile_too_long_is_refused() -> None:
    submitted = card_job(messages=[{"role": "user", "content": "tide " * 2000}])
    prompt = card_prompt(submitted, Character(name="Mira"), budget=400, count=estimate_tokens)
    assert prompt.first_message == 0 and len(prompt.messages[1].content) < 2000
    with pytest.raises(ContextTooLarge):
        card_prompt(submitted, Character(name="Mira", description="long " * 2000), budget=400, count=estimate_tokens)


def test_the_default_character_is_the_assistant() -> None:
    submitted = card_job(character=None)
    assert starting_profile(None).name == "Assistant"
    assert (
        "Assistant:"
        in card_prompt(submitted, starting_profile(None), budget=5000, count=estimate_tokens).messages[1].content
    )
    assert character_spoke(submitted)
    assert not character_spoke(card_job(messages=CONVERSATION[:1]))


def error_of(**overrides: object) -> str:
    with pytest.raises(ValidationError) as raised:
        card_job(**overrides)
    return describe_validation_error(raised.value, "job")


def test_any_role_may_come_last_and_bad_options_name_the_field() -> None:
    assert card_job().messages[-1].role == "assistant"
    assert card_job(messages=CONVERSATION[:3]).messages[-1].role == "user"
    assert error_of(mode="continue").startswith("job.mode: Value error, a chat_character job takes mode 'reply'")
    assert error_of(messages=[{"role": "system", "content": "x"}]).startswith("job.messages: Value error, a chat_")
    assert error_of(characters=["Mira", "Theo"], character=None).startswith("job.job_type:")


def test_a_card_from_a_real_sillytavern_card_keeps_its_lorebook_and_has_every_key_such_a_card_has() -> None:
    # The real card (read in place beside the checkout) as the starting profile, inline as a job would carry it.
    seraphina_png = (REAL_CARDS / "default_Seraphina.png").read_bytes()
    seraphina = parse_card(seraphina_png).character
    written = {**WRITTEN, "description": "Seraphina guards the glade; pink hair, amber eyes, a healer's calm."}
    verdict = checked(written, seraphina)
    assert verdict.valid, verdict.reasons
    data = verdict.card["data"]
    real = json.loads(chunk_bytes("chara", png_text_chunks(seraphina_png)["chara"]))["data"]
    assert set(real) <= set(data)
    assert data["name"] == "Seraphina" and len(data["character_book"]["entries"]) == len(
        real["character_book"]["entries"]
    )
    back = parse_card(export_card(parse_card(json.dumps(verdict.card).encode()).character, "v3-png")).character
    assert back.character_book == seraphina.character_book and back.description == written["description"]
