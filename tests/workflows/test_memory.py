"""Story memory, pure: the job's memory field and chat_summarize jobs (validated, errors naming the field), the
memory block's place in the context (after the constant part, before the examples and history; its room
reserved so a new summary never moves the window), when a summary is due, the summary step's prompt, and the
validation of summaries (a scene continuation is never kept)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from characters import Character, bundled_character, describe_validation_error
from tests.helpers import long_chat
from workflows.context import EXAMPLES_HEADER, FACTS_HEADER, MEMORY_HEADER, build_context, estimate_tokens
from workflows.memory import NEXT_HEADER, NOTHING_YET, merged_memory, summary_prompt, summary_texts
from workflows.models import (
    MEMORY_FACTS,
    MEMORY_SUMMARY_CHARS,
    SUMMARY_MAX_CHARS,
    BuiltContext,
    ChatJob,
    ChatResult,
    JobType,
    Memory,
    Message,
    SummaryCheck,
)
from workflows.summary_validation import validate_summary

MIRA = bundled_character("Mira")
SUMMARY = "Tam hid the brass compass of Captain Vell under the third floorboard by the hearth, and Mira kept it."
FACT = "Tam is allergic to saffron."


def job_with(messages: list[Message], memory: Memory | None, **more: object) -> ChatJob:
    return ChatJob(job_id="m", messages=messages, character="Mira", user_name="Tam", memory=memory, **more)


def built(job: ChatJob, budget: int = 900, character: Character = MIRA) -> BuiltContext:
    return build_context(job, character, budget=budget, count=estimate_tokens)


# The job's fields


@pytest.mark.parametrize(
    ("memory", "field"),
    [
        ({"covers": 3}, "job.memory.covers"),
        ({"covers": -1}, "job.memory.covers"),
        ({"summary": "x" * (MEMORY_SUMMARY_CHARS + 1)}, "job.memory.summary"),
        ({"facts": ["a fact"] * (MEMORY_FACTS + 1)}, "job.memory.facts"),
        ({"facts": [""]}, "job.memory.facts.0"),
        ({"topics": []}, "job.memory.topics"),
    ],
)
def test_a_bad_memory_names_its_field(memory: dict[str, object], field: str) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "user", "content": "there?"}]
    with pytest.raises(ValidationError) as error:
        ChatJob.model_validate({"job_id": "j", "messages": messages, "memory": memory})
    assert field in describe_validation_error(error.value, "job")


def test_memory_may_be_empty_and_covers_every_message() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "?"},
    ]
    assert ChatJob.model_validate({"job_id": "j", "messages": messages, "memory": {}}).memory == Memory()
    assert ChatJob.model_validate({"job_id": "j", "messages": messages, "memory": {"covers": 3}}).memory is not None
    assert ChatJob.model_validate({"job_id": "j", "messages": messages}).memory is None


def test_chat_summarize_takes_any_role_last_but_only_mode_reply() -> None:
    for last in ("user", "assistant"):
        summarize = ChatJob.model_validate(
            {"job_id": "s", "job_type": "chat_summarize", "messages": [{"role": last, "content": "hi"}]}
        )
        assert summarize.job_type is JobType.summarize
    with pytest.raises(ValidationError) as error:
        ChatJob.model_validate({"job_id": "j", "messages": [{"role": "assistant", "content": "hi"}]})
    assert "job.messages" in describe_validation_error(error.value, "job")
    with pytest.raises(ValidationError) as error:
        ChatJob.model_validate(
            {
                "job_id": "s",
                "job_type": "chat_summarize",
                "mode": "continue",
                "messages": [{"role": "assistant", "content": "hi"}],
            }
        )
    assert "job.messages" in describe_validation_error(error.value, "job")


def test_the_result_carries_memory_in_its_schema() -> None:
    schema = ChatResult.model_json_schema()
    assert "memory" in schema["properties"]
    assert "memory" in ChatJob.model_json_schema()["properties"]


# The memory block in the context


def test_without_memory_the_context_has_no_block() -> None:
    context = built(job_with(long_chat(3), None))
    assert context.memory is None
    assert MEMORY_HEADER not in context.messages[0].content


def test_the_block_goes_after_the_constant_part_and_before_the_examples() -> None:
    with_examples = MIRA.model_copy(update={"mes_example": "<START>\nMira: *nods* Rooms are upstairs."})
    context = built(job_with(long_chat(2), Memory(summary=SUMMARY, facts=[FACT])), budget=1400, character=with_examples)
    system = context.messages[0].content
    assert context.memory is not None and context.memory.message == 0
    assert context.memory.text in system and SUMMARY in context.memory.text and FACT in context.memory.text
    block = system.index(MEMORY_HEADER)
    assert system.index(FACTS_HEADER) > block
    assert system.index(MIRA.description[:40]) < block  # the character sheet: the constant part comes first
    assert EXAMPLES_HEADER in system and system.index(EXAMPLES_HEADER) > block
    assert context.memory.facts == 1 and context.memory.covers == 0
    assert context.memory.tokens <= context.memory.reserved


def test_facts_are_pinned_when_the_history_is_cut() -> None:
    context = built(job_with(long_chat(40), Memory(facts=[FACT])))
    assert context.dropped.history_messages > 0
    assert FACT in context.messages[0].content
    assert context.prompt_tokens <= context.budget


def test_a_new_summary_does_not_move_the_window() -> None:
    """The memory's room is reserved whatever the summary's length: the turn after a summary (new memory) keeps
    the window of the turn that made it, so only the memory block changes in the prompt's front."""
    messages = long_chat(40)
    before = built(job_with(messages, Memory()))
    after = built(job_with(messages, Memory(summary=SUMMARY * 3, covers=5)))
    assert before.window is not None and after.window is not None
    assert before.window == after.window
    assert before.messages[1:] == after.messages[1:]
    assert before.dropped == after.dropped


