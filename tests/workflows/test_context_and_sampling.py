"""Context building within a token budget (with the documented estimate as the counter), and sampling."""

import pytest

from characters import Character, bundled_character, fill_macros
from characters.profile import BookEntry, CharacterBook
from workflows.context import (
    ContextTooLarge,
    build_context,
    estimate_tokens,
    split_examples,
    token_budget,
    turns,
)
from workflows.models import ChatJob, JobType, Message, ResolvedSampling
from workflows.prompts import system_prompt
from workflows.sampling import escalated_sampling, first_sampling

LARGE = 100_000


def job(**overrides: object) -> ChatJob:
    values: dict[str, object] = {
        "job_id": "j1",
        "messages": [{"role": "user", "content": "Hello"}],
        "character": "Mira",
        "user_name": "Tam",
    }
    values.update(overrides)
    return ChatJob.model_validate(values)


def long_conversation(pairs: int) -> list[dict[str, str]]:
    messages = []
    for i in range(pairs):
        messages.append({"role": "user", "content": f"User line {i}: " + "the tide is coming in " * 6})
        messages.append({"role": "assistant", "content": f"Mira line {i}: " + "she wipes the bar again " * 6})
    messages.append({"role": "user", "content": "So, about that room?"})
    return messages


def test_budget_is_the_smaller_limit_minus_the_reply_and_margin() -> None:
    assert token_budget(6144, 8192, 300, 32) == 6112
    assert token_budget(6144, 8192, 4000, 32) == 4160


def test_roleplay_context_starts_with_one_system_message_holding_the_character() -> None:
    mira = bundled_character("Mira")
    built = build_context(job(user_description="A tired sailor."), mira, budget=LARGE, count=estimate_tokens)
    assert [m.role for m in built.messages] == ["system", "user"]
    system = built.messages[0].content
    assert "You are Mira" in system and "Tam" in system and "A tired sailor." in system
    assert mira.personality in system and "{{" not in system
    assert built.stop == ["\nTam:", "\n**Tam:**", "\n**Tam**:", "\nYou:", "\nUser:"]
    assert 0 < built.prompt_tokens <= built.budget == LARGE


def test_a_long_conversation_keeps_system_persona_and_the_newest_whole_turns() -> None:
    full = job(messages=long_conversation(60), user_description="A tired sailor.")
    built = build_context(full, bundled_character("Mira"), budget=600, count=estimate_tokens)
    assert built.prompt_tokens <= 600
    system, *history = built.messages
    assert "A tired sailor." in system.content and "Mira" in system.content
    assert history[-1].content == "So, about that room?"
    assert history[0].role == "user"  # whole turns only: never an assistant reply without its question
    kept_numbers = [int(m.content.split()[2].rstrip(":")) for m in history[:-1]]
    assert kept_numbers == sorted(kept_numbers) and kept_numbers[-1] == 59  # the newest ones
    assert built.dropped.history_messages == 120 - len(history[:-1]) > 0
    assert len(history[:-1]) % 2 == 0


def test_everything_fits_when_the_budget_allows() -> None:
    built = build_context(
        job(messages=long_conversation(5)), bundled_character("Mira"), budget=LARGE, count=estimate_tokens
    )
    assert len(built.messages) == 1 + 11 and built.dropped.history_messages == 0


def test_the_fixed_part_alone_over_budget_is_context_too_large() -> None:
    with pytest.raises(ContextTooLarge, match="context_too_large"):
        build_context(job(), bundled_character("Mira"), budget=20, count=estimate_tokens)


def test_card_system_prompt_replaces_the_default_with_original_kept() -> None:
    card = Character(name="Orrin", system_prompt="{{original}} Write in the present tense, {{user}}.")
    system = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens).messages[0].content
    original = fill_macros(system_prompt(JobType.roleplay), char="Orrin", user="Tam")
    assert system.startswith(f"{original} Write in the present tense, Tam.")


def test_post_history_instructions_follow_the_history() -> None:
    card = Character(name="Orrin", post_history_instructions="Stay terse, {{char}}.")
    built = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens)
    assert built.messages[-1] == Message(role="system", content="Stay terse, Orrin.")
    assert built.messages[-2].role == "user"


def test_nickname_fills_char() -> None:
    card = Character(name="Orrin Vale", nickname="Orrin", description="{{char}} keeps the light.")
    assert (
        "Orrin keeps the light."
        in build_context(job(character=card), card, budget=LARGE, count=estimate_tokens).messages[0].content
    )


def test_creator_fields_never_reach_the_prompt() -> None:
    card = Character(name="Orrin", creator_notes="NOTE-FOR-HUMANS", creator="CREATOR-X", tags=["TAG-Y"])
    text = " ".join(
        m.content for m in build_context(job(character=card), card, budget=LARGE, count=estimate_tokens).messages
    )
    assert "NOTE-FOR-HUMANS" not in text and "CREATOR-X" not in text and "TAG-Y" not in text


