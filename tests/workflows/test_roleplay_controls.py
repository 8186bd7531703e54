"""Impersonate and the author's note, pure: the job's fields and their errors, where the note's copies go and that
they never move what an earlier turn's prompt held, the impersonation's prompt, its sampling and its validation
(the documented estimate as the token counter)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bench.prefix_reuse import chatml
from characters import bundled_character, describe_validation_error
from tests.helpers import job as roleplay_job
from tests.helpers import long_chat
from workflows.context import (
    IMPERSONATE_INSTRUCTION,
    MESSAGE_OVERHEAD,
    author_note_places,
    build_context,
    estimate_tokens,
    stop_sequences,
)
from workflows.models import AUTHOR_NOTE_CHARS, AuthorNote, BuiltContext, ChatJob, JobType, Message, ReplySpec
from workflows.sampling import IMPERSONATE_MAX_TOKENS, first_sampling, max_tokens_for
from workflows.summaries import row_summary
from workflows.validation import validate

LARGE = 100_000
NOTE = "[Author's note: {{char}} is hiding a letter from {{user}}.]"
FILLED_NOTE = "[Author's note: Mira is hiding a letter from Tam.]"
MIRA_SAYS = '*Mira looks up from the ledger.* "One room left, under the eaves. Two silver."'


def job(**overrides: object) -> ChatJob:
    """Mira and Tam's roleplay job, the job type's sampling."""
    return roleplay_job(**{"sampling": {}, **overrides})


def error_of(**overrides: object) -> str:
    with pytest.raises(ValidationError) as raised:
        job(**overrides)
    return describe_validation_error(raised.value, "job")


# The job's fields


def test_an_author_note_takes_depth_4_and_every_1_by_default() -> None:
    assert job(author_note={"text": NOTE}).author_note == AuthorNote(text=NOTE, depth=4, every=1)
    assert job().author_note is None


@pytest.mark.parametrize(
    ("note", "field"),
    [
        ({"text": ""}, "job.author_note.text"),
        ({"text": "x" * (AUTHOR_NOTE_CHARS + 1)}, "job.author_note.text"),
        ({"text": NOTE, "depth": -1}, "job.author_note.depth"),
        ({"text": NOTE, "every": 0}, "job.author_note.every"),
        ({"text": NOTE, "depth": "deep"}, "job.author_note.depth"),
        ({"text": NOTE, "position": "top"}, "job.author_note.position"),
        ({"depth": 2}, "job.author_note.text"),
        ("a note", "job.author_note"),
    ],
)
def test_a_bad_author_note_fails_naming_its_field(note: object, field: str) -> None:
    assert error_of(author_note=note).startswith(f"{field}:")


def test_an_impersonation_follows_the_characters_message() -> None:
    messages = [{"role": "user", "content": "Evening."}, {"role": "assistant", "content": MIRA_SAYS}]
    assert job(mode="impersonate", messages=messages).mode == "impersonate"
    assert error_of(mode="impersonate") == (
        "job.messages: Value error, in mode 'impersonate' the last non-system message must be the assistant's "
        "(it is 'user')"
    )


@pytest.mark.parametrize("job_type", [JobType.enhance, JobType.summarize])
def test_only_a_chat_job_type_impersonates(job_type: JobType) -> None:
    error = error_of(mode="impersonate", job_type=job_type, messages=[{"role": "assistant", "content": MIRA_SAYS}])
    assert error.startswith("job.mode: Value error, 'impersonate' needs a chat job type") and ";" not in error


# Where the note's copies go


def alternating(turns: int) -> list[Message]:
    """user, assistant, user, ... ending on the user's."""
    return [Message(role="user" if i % 2 == 0 else "assistant", content=f"m{i}") for i in range(2 * turns - 1)]


def test_a_copy_goes_at_its_depth_but_never_before_the_message_after_the_previous_user_message() -> None:
    chat = alternating(3)  # u0 a1 u2 a3 u4
    assert author_note_places(chat, AuthorNote(text=NOTE, depth=0)) == [(1, 0), (3, 2), (5, 4)]  # after the user's
    assert author_note_places(chat, AuthorNote(text=NOTE, depth=1)) == [(0, 0), (2, 2), (4, 4)]  # before it
    # Deeper: before the character's reply to the previous user message, never further back.
    assert author_note_places(chat, AuthorNote(text=NOTE, depth=2)) == [(0, 0), (1, 2), (3, 4)]
    assert author_note_places(chat, AuthorNote(text=NOTE, depth=4)) == [(0, 0), (1, 2), (3, 4)]
    # Several messages since the previous user message: the depth holds within them.
    chat = [Message(role=r, content="x") for r in ("user", "assistant", "assistant", "assistant", "user")]
    assert author_note_places(chat, AuthorNote(text=NOTE, depth=3)) == [(0, 0), (2, 4)]


def test_every_nth_user_message_puts_a_copy_in() -> None:
    chat = alternating(7)
    assert [by for _, by in author_note_places(chat, AuthorNote(text=NOTE, every=3))] == [4, 10]
    assert author_note_places(alternating(2), AuthorNote(text=NOTE, every=3)) == []


