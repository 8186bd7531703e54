"""Prevention at generation, pure: the user's names as stop strings within an engine's limit, the escalation
after each reason (sampling, reminders), and the reminders' place in the built context."""

import pytest

from characters import Character
from orchestrator.engines import ENGINES, GENERIC, EngineKind
from workflows.context import build_context, estimate_tokens, stop_sequences
from workflows.models import ChatJob, Message, Reminder, ResolvedSampling, Sampling
from workflows.sampling import (
    MAX_REPETITION_PENALTY,
    max_tokens_ceiling,
    next_sampling,
    reminders_after,
)

LARGE = 100_000
OWN_REPLY = "[Write only Orrin's reply; do not write Tam's words or actions.]"
START = ResolvedSampling(temperature=0.8, top_p=0.9, max_tokens=300, seed=1)


def job(**overrides: object) -> ChatJob:
    values: dict[str, object] = {
        "job_id": "j1",
        "messages": [{"role": "user", "content": "Evening. Any rooms left?"}],
        "user_name": "Tam",
    }
    values.update(overrides)
    return ChatJob.model_validate(values)


def test_the_users_own_labels_come_first_the_plain_one_first() -> None:
    assert stop_sequences("Tam") == ["\nTam:", "\n**Tam:**", "\n**Tam**:", "\nYou:", "\nUser:"]
    assert stop_sequences("User") == ["\nUser:", "\n**User:**", "\n**User**:", "\nYou:"]  # no label twice


def test_an_engine_with_a_stop_limit_keeps_the_users_own_labels() -> None:
    stops = stop_sequences("Tam")
    assert ENGINES[EngineKind.tgi].stops(stops) == ["\nTam:", "\n**Tam:**", "\n**Tam**:", "\nYou:"]
    assert GENERIC.stops(stops) == ENGINES[EngineKind.tgi].stops(stops)
    assert ENGINES[EngineKind.vllm].stops(stops) == stops == ENGINES[EngineKind.llamacpp].stops(stops)


def test_the_contexts_stops_are_the_jobs_whatever_the_reminders() -> None:
    card = Character(name="Orrin")
    plain = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens)
    reminded = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens, reminders=list(Reminder))
    assert plain.stop == reminded.stop == stop_sequences("Tam")


def test_a_reminder_comes_last_after_the_post_history_instructions_and_is_counted() -> None:
    card = Character(name="Orrin", post_history_instructions="Stay terse, {{char}}.")
    plain = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens)
    built = build_context(
        job(character=card), card, budget=LARGE, count=estimate_tokens, reminders=[Reminder.own_reply]
    )
    assert built.messages[:-1] == plain.messages
    assert built.messages[-1] == Message(role="system", content=OWN_REPLY)
    assert built.messages[-2] == Message(role="system", content="Stay terse, Orrin.")
    assert built.insertions[-1].kind == "reminder" and built.insertions[-1].message == len(built.messages) - 1
    assert built.prompt_tokens > plain.prompt_tokens


def test_both_reminders_in_the_order_asked_with_the_names_filled() -> None:
    card = Character(name="Orrin")
    reminders = [Reminder.in_character, Reminder.own_reply, Reminder.in_character]
    built = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens, reminders=reminders)
    in_character, own_reply = built.messages[-2:]
    assert in_character.content.startswith("[Stay in character as Orrin, in the scene with Tam")
    assert own_reply.content == OWN_REPLY and built.messages[-3].role == "user"
    assert "{{" not in in_character.content


def test_a_reminder_that_does_not_fit_is_left_out_rather_than_failing_the_job() -> None:
    card = Character(name="Orrin")
    plain = build_context(job(character=card), card, budget=LARGE, count=estimate_tokens)
    tight = build_context(
        job(character=card), card, budget=plain.prompt_tokens, count=estimate_tokens, reminders=[Reminder.own_reply]
    )
    assert tight.messages == plain.messages and tight.prompt_tokens == plain.prompt_tokens


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (["speaks_for_user"], [Reminder.own_reply]),
        (["speaks_for_user", "too_short"], [Reminder.own_reply]),
        (["out_of_character"], [Reminder.in_character]),
        (["refusal"], [Reminder.in_character]),
        (["speaks_for_user", "out_of_character"], [Reminder.own_reply, Reminder.in_character]),
        (["repetitive", "cut_off", "too_short", "empty", "policy"], []),
    ],
)
def test_reminders_after_each_reason(reasons: list[str], expected: list[Reminder]) -> None:
    assert reminders_after(reasons, roleplay=True) == expected


def test_no_character_reminder_outside_roleplay() -> None:
    assert reminders_after(["out_of_character", "refusal"], roleplay=False) == []
    assert reminders_after(["speaks_for_user"], roleplay=False) == [Reminder.own_reply]


@pytest.mark.parametrize("reason", ["repetitive", "echoes_history"])
def test_repetition_raises_temperature_and_both_penalties(reason: str) -> None:
    after = next_sampling(START, [reason], seed=2, max_tokens_limit=300)
    assert (after.seed, after.temperature, after.frequency_penalty, after.repetition_penalty) == (2, 0.9, 0.3, 1.15)
    again = next_sampling(after, [reason], seed=3, max_tokens_limit=300)
    assert again.repetition_penalty == MAX_REPETITION_PENALTY == 1.3 and again.frequency_penalty == 0.6
    third = next_sampling(again, [reason], seed=4, max_tokens_limit=300)
    assert third.repetition_penalty == 1.3 and third.temperature == 1.0  # capped
    assert third.max_tokens == 300 and third.top_p == 0.9


@pytest.mark.parametrize("reason", ["speaks_for_user", "policy"])
def test_a_reason_met_by_a_reminder_or_a_new_draw_changes_only_the_seed(reason: str) -> None:
    assert next_sampling(START, [reason], seed=2, max_tokens_limit=300) == START.model_copy(update={"seed": 2})


@pytest.mark.parametrize("reason", ["too_short", "empty", "out_of_character", "refusal", "a_code_added_later"])
def test_other_reasons_raise_the_temperature_a_little_and_no_penalty(reason: str) -> None:
    after = next_sampling(START, [reason], seed=2, max_tokens_limit=300)
    assert after == START.model_copy(update={"seed": 2, "temperature": 0.85})


def test_cut_off_gives_more_tokens_within_the_limit() -> None:
    assert next_sampling(START, ["cut_off"], seed=2, max_tokens_limit=1000) == START.model_copy(
        update={"seed": 2, "max_tokens": 450}
    )
    assert next_sampling(START, ["cut_off"], seed=2, max_tokens_limit=400).max_tokens == 400
    # A context prepared again (with a reminder) may leave less room: the next attempt stays within it.
    grown = START.model_copy(update={"max_tokens": 450})
    assert next_sampling(grown, ["too_short"], seed=2, max_tokens_limit=320).max_tokens == 320


def test_the_max_tokens_ceiling_is_the_cap_and_what_the_context_left_of_its_budget() -> None:
    default = Sampling()
    assert max_tokens_ceiling(default, 300, cap=2048, budget=6000, prompt_tokens=1000) == 2048
    assert max_tokens_ceiling(default, 300, cap=2048, budget=1200, prompt_tokens=1000) == 500
    assert max_tokens_ceiling(default, 300, cap=None, budget=6000, prompt_tokens=1000) == 300  # recorded without a cap


def test_a_job_that_set_max_tokens_never_gets_more() -> None:
    assert max_tokens_ceiling(Sampling(max_tokens=48), 48, cap=2048, budget=6000, prompt_tokens=1000) == 48