def test_a_summary_is_due_only_when_the_window_starts_past_what_it_covers() -> None:
    messages = long_chat(40)
    fresh = built(job_with(messages, Memory()))
    assert fresh.window is not None and fresh.memory is not None
    assert fresh.window.first_message > 0
    assert fresh.memory.summarize_until == fresh.window.first_message
    caught_up = built(job_with(messages, Memory(summary=SUMMARY, covers=fresh.window.first_message)))
    assert caught_up.memory is not None and caught_up.memory.summarize_until is None
    short = built(job_with(long_chat(2), Memory()), budget=1400)
    assert short.memory is not None and short.memory.summarize_until is None


def test_the_context_is_a_pure_function_of_the_job() -> None:
    job = job_with(long_chat(40), Memory(summary=SUMMARY, facts=[FACT], covers=4))
    assert built(job) == built(ChatJob.model_validate_json(job.model_dump_json()))


# The summary step's prompt


def test_the_summary_prompt_merges_the_previous_summary_with_the_dropped_messages() -> None:
    messages = [Message(role="user", content=f"Line {i}: the tide turns.") for i in range(10)]
    job = job_with([*messages[:9], Message(role="user", content="now")], Memory(summary=SUMMARY, covers=2))
    prompt = summary_prompt(job, MIRA, job.memory, 6, budget=2000, count=estimate_tokens)
    body = prompt.messages[-1].content
    assert prompt.messages[0].role == "system" and "summary" in prompt.messages[0].content
    assert SUMMARY in body and NEXT_HEADER in body
    assert [f"Line {i}:" in body for i in range(8)] == [False, False, True, True, True, True, False, False]
    assert "Tam: Line 2" in body
    assert prompt.covers == 6
    assert "\nMira:" in prompt.stop and "\nTam:" in prompt.stop


def test_the_summary_prompt_keeps_to_its_budget_and_says_how_far_it_got() -> None:
    messages = [Message(role="user", content=f"Line {i}: " + "the tide turns again " * 10) for i in range(30)]
    job = job_with(messages, Memory())
    # Counted as the activity counts: only the texts `summary_texts` names.
    counts = {text: estimate_tokens(text) for text in summary_texts(job, MIRA, Memory(), 30)}
    prompt = summary_prompt(job, MIRA, Memory(), 30, budget=400, count=counts.__getitem__)
    assert 0 < prompt.covers < 30
    assert prompt.prompt_tokens <= 400
    assert NOTHING_YET in prompt.messages[-1].content
    assert f"Line {prompt.covers - 1}:" in prompt.messages[-1].content
    assert f"Line {prompt.covers}:" not in prompt.messages[-1].content


def test_a_passed_summary_keeps_the_facts_pinned() -> None:
    memory = merged_memory(Memory(summary="old", facts=[FACT], covers=2), SUMMARY, 9)
    assert memory == Memory(summary=SUMMARY, facts=[FACT], covers=9)


# Validation of summaries


def check(summary: str, finish_reason: str = "stop") -> SummaryCheck:
    return SummaryCheck(summary=summary, finish_reason=finish_reason, char_name="Mira", user_name="Tam")


def test_a_summary_in_the_third_person_passes() -> None:
    verdict = validate_summary(check(SUMMARY + ' Mira promised to say "nothing at all" to the harbour guards.'))
    assert verdict.valid and verdict.reasons == []


def test_a_summary_label_is_taken_off() -> None:
    verdict = validate_summary(check(f"Here is the updated summary:\n{SUMMARY}"))
    assert verdict.valid and verdict.cleaned == SUMMARY
    assert validate_summary(check(f"**Summary:** {SUMMARY}")).cleaned == SUMMARY


@pytest.mark.parametrize(
    "scene",
    [
        "Mira: *wipes the counter* The storm is bad tonight, Tam. Sit by the fire.",
        '*Mira leans over the bar and smiles.* "Another drink, sailor?"',
        "I pour you another drink and smile. You look tired, Tam.",
        '"Stay," Mira said. "The rooms are warm," she said. "And the stew is hot," she added.',
        "**Tam:** I hid the compass.",
    ],
)
def test_a_scene_continuation_is_not_a_summary(scene: str) -> None:
    verdict = validate_summary(check(scene))
    assert not verdict.valid and "scene" in verdict.reasons


def test_a_summary_stopped_by_its_token_limit_keeps_its_full_sentences() -> None:
    verdict = validate_summary(check(SUMMARY + " Then Mira walked to the", "length"))
    assert verdict.valid and verdict.cleaned == SUMMARY


@pytest.mark.parametrize(
    ("summary", "finish_reason", "reason"),
    [
        ("", "stop", "empty"),
        ("Here is the summary:", "stop", "empty"),
        ("Tam came in.", "stop", "too_short"),
        ("Then Mira walked to the door and", "length", "cut_off"),
        ((SUMMARY + " ") * (SUMMARY_MAX_CHARS // len(SUMMARY) + 1), "stop", "too_long"),
        ("I'm sorry, but I can't help with that request.", "stop", "refusal"),
    ],
)
def test_a_bad_summary_says_why(summary: str, finish_reason: str, reason: str) -> None:
    verdict = validate_summary(check(summary, finish_reason))
    assert not verdict.valid and reason in verdict.reasons
