"""Emotion labels' pure parts and the emotion_prompt activity's checks, no servers: the label list and its schema,
the lenient reading of the model's output, the classification prompt, the note on the user's emotion in the
context, and the jobs that may ask for labels."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from characters import Character, bundled_character, describe_validation_error
from workflows.activities import JobActivities
from workflows.context import ContextTooLarge, build_context, estimate_tokens
from workflows.emotion import (
    EMOTION_SCHEMA,
    EMOTION_TEXT_CHARS,
    EMOTIONS,
    emotion_label,
    emotion_messages,
    user_emotion_note,
)
from workflows.models import ChatJob, ChatResult, EmotionRequest, EngineLimits, JobLimits, Message, Reminder
from workflows.policy import Policy, Rule

GO_EMOTIONS = (
    "admiration amusement anger annoyance approval caring confusion curiosity desire disappointment disapproval "
    "disgust embarrassment excitement fear gratitude grief joy love nervousness optimism pride realization relief "
    "remorse sadness surprise neutral"
).split()
CHAT = [
    {"role": "user", "content": "*pushes the door open* Evening, Mira. Any rooms left tonight?"},
    {"role": "assistant", "content": '"One room left, under the eaves," Mira says.'},
    {"role": "user", "content": "*slumps onto a stool* My brother never came home from the sea."},
]


def test_the_labels_are_go_emotions_28_and_the_schema_allows_only_them() -> None:
    assert list(EMOTIONS) == GO_EMOTIONS and len(EMOTIONS) == 28
    assert EMOTION_SCHEMA["properties"]["emotion"]["enum"] == GO_EMOTIONS
    assert EMOTION_SCHEMA["required"] == ["emotion"] and EMOTION_SCHEMA["additionalProperties"] is False


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ('{"emotion": "grief"}', "grief"),  # what the constrained decoding writes
        ('{ "emotion" : "Sadness" }', "sadness"),
        ('{"label": "fear"}', "fear"),  # one string value under another key
        ('"curiosity"', "curiosity"),  # a JSON string
        ("joy", "joy"),
        ("  NERVOUSNESS.\n", "nervousness"),
        ("The emotion expressed is most likely gratitude, with some relief.", "gratitude"),  # the first label
        ("She sounds happy", "joy"),  # a synonym
        ("scared", "fear"),
        ('{"emotion": "angry"}', "anger"),
        ('{"emotion": "embarr', None),  # cut off: nothing that is a label
        ("", None),
        ("I cannot tell.", None),
        ('{"emotion": 3}', None),
        ("[1, 2]", None),
    ],
)
def test_the_output_is_read_leniently(output: str, label: str | None) -> None:
    assert emotion_label(output) == label


def test_the_prompt_holds_the_text_s_end_and_names_every_label() -> None:
    text = "x" * EMOTION_TEXT_CHARS + "My brother never came home."
    system, user = emotion_messages(text)
    assert system.role == "system" and all(label in system.content for label in EMOTIONS)
    assert user == Message(role="user", content=text[-EMOTION_TEXT_CHARS:])
    assert user.content.endswith("My brother never came home.")


def test_neutral_gives_no_note() -> None:
    assert user_emotion_note("neutral") is None
    assert user_emotion_note("grief") == "[{{user}} feels grief; {{char}} notices it and responds to it.]"


def roleplay_job(**overrides: object) -> ChatJob:
    return ChatJob.model_validate(
        {"job_id": "e", "messages": CHAT, "character": "Mira", "user_name": "Tam", **overrides}
    )


def test_the_note_goes_after_the_history_leaving_the_prompt_before_it_unchanged() -> None:
    mira = bundled_character("Mira")
    job = roleplay_job(emotion={"of_user": True})
    plain = build_context(job, mira, budget=100_000, count=estimate_tokens)
    noted = build_context(job, mira, budget=100_000, count=estimate_tokens, user_emotion="grief")
    # The engine's cached prefix holds: the same messages, one more at the end.
    assert noted.messages[:-1] == plain.messages
    assert noted.messages[-1] == Message(
        role="system", content="[Tam feels grief; Mira notices it and responds to it.]"
    )
    assert noted.insertions[-1].model_dump() == {
        "kind": "user_emotion",
        "label": "user_emotion",
        "message": len(noted.messages) - 1,
        "depth": 0,
    }
    assert noted.prompt_tokens > plain.prompt_tokens
    neutral = build_context(job, mira, budget=100_000, count=estimate_tokens, user_emotion="neutral")
    assert neutral.messages == plain.messages


def test_the_note_comes_before_a_reminder_and_after_post_history_instructions() -> None:
    mira = bundled_character("Mira").model_copy(update={"post_history_instructions": "[Stay in the inn.]"})
    job = roleplay_job(character=mira.model_dump(), emotion={"of_user": True})
    built = build_context(
        job, mira, budget=100_000, count=estimate_tokens, reminders=[Reminder.own_reply], user_emotion="fear"
    )
    kinds = [i.kind for i in built.insertions if i.depth == 0]
    assert kinds == ["post_history_instructions", "user_emotion", "reminder"]
    assert built.messages[-2].content == "[Tam feels fear; Mira notices it and responds to it.]"


def smallest_budget(job: ChatJob, character: Character) -> int:
    """The smallest budget the job's context fits without the note (the newest turn and what must go in)."""
    low, high = 1, 100_000
    while low < high:
        middle = (low + high) // 2
        try:
            build_context(job, character, budget=middle, count=estimate_tokens)
        except ContextTooLarge:
            low = middle + 1
        else:
            high = middle
    return low


