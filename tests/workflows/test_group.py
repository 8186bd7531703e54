"""Group scenes, pure: the job's group fields, speaker choice, a member's prompt, the other members' lines in a
reply, and the round's result."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from characters import Character, bundled_character, describe_validation_error, fill_macros, greeting, group_greeting
from workflows.context import build_context, estimate_tokens
from workflows.group import GROUP_NUDGE, SpeakerTurn, chosen_speakers, mentioned, round_result, scene_of
from workflows.models import (
    ChatJob,
    GenerateResult,
    GroupSettings,
    Message,
    ReplySpec,
    ResolvedSampling,
    Timings,
    Verdict,
)
from workflows.results import Attempt
from workflows.validation import validate

MIRA, THEO, VIVI = (bundled_character(name) for name in ("Mira", "Theo Marlowe", "Vivienne Laurent"))
MEMBERS = [MIRA, THEO, VIVI]


def group_job(**overrides: object) -> ChatJob:
    values: dict[str, object] = {
        "job_id": "g1",
        "messages": [{"role": "user", "content": "Evening, everyone."}],
        "user_name": "Tam",
        "characters": ["Mira", "Theo Marlowe", "Vivienne Laurent"],
    }
    values.update(overrides)
    return ChatJob.model_validate(values)


def problem(**overrides: object) -> str:
    with pytest.raises(ValidationError) as error:
        group_job(**overrides)
    return describe_validation_error(error.value, "job")


# The job's fields -------------------------------------------------------------------------------------------


def test_a_group_job_defaults_to_natural_and_swap() -> None:
    job = group_job()
    assert job.group is None and GroupSettings().strategy == "natural" and GroupSettings().card_mode == "swap"
    inline = group_job(characters=["Mira", {"name": "Odo", "talkativeness": 0}])
    assert isinstance(inline.characters[1], Character) and inline.characters[1].talkativeness == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"characters": ["Mira"]}, "job.characters: List should have at least 2 items"),
        ({"characters": [f"M{i}" for i in range(9)]}, "job.characters: List should have at most 8 items"),
        ({"character": "Mira"}, "job.characters: give `character` or `characters`, not both"),
        ({"characters": None, "group": {"strategy": "list"}}, "job.group: needs `characters`"),
        ({"group": {"strategy": "manual"}}, "job.group.speakers: the manual strategy needs speakers"),
        ({"group": {"strategy": "manual", "speakers": ["Bob"]}}, "job.group.speakers.0: is not one of `characters`"),
        ({"group": {"strategy": "list", "speakers": ["Mira"]}}, "job.group.speakers: only the manual strategy"),
        ({"group": {"strategy": "loud"}}, "job.group.strategy: Input should be"),
        ({"group": {"card_mode": "merge"}}, "job.group.card_mode: Input should be"),
        ({"characters": ["Mira", "mira"]}, "job.characters.1: names a member already in the group"),
        ({"job_type": "chat_conversation"}, "job.job_type: a group job"),
        ({"memory": {}}, "job.memory: story memory is not supported in group jobs"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "name": "Bob"}]},
            "job.messages.1.name: is not one of `characters`",
        ),
    ],
)
def test_a_bad_group_job_names_the_field(overrides: dict, field: str) -> None:
    assert field in problem(**overrides)


def test_a_round_may_follow_a_members_reply_but_only_in_a_group() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello.", "name": "Mira"}]
    assert group_job(messages=messages).messages[-1].name == "Mira"
    with pytest.raises(ValidationError, match="last non-system message must be the user's"):
        ChatJob.model_validate({"job_id": "s", "character": "Mira", "messages": messages})


# Speaker choice ----------------------------------------------------------------------------------------------


def said(text: str, *before: Message) -> list[Message]:
    return [*before, Message(role="user", content=text)]


def natural(messages: list[Message], seed: int = 1, members: list[Character] = MEMBERS, **group: object) -> list[str]:
    settings = GroupSettings(strategy="natural", **group)
    return [m.name for m in chosen_speakers(members, settings, messages, random.Random(seed))]


def test_a_mention_is_a_whole_word_of_the_name_or_nickname_in_any_case() -> None:
    assert [m.name for m in mentioned(MEMBERS, "VIVI, and you too, marlowe?", None)] == [
        "Vivienne Laurent",
        "Theo Marlowe",
    ]
    assert mentioned(MEMBERS, "Miramar is far; Theodore too.", None) == []  # not whole words
    assert mentioned(MEMBERS, "Mira?", "Mira") == []  # the banned speaker is not activated


def test_natural_puts_the_mentioned_first_and_quiet_members_speak_only_when_mentioned() -> None:
    quiet = [m.model_copy(update={"talkativeness": 0.0}) for m in MEMBERS]
    for seed in range(20):
        assert natural(said("Theo, a word?"), seed, quiet) == ["Theo Marlowe"]
        assert natural(said("Vivi and Mira, sing!"), seed)[:2] == ["Vivienne Laurent", "Mira"]


def test_natural_goes_by_talkativeness_and_always_has_someone() -> None:
    chatty = [MIRA.model_copy(update={"talkativeness": 1.0}), THEO.model_copy(update={"talkativeness": 0.05}), VIVI]
    firsts = Counter()
    for seed in range(200):
        chosen = natural(said("Evening."), seed, chatty)
        assert chosen and len(chosen) == len(set(chosen)) and "Mira" in chosen
        firsts.update(chosen)
    assert firsts["Theo Marlowe"] < firsts["Vivienne Laurent"] < firsts["Mira"] == 200
    # Nobody talkative and nobody mentioned: still one reply.
    silent = [m.model_copy(update={"talkativeness": 0.0}) for m in MEMBERS]
    assert all(len(natural(said("Evening."), seed, silent)) == 1 for seed in range(10))


def test_natural_keeps_the_last_speaker_out_unless_allowed() -> None:
    last = [Message(role="user", content="hi"), Message(role="assistant", content="Mira speaks, Mira.", name="Mira")]
    chatty = [m.model_copy(update={"talkativeness": 1.0}) for m in MEMBERS]
    for seed in range(20):
        assert "Mira" not in natural(last, seed, chatty)
        assert "Mira" in natural(last, seed, chatty, allow_self_responses=True)


def test_the_choice_is_the_same_for_the_same_seed() -> None:
    assert all(natural(said("Evening."), seed) == natural(said("Evening."), seed) for seed in range(20))
    assert len({tuple(natural(said("Evening."), seed)) for seed in range(20)}) > 1


def test_list_is_everyone_in_order_and_manual_the_given_ones() -> None:
    messages = said("hi")
    assert chosen_speakers(MEMBERS, GroupSettings(strategy="list"), messages, random.Random(1)) == MEMBERS
    manual = GroupSettings(strategy="manual", speakers=["vivienne laurent", "Mira"])
    assert chosen_speakers(MEMBERS, manual, messages, random.Random(1)) == [VIVI, MIRA]


def test_pooled_picks_one_who_has_not_spoken_since_the_users_message() -> None:
    pooled = GroupSettings(strategy="pooled")
    spoken = said("hi") + [
        Message(role="assistant", content="One.", name="Mira"),
        Message(role="assistant", content="Two.", name="Vivienne Laurent"),
    ]
    assert all(chosen_speakers(MEMBERS, pooled, spoken, random.Random(s)) == [THEO] for s in range(10))
    # Before the user's message counts for nothing: anyone may be picked.
    earlier = [*spoken, Message(role="user", content="And?")]
    picks = {chosen_speakers(MEMBERS, pooled, earlier, random.Random(s))[0].name for s in range(30)}
    assert picks == {"Mira", "Theo Marlowe", "Vivienne Laurent"}
    # Everyone has spoken: anyone but the last speaker.
    everyone = [*spoken, Message(role="assistant", content="Three.", name="Theo Marlowe")]
    picks = {chosen_speakers(MEMBERS, pooled, everyone, random.Random(s))[0].name for s in range(30)}
    assert picks == {"Mira", "Vivienne Laurent"}


# A member's prompt -------------------------------------------------------------------------------------------


def prompt(job: ChatJob, speaker: str) -> list[Message]:
    scene = scene_of(MEMBERS, speaker, job.group)
    return build_context(job, scene.speaker, budget=100_000, count=estimate_tokens, scene=scene).messages


def test_swap_holds_the_speakers_card_and_join_every_members() -> None:
    swap = prompt(group_job(), "Theo Marlowe")[0].content
    assert "Character: Theo Marlowe" in swap and "Character: Mira" not in swap
    joined = prompt(group_job(group={"card_mode": "join"}), "Theo Marlowe")[0].content
    assert all(f"Character: {m.name}" in joined for m in MEMBERS)
    assert MIRA.description.split(".")[0] in joined and VIVI.description.split(".")[0] in joined


def test_the_history_names_its_speakers_and_the_nudge_comes_last() -> None:
    job = group_job(
        messages=[
            {"role": "user", "content": "Evening, everyone."},
            {"role": "assistant", "content": "Evening, Tam.", "name": "Mira"},
        ]
    )
    messages = prompt(job, "Vivienne Laurent")
    assert [m.content for m in messages[1:3]] == ["Tam: Evening, everyone.", "Mira: Evening, Tam."]
    # Another member's lines are the user's turns from the speaker's seat; its own are the assistant's.
    assert [m.role for m in messages[1:3]] == ["user", "user"]
    assert [m.role for m in prompt(job, "Mira")[1:3]] == ["user", "assistant"]
    assert messages[-1] == Message(role="system", content="[Write the next reply only as Vivi.]")
    assert GROUP_NUDGE == "[Write the next reply only as {{char}}.]"


def test_stop_strings_are_the_users_first_then_the_other_members() -> None:
    job = group_job()
    scene = scene_of(MEMBERS, "Mira", job.group)
    stop = build_context(job, MIRA, budget=100_000, count=estimate_tokens, scene=scene).stop
    assert stop[0] == "\nTam:" and stop[-2:] == ["\nTheo:", "\nVivi:"]
    assert "\nMira:" not in stop


def test_group_macros() -> None:
    assert fill_macros("{{group}} | {{notChar}}", char="Mira", user="Tam", group=["Mira", "Theo"]) == (
        "Mira, Theo | Theo, Tam"
    )
    assert fill_macros("{{GROUP}} | {{notchar}}", char="Mira", user="Tam") == "Mira | Tam"
    card = Character(name="Odo", description="{{char}} watches {{group}}; not {{notChar}}.")
    members = [MIRA, card]
    job = group_job(characters=["Mira", card.model_dump()])
    scene = scene_of(members, "Odo", job.group)
    system = build_context(job, card, budget=100_000, count=estimate_tokens, scene=scene).messages[0].content
    assert "Odo watches Mira, Odo; not Mira, Tam." in system


# The other members' lines ------------------------------------------------------------------------------------


def test_a_reply_writing_another_members_lines_is_cut_like_the_users() -> None:
    spec = ReplySpec(job_type="chat_roleplay", char_name="Mira", user_name="Tam", others=["Theo Marlowe", "Theo"])
    reply = "*Mira wipes a mug and sets it down.* Rooms are two silver tonight.\nTheo: I'll take the one upstairs."
    verdict = validate(reply, spec, [], "stop")
    assert "speaks_for_user" in verdict.reasons and "Theo" not in verdict.cleaned
    assert verdict.cleaned.endswith("two silver tonight.")
    inline = validate("Mira nods slowly at the door. Theo Marlowe: Me too, then.", spec, [], "stop")
    assert "speaks_for_user" in inline.reasons and "Me too" not in inline.cleaned
    # Only a label is another's line: a name in the story is not.
    told = validate(
        "*Mira glances at Theo, who is lost in his papers again.* Another late night, then.", spec, [], "stop"
    )
    assert told.valid and "speaks_for_user" not in told.reasons
    # A reply that is all another member's is rejected.
    assert not validate("Theo: Hello there, everyone.", spec, [], "stop").valid


# The round's result ------------------------------------------------------------------------------------------


def attempt(number: int, text: str, valid: bool, reasons: list[str], tokens: int = 10) -> Attempt:
    sampling = ResolvedSampling(temperature=0.8, top_p=0.9, max_tokens=48, seed=number)
    result = GenerateResult(
        content=text, finish_reason="stop", prompt_tokens=0, completion_tokens=tokens, engine_ms=5.0
    )
    return Attempt(number, sampling, result, Verdict(valid=valid, reasons=reasons, cleaned=text))


def test_the_rounds_result_sums_the_speakers_and_keeps_the_first_as_content() -> None:
    mira = [attempt(1, "Rooms upstairs.", True, ["short"])]
    theo = [attempt(1, "x", False, ["too_short"]), attempt(2, "Papers everywhere, sorry.", True, [])]
    turns = [SpeakerTurn("Mira", mira, mira[0], 100), SpeakerTurn("Theo Marlowe", theo, theo[1], 120)]
    result = round_result(group_job(), turns, Timings(), late=False)
    assert result.content == "Rooms upstairs." and result.outcome == "ok"
    assert [(r.speaker, r.content, r.reasons, r.attempts) for r in result.replies] == [
        ("Mira", "Rooms upstairs.", ["short"], 1),
        ("Theo Marlowe", "Papers everywhere, sorry.", ["too_short"], 2),
    ]
    assert result.attempts == 3 and result.completion_tokens == 30 and result.prompt_tokens == 100 + 2 * 120
    assert [d.speaker for d in result.attempt_details] == ["Mira", "Theo Marlowe", "Theo Marlowe"]

    cut = [SpeakerTurn("Mira", mira, mira[0], 100), SpeakerTurn("Theo Marlowe", theo[:1], theo[0], 120, late=True)]
    late = round_result(group_job(), cut, Timings(), late=True)
    assert late.outcome == "flagged" and late.reasons[-1] == "deadline" and late.replies[1].reasons[-1] == "deadline"
    alone = round_result(group_job(), cut[:1], Timings(), late=True)
    assert alone.outcome == "flagged" and len(alone.replies) == 1 and alone.reasons == ["short", "deadline"]


def test_a_speaker_with_no_reply_is_left_out_and_the_round_flagged() -> None:
    empty = [attempt(1, "", False, ["empty"]), attempt(2, "", False, ["empty"])]
    theo = [attempt(1, "Papers everywhere, sorry.", True, [])]
    turns = [SpeakerTurn("Mira", empty, None, 100), SpeakerTurn("Theo Marlowe", theo, theo[0], 120)]
    result = round_result(group_job(), turns, Timings(), late=False)
    assert [r.speaker for r in result.replies] == ["Theo Marlowe"] and result.content == "Papers everywhere, sorry."
    assert result.outcome == "flagged" and result.attempts == 3 and "empty" in result.reasons


def test_a_group_greeting_is_the_first_group_only_one_else_the_first_message() -> None:
    card = Character(name="Odo", first_mes="Evening.", group_only_greetings=["Evening, {{group}}."])
    assert group_greeting(card, "Tam", ["Mira", "Odo"]) == "Evening, Mira, Odo."
    assert group_greeting(MIRA, "Tam", ["Mira", "Odo"]) == greeting(MIRA, "Tam")