def conversation_turns(note: dict[str, object], turns: range, budget: int = LARGE) -> list[BuiltContext]:
    mira = bundled_character("Mira")
    messages = long_chat(60)
    return [
        build_context(
            ChatJob(job_id="w", messages=messages[: 2 * t + 2], character=mira, user_name="Tam", author_note=note),
            mira,
            budget=budget,
            count=estimate_tokens,
        )
        for t in turns
    ]


@pytest.mark.parametrize(("depth", "every"), [(0, 1), (1, 1), (4, 1), (2, 3)])
def test_consecutive_prompts_keep_the_previous_prompt_and_its_copies_where_they_were(depth: int, every: int) -> None:
    built = conversation_turns({"text": NOTE, "depth": depth, "every": every}, range(1, 20))
    for before, after in zip(built, built[1:], strict=False):
        # Every message of the previous prompt is where it was (copies included); only what follows the history
        # changes (here nothing does). A copy at depth 2 or more goes before the reply to the previous user
        # message, so only the generation's primer differs; at depth 0 or 1 not even that.
        assert after.messages[: len(before.messages)] == before.messages
        if depth <= 1:
            assert chatml(after.messages).startswith(chatml(before.messages))
        assert FILLED_NOTE not in after.messages[0].content  # never in the system message
    last = built[-1]
    copies = [i for i in last.insertions if i.kind == "author_note"]
    users = sum(1 for m in last.messages if m.role == "user")
    assert len(copies) == users // every
    assert all(last.messages[i.message] == Message(role="system", content=FILLED_NOTE) for i in copies)
    newest = copies[-1] if users % every == 0 else None
    if newest is not None:
        assert newest.depth == min(depth, 2)  # on an alternating chat


def test_the_copies_count_in_the_prompt_and_leave_with_their_turn_at_a_drop() -> None:
    plain = conversation_turns({"text": NOTE, "depth": 0, "every": 100}, range(40, 41))[0]
    noted = conversation_turns({"text": NOTE, "depth": 0}, range(40, 41))[0]
    copies = sum(1 for i in noted.insertions if i.kind == "author_note")
    assert copies == 41 and plain.dropped.history_messages == noted.dropped.history_messages == 0
    assert noted.prompt_tokens - plain.prompt_tokens == copies * (estimate_tokens(FILLED_NOTE) + MESSAGE_OVERHEAD)

    small = conversation_turns({"text": NOTE, "depth": 0}, range(1, 60), budget=1500)
    dropped = [c for c in small if c.dropped.history_messages > 0]
    assert dropped and all(c.prompt_tokens <= c.budget for c in small)
    for context in dropped:
        # One copy per user message kept, each right after its user message.
        copies = [i for i in context.insertions if i.kind == "author_note"]
        users = [i for i, m in enumerate(context.messages) if m.role == "user"]
        assert [c.message for c in copies] == [u + 1 for u in users]


def test_a_job_without_a_note_has_no_copy() -> None:
    assert not [i for i in conversation_turns(None, range(5, 6))[0].insertions if i.kind == "author_note"]  # type: ignore[arg-type]


# The impersonation's prompt, sampling and summary


def impersonation(**overrides: object) -> ChatJob:
    messages = [{"role": "user", "content": "*pushes the door open* Evening, Mira."}]
    messages.append({"role": "assistant", "content": MIRA_SAYS})
    return job(mode="impersonate", messages=messages, **overrides)


def test_an_impersonation_shares_the_replys_prefix_and_ends_with_its_instruction() -> None:
    card = bundled_character("Mira").model_copy(update={"post_history_instructions": "Stay terse, {{char}}."})
    impersonated = impersonation(character=card, user_description="A tired sailor.")
    built = build_context(impersonated, card, budget=LARGE, count=estimate_tokens)
    reply_job = job(character=card, user_description="A tired sailor.", messages=impersonated.messages[:1])
    replied = build_context(reply_job, card, budget=LARGE, count=estimate_tokens)
    assert built.messages[0] == replied.messages[0]  # the system message is the reply's: one cached prefix
    assert built.messages[1:3] == impersonated.messages
    instruction = built.messages[-1]
    assert instruction.role == "system" and len(built.messages) == 4  # no post-history instructions: for Mira
    assert instruction.content.startswith("[Write Tam's next message in this chat, as Tam would write it")
    assert "true to how Tam is described" in instruction.content and "do not write Mira's words" in instruction.content
    assert [i.kind for i in built.insertions] == ["impersonate_instruction"]
    assert built.stop == stop_sequences("Mira", generic=()) == ["\nMira:", "\n**Mira:**", "\n**Mira**:"]

    undescribed = build_context(impersonation(), bundled_character("Mira"), budget=LARGE, count=estimate_tokens)
    assert undescribed.messages[-1].content == IMPERSONATE_INSTRUCTION.replace("{persona}", "").replace(
        "{{user}}", "Tam"
    ).replace("{{char}}", "Mira")