def test_the_note_goes_out_when_the_newest_turn_leaves_it_no_room_and_older_turns_first() -> None:
    mira = bundled_character("Mira")
    job = roleplay_job(emotion={"of_user": True})
    plain = build_context(job, mira, budget=100_000, count=estimate_tokens)
    # Older turns go before the note does.
    roomy = build_context(job, mira, budget=plain.prompt_tokens + 1, count=estimate_tokens, user_emotion="grief")
    assert roomy.insertions[-1].kind == "user_emotion" and roomy.dropped.history_messages > 0
    smallest = smallest_budget(job, mira)
    tight = build_context(job, mira, budget=smallest, count=estimate_tokens, user_emotion="grief")
    assert "user_emotion" not in [i.kind for i in tight.insertions]
    assert tight.messages[-1] == Message(**CHAT[-1])


@pytest.mark.parametrize(
    "emotion",
    [{"of_reply": True}, {"of_user": True}, {"of_reply": True, "of_user": True}, {}],
)
@pytest.mark.parametrize("job_type", ["chat_roleplay", "chat_conversation", "chat_unrestricted"])
def test_chat_jobs_take_emotion(emotion: dict[str, bool], job_type: str) -> None:
    job = roleplay_job(job_type=job_type, emotion=emotion)
    assert ChatJob.model_validate_json(job.model_dump_json()) == job


def test_a_continuation_or_an_impersonation_may_label_its_reply() -> None:
    for mode in ("continue", "impersonate"):
        job = roleplay_job(mode=mode, messages=CHAT[:2], emotion={"of_reply": True})
        assert job.emotion is not None and job.emotion.of_reply


GROUP = {"characters": ["Mira", {"name": "Bram"}], "character": None}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"emotion": {"of_reply": "true"}}, "job.emotion.of_reply"),  # strict: a string is a mistake
        ({"emotion": {"of_user": 1}}, "job.emotion.of_user"),
        ({"emotion": {"of_mood": True}}, "job.emotion.of_mood"),
        ({"emotion": True}, "job.emotion"),
        ({"emotion": {"of_reply": True}, "job_type": "chat_enhance"}, "job.emotion"),
        ({"emotion": {"of_reply": True}, "job_type": "chat_summarize"}, "job.emotion"),
        ({"emotion": {"of_reply": True}, **GROUP}, "job.emotion"),
        ({"emotion": {"of_user": True}, "mode": "continue", "messages": CHAT[:2]}, "job.emotion.of_user"),
        ({"emotion": {"of_user": True}, "mode": "impersonate", "messages": CHAT[:2]}, "job.emotion.of_user"),
    ],
)
def test_emotion_that_does_not_fit_the_job_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        roleplay_job(**change)
    assert f"{field}:" in describe_validation_error(error.value, "job")


def test_the_result_and_job_schemas_show_emotion() -> None:
    job = ChatJob.model_json_schema()
    result = ChatResult.model_json_schema()
    defs = {**job["$defs"], **result["$defs"]}
    assert set(defs["EmotionOptions"]["properties"]) == {"of_reply", "of_user"}
    assert defs["Emotions"]["properties"]["reply"]["anyOf"][0]["enum"] == GO_EMOTIONS
    assert "emotion" in job["properties"] and "emotion" in result["properties"]
    json.dumps([job, result])


class EstimateCounter:
    async def count_many(self, texts: list[str]) -> dict[str, int]:
        return {text: estimate_tokens(text) for text in texts}


def job_activities(policy: Policy) -> JobActivities:
    limits = EngineLimits(max_input_tokens=2048, max_total_tokens=4096, margin_tokens=64)
    return JobActivities(JobLimits(), limits, EstimateCounter(), policy)


async def test_the_users_text_is_classified_only_when_the_job_passes_its_checks() -> None:
    forbidding = Policy(patterns=[Rule(pattern="brother")])
    request = EmotionRequest(job=roleplay_job(emotion={"of_user": True}))
    with pytest.raises(ApplicationError) as error:
        await ActivityEnvironment().run(job_activities(forbidding).emotion_prompt, request)
    assert error.value.type == "InvalidJob" and "job.messages.2.content" in error.value.message
    unknown = EmotionRequest(job=roleplay_job(character="Nobody", emotion={"of_user": True}))
    with pytest.raises(ApplicationError) as error:
        await ActivityEnvironment().run(job_activities(Policy()).emotion_prompt, unknown)
    assert error.value.type == "InvalidJob" and "job.character" in error.value.message
    prompt = await ActivityEnvironment().run(job_activities(Policy()).emotion_prompt, request)
    assert prompt == emotion_messages(CHAT[-1]["content"])
    # A reply is classified as it is: the job passed its checks before it was written.
    reply = EmotionRequest(reply="*pours a drink* I'm sorry, Tam.")
    assert await ActivityEnvironment().run(job_activities(forbidding).emotion_prompt, reply) == emotion_messages(
        "*pours a drink* I'm sorry, Tam."
    )