def test_examples_go_in_while_they_fit_and_are_counted_when_dropped() -> None:
    card = Character(name="Orrin", mes_example="<START>\n{{user}}: hi\n{{char}}: Go away.\n<START>\n" + "x " * 400)
    assert split_examples(card.mes_example)[0] == "{{user}}: hi\n{{char}}: Go away."
    built = build_context(job(character=card), card, budget=260, count=estimate_tokens)
    assert "Tam: hi\nOrrin: Go away." in built.messages[0].content
    assert built.dropped.examples == 1


def test_conversation_and_enhance_jobs_use_their_own_prompt_and_no_character() -> None:
    for job_type in (JobType.conversation, JobType.enhance, JobType.unrestricted):
        built = build_context(job(job_type=job_type, character=None), None, budget=LARGE, count=estimate_tokens)
        assert built.messages[0].content == system_prompt(job_type)


def test_continue_mode_ends_with_the_partial_reply_and_an_instruction() -> None:
    messages = [{"role": "user", "content": "Tell me a tale."}, {"role": "assistant", "content": "Once, on a"}]
    built = build_context(
        job(mode="continue", messages=messages), bundled_character("Mira"), budget=LARGE, count=estimate_tokens
    )
    assert built.messages[-2] == Message(role="assistant", content="Once, on a")
    assert built.messages[-1].role == "system" and "Continue" in built.messages[-1].content


def test_turns_start_at_user_messages() -> None:
    greeting = Message(role="assistant", content="Welcome!")
    user, reply = Message(role="user", content="hi"), Message(role="assistant", content="yo")
    assert turns([greeting, user, reply, user]) == [[greeting], [user, reply], [user]]


def book(*entries: BookEntry, **fields: object) -> CharacterBook:
    return CharacterBook(entries=list(entries), **fields)


def test_triggered_lore_goes_in_by_priority_within_the_book_budget() -> None:
    lore = book(
        BookEntry(keys=["harbour"], content="HARBOUR-LORE " * 3, insertion_order=2, name="harbour", priority=1),
        BookEntry(keys=["storm"], content="STORM-LORE " * 3, insertion_order=1, name="storm", priority=9),
        BookEntry(keys=["never"], content="NEVER-LORE", name="never"),
        token_budget=15,
    )
    card = Character(name="Orrin", character_book=lore)
    asked = job(character=card, messages=[{"role": "user", "content": "A storm over the harbour?"}])
    built = build_context(asked, card, budget=LARGE, count=estimate_tokens)
    assert built.lorebook == ["storm"]  # harbour fired too, but the book's budget has room for one
    assert built.dropped.lorebook_entries == 1
    assert "STORM-LORE" in built.messages[0].content and "NEVER-LORE" not in built.messages[0].content


def test_lore_position_puts_entries_before_or_after_the_character() -> None:
    lore = book(
        BookEntry(keys=[], constant=True, content="BEFORE", position="before_char", name="b"),
        BookEntry(keys=[], constant=True, content="AFTER", position="after_char", name="a"),
    )
    card = Character(name="Orrin", description="SHEET", character_book=lore)
    system = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens).messages[0].content
    assert system.index("BEFORE") < system.index("SHEET") < system.index("AFTER")


def test_first_sampling_takes_job_values_then_job_type_defaults() -> None:
    assert first_sampling(JobType.roleplay, job().sampling, seed=5) == ResolvedSampling(
        temperature=0.8, top_p=0.9, max_tokens=300, seed=5
    )
    defaults = {t: first_sampling(t, job().sampling, seed=1) for t in JobType}
    assert [(s.max_tokens, s.temperature, s.top_p) for s in defaults.values()] == [
        (500, 0.7, 0.9),
        (300, 0.8, 0.9),
        (256, 0.7, 0.9),
        (500, 0.8, 0.9),
        (200, 0.3, 0.9),  # chat_summarize
        (160, 0.6, 0.9),  # chat_scene (a storyboard: per panel, workflows/scenes.py)
        (700, 0.5, 0.9),  # chat_character
    ]
    chosen = job(sampling={"temperature": 0.3, "max_tokens": 20, "seed": 1}).sampling
    resolved = first_sampling(JobType.conversation, chosen, seed=5)
    assert (resolved.temperature, resolved.max_tokens, resolved.seed, resolved.top_p) == (0.3, 20, 1, 0.9)


def test_escalation_changes_seed_and_raises_penalty_and_temperature_within_range() -> None:
    start = ResolvedSampling(temperature=0.8, top_p=0.9, max_tokens=100, seed=1)
    repeated = escalated_sampling(start, ["repetitive"], seed=2)
    assert repeated.seed == 2 and repeated.temperature == 0.9 and repeated.frequency_penalty == 0.3
    short = escalated_sampling(start, ["too_short"], seed=3)
    assert short.seed == 3 and short.temperature == 0.85 and short.frequency_penalty == 0.1
    hot = ResolvedSampling(temperature=1.0, top_p=0.9, max_tokens=100, seed=1, frequency_penalty=0.9)
    capped = escalated_sampling(hot, ["echoes_history"], seed=4)
    assert capped.temperature == 1.0 and capped.frequency_penalty == 1.0
    assert capped.max_tokens == 100 and capped.top_p == 0.9
