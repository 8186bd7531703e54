"""Emotion labels in ChatWorkflow, on Temporal's time-skipping test server with the real context builder and the
real emotion prompt, and scripted generations: the real model cannot be made to fail only the emotion's
generation on demand (an engine error that no retry mends), which is what the failure test needs; the happy path
runs on the real model in tests/workflows/test_emotion_real.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from tests.workflows.scripted import GOOD, BuildingFakes, job, reply, run_job, verdict
from workflows.activities import resolved_character
from workflows.context import build_context, estimate_tokens
from workflows.emotion import EMOTION_MAX_TOKENS, EMOTION_SCHEMA, emotion_messages
from workflows.models import (
    EmotionRequest,
    Emotions,
    ErrorType,
    GenerateRequest,
    GenerateResult,
    Message,
    Prepared,
    PrepareRequest,
)

USER_TEXT = "*slumps onto a stool* My brother never came home from the sea."
NOTE = "[Tam feels grief; Mira notices it and responds to it.]"


class EmotionFakes(BuildingFakes):
    """The real context (with the user's label) and emotion prompt; the emotion generations from their own script
    (an exception in it is raised; the last one repeats), the replies from the usual one."""

    def __init__(self, *, emotions: list[GenerateResult | Exception], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.emotions = emotions
        self.emotion_requests: list[GenerateRequest] = []
        self.order: list[str] = []  # each generation's purpose, in order

    def local_activities(self) -> list[Callable[..., Any]]:
        return [*super().local_activities(), self.emotion_prompt]

    @activity.defn(name="prepare")
    async def prepare(self, request: PrepareRequest) -> Prepared:
        self.prepare_requests.append(request)
        character = resolved_character(request.job)
        context = build_context(
            request.job, character, budget=4000, count=estimate_tokens, user_emotion=request.user_emotion
        )
        return Prepared(
            context=context, character=character, max_attempts=self.max_attempts, deadline_seconds=self.deadline_seconds
        )

    @activity.defn(name="emotion_prompt")
    async def emotion_prompt(self, request: EmotionRequest) -> list[Message]:
        text = request.reply if request.job is None else request.job.messages[-1].content
        return emotion_messages(text)

    @activity.defn(name="generate")
    async def generate(self, request: GenerateRequest) -> GenerateResult:
        self.order.append(request.purpose)
        if request.purpose != "emotion":
            return await super().generate(request)
        self.emotion_requests.append(request)
        scripted = self.emotions[min(len(self.emotion_requests) - 1, len(self.emotions) - 1)]
        if isinstance(scripted, Exception):
            raise scripted
        return scripted


def labelled(content: str) -> GenerateResult:
    return GenerateResult(content=content, finish_reason="stop", prompt_tokens=120, completion_tokens=8, engine_ms=5)


def emotion_job(**emotion: bool) -> Any:
    return job(messages=[{"role": "user", "content": USER_TEXT}], character="Mira", emotion=emotion)


async def test_the_users_label_comes_first_and_its_note_ends_the_replys_prompt(env: WorkflowEnvironment) -> None:
    fakes = EmotionFakes(max_attempts=1, emotions=[labelled('{"emotion": "grief"}'), labelled("Caring.")])
    ended = await run_job(env, fakes, chat_job=emotion_job(of_user=True, of_reply=True))
    result = ended.ok()
    assert result.content == GOOD and result.outcome == "ok" and result.attempts == 1
    assert result.emotion == Emotions(user="grief", reply="caring")
    assert fakes.order == ["emotion", "reply", "emotion"]
    [reply_request] = [r for r in fakes.generated if r.purpose == "reply"]
    assert reply_request.messages[-1] == Message(role="system", content=NOTE)
    assert [p.user_emotion for p in fakes.prepare_requests] == ["grief"]
    user, labelled_reply = fakes.emotion_requests
    assert user.messages == emotion_messages(USER_TEXT) and labelled_reply.messages == emotion_messages(GOOD)
    for request in fakes.emotion_requests:
        assert request.json_schema == EMOTION_SCHEMA and request.sampling.max_tokens == EMOTION_MAX_TOKENS
    # Not attempts: the result counts the reply's only.
    assert [d.attempt for d in result.attempt_details] == [1]


async def test_a_failed_emotion_generation_labels_neutral_and_costs_nothing_else(env: WorkflowEnvironment) -> None:
    broken = ApplicationError("the engine refused the schema", type=ErrorType.invalid_request.value, non_retryable=True)
    fakes = EmotionFakes(max_attempts=1, emotions=[broken])
    ended = await run_job(env, fakes, chat_job=emotion_job(of_user=True, of_reply=True))
    result = ended.ok()
    assert result.content == GOOD and result.outcome == "ok"
    assert result.emotion == Emotions(user="neutral", reply="neutral")
    assert fakes.order == ["emotion", "reply", "emotion"]
    # No note for neutral: the reply's prompt ends with the user's message.
    [reply_request] = [r for r in fakes.generated if r.purpose == "reply"]
    assert reply_request.messages[-1] == Message(role="user", content=USER_TEXT)
    assert ended.outcome == "ok"


async def test_only_what_was_asked_is_labelled(env: WorkflowEnvironment) -> None:
    fakes = EmotionFakes(max_attempts=1, emotions=[labelled('{"emotion": "joy"}')])
    result = (await run_job(env, fakes, chat_job=emotion_job(of_reply=True))).ok()
    assert result.emotion == Emotions(reply="joy", user=None)
    assert fakes.order == ["reply", "emotion"]
    assert [p.user_emotion for p in fakes.prepare_requests] == [None]

    plain = EmotionFakes(max_attempts=1, emotions=[labelled('{"emotion": "joy"}')])
    result = (await run_job(env, plain, chat_job=job(character="Mira"))).ok()
    assert result.emotion is None and plain.order == ["reply"]


async def test_a_reply_returned_at_the_deadline_is_labelled_neutral_without_a_generation(
    dev_env: WorkflowEnvironment,
) -> None:
    # As in test_chat_workflow_fast's deadline test: the first reply is rejected but returnable, its regeneration
    # outlives the deadline (on the dev server, in real time: keep it short).
    fakes = EmotionFakes(
        deadline_seconds=2.0,
        generate_sleeps=3600.0,
        quick_generations=1,
        replies=[reply("first")],
        verdicts=[verdict(["too_short"], cleaned="first")],
        emotions=[labelled('{"emotion": "joy"}')],
    )
    result = (await run_job(dev_env, fakes, chat_job=emotion_job(of_reply=True))).ok()
    assert result.outcome == "flagged" and result.content == "first" and "deadline" in result.reasons
    assert result.emotion == Emotions(reply="neutral")
    assert fakes.order == ["reply", "reply"] and fakes.emotion_requests == []