def test_an_impersonation_in_a_conversation_stops_at_the_assistants_label() -> None:
    impersonated = impersonation(job_type=JobType.conversation, character=None)
    built = build_context(impersonated, None, budget=LARGE, count=estimate_tokens)
    assert built.stop == ["\nAssistant:", "\n**Assistant:**", "\n**Assistant**:"]
    assert "do not write Assistant's words" in built.messages[-1].content


def test_an_impersonation_writes_less_by_default_and_keeps_what_the_job_asks() -> None:
    for job_type in (JobType.roleplay, JobType.conversation, JobType.unrestricted):
        reply = first_sampling(job_type, impersonation().sampling, seed=1)
        impersonated = first_sampling(job_type, impersonation().sampling, seed=1, mode="impersonate")
        assert impersonated.max_tokens == IMPERSONATE_MAX_TOKENS < reply.max_tokens
        assert (impersonated.temperature, impersonated.top_p) == (reply.temperature, reply.top_p)
    asked = impersonation(sampling={"max_tokens": 400, "temperature": 0.5})
    assert max_tokens_for(asked.job_type, asked.sampling, asked.mode) == 400
    assert first_sampling(asked.job_type, asked.sampling, seed=1, mode="impersonate").temperature == 0.5


def test_the_rows_summary_says_impersonate() -> None:
    assert row_summary(impersonation(), bundled_character("Mira")) == "roleplay · Mira · 1 turn · impersonate"


# The impersonation's validation

USER = ReplySpec(job_type=JobType.roleplay, char_name="Mira", user_name="Tam", writes_as="user")
HISTORY = [
    Message(role="user", content="*pushes the door open* Evening, Mira."),
    Message(role="assistant", content=MIRA_SAYS),
]


def test_an_impersonated_message_of_the_users_own_passes_without_its_label() -> None:
    verdict = validate("Tam: *sets two coins on the counter* I'll take it.", USER, HISTORY, "stop")
    assert verdict.valid and verdict.cleaned == "*sets two coins on the counter* I'll take it." and not verdict.reasons
    # Short is no warning for a user's message; "you" in it is the user speaking to the character.
    assert validate('"You look tired, Mira."', USER, HISTORY, "stop").reasons == []


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ('*sets two coins down* I\'ll take it.\nMira: "A tall man," she says.', "*sets two coins down* I'll take it."),
        ("I'll take it. Mira: Good.", "I'll take it."),
        (
            "*I set two coins down.* I'll take it. *Mira smiles and hands me the key.*",
            "*I set two coins down.* I'll take it.",
        ),
        ('"Deal, then." Mira slowly slides the key across.', '"Deal, then."'),
    ],
)
def test_the_characters_part_is_cut_from_an_impersonated_message(raw: str, kept: str) -> None:
    verdict = validate(raw, USER, HISTORY, "stop")
    assert verdict.cleaned == kept and verdict.reasons == ["speaks_for_character"] and verdict.valid


def test_speaking_of_the_character_is_not_writing_the_characters_part() -> None:
    for text in ('"Two silver? Fine." Mira is kind, I think.', "*I watch Mira's hands.* Where did you get that?"):
        assert validate(text, USER, HISTORY, "stop").reasons == [], text


def test_an_impersonation_that_is_only_the_characters_lines_or_echoes_is_rejected() -> None:
    only_hers = validate('Mira: "Two silver, and not a copper less."', USER, HISTORY, "stop")
    assert not only_hers.valid and only_hers.reasons == ["speaks_for_character", "empty"]
    echoed = validate("Evening, Mira. *pushes the door open* Evening, Mira!", USER, HISTORY, "stop")
    assert not echoed.valid and "echoes_history" in echoed.reasons  # the user's own earlier message
    assert "echoes_history" in validate(MIRA_SAYS.replace("Mira", "she"), USER, HISTORY, "stop").reasons
    assert not validate("", USER, HISTORY, "stop").valid


def test_an_impersonation_is_checked_for_assistant_talk_and_refusals_like_a_reply() -> None:
    assert "out_of_character" in validate("As an AI, I cannot be Tam.", USER, HISTORY, "stop").reasons
    refused = validate("I'm sorry, but I can't continue this roleplay.", USER, HISTORY, "stop")
    assert not refused.valid and "refusal" in refused.reasons
    # The user's part is the message itself: never cut as speaking for the user.
    narrated = "*You hand me the key and I nod.* Thanks."
    assert validate(narrated, USER, HISTORY, "stop").cleaned == narrated
    as_reply = ReplySpec(job_type=JobType.roleplay, char_name="Mira", user_name="Tam")
    assert "speaks_for_user" in validate(narrated, as_reply, HISTORY, "stop").reasons


def test_a_character_named_like_a_word_is_only_matched_capitalised() -> None:
    spec = ReplySpec(job_type=JobType.roleplay, char_name="Hope", user_name="Tam", writes_as="user")
    assert validate("*I sit down and my hope fades.* Is the lamp lit?", spec, [], "stop").reasons == []
    assert validate("Is the lamp lit? *Hope fades.*", spec, [], "stop").reasons == ["speaks_for_character"]
