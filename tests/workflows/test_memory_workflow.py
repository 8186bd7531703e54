"""Story memory in ChatWorkflow, on Temporal's test servers with the real context builder, the real summary
prompt and the real summary validation (workflows.context, workflows.memory, workflows.summary_validation; the
estimate as the tokenizer), and a scripted generation: the real model cannot be made to write a scene
continuation instead of a summary on demand, and these tests need exactly that (tests/workflows/
test_memory_real.py runs the same path on the real model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from tests.helpers import long_chat
from tests.workflows.scripted import GOOD, BuildingFakes, job, run_job
from workflows.activities import resolved_character
from workflows.context import build_context, estimate_tokens
from workflows.memory import summary_prompt
from workflows.models import (
    GenerateRequest,
    GenerateResult,
    JobType,
    Memory,
    Message,
    Prepared,
    PrepareRequest,
    SummaryCheck,
    SummaryPrompt,
    SummaryRequest,
    generate_task_queue,
)
from workflows.summary_validation import validate_summary

BUDGET = 900
SUMMARY = "Tam came in from the storm and asked Mira about the harbour; Mira talked about the tide and the bell."
SCENE = "Mira: *wipes the bar* You look soaked, Tam. I'll fetch you a towel."
FACT = "Tam is allergic to saffron."


def summary(content: str) -> GenerateResult:
    return GenerateResult(content=content, finish_reason="stop", prompt_tokens=300, completion_tokens=30, engine_ms=5)


class MemoryFakes(BuildingFakes):
    """The real context (at BUDGET), the real summary prompt and check; generations scripted, replies and
    summaries each from their own script (the last one repeats)."""

    def __init__(self, *, summaries: list[GenerateResult], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.summaries = summaries
        self.summary_requests: list[GenerateRequest] = []
        self.reply_requests: list[GenerateRequest] = []
        self.summary_prompts: list[SummaryPrompt] = []

    @activity.defn(name="prepare")
    async def prepare(self, request: PrepareRequest) -> Prepared:
        character = resolved_character(request.job)
        context = build_context(request.job, character, budget=BUDGET, count=estimate_tokens)
        return Prepared(
            context=context,
            character=character,
            max_attempts=self.max_attempts,
            deadline_seconds=60,
            max_tokens_cap=2048,
        )

    def local_activities(self) -> list[Callable[..., Any]]:
        return [*super().local_activities(), self.prepare_summary, self.check_summary]

    @activity.defn(name="prepare_summary")
    async def prepare_summary(self, request: SummaryRequest) -> SummaryPrompt:
        character = resolved_character(request.job)
        prompt = summary_prompt(
            request.job, character, request.memory, request.until, budget=1500, count=estimate_tokens
        )
        self.summary_prompts.append(prompt)
        return prompt

    @activity.defn(name="check_summary")
    async def check_summary(self, check: SummaryCheck) -> Any:
        return validate_summary(check)

    @activity.defn(name="generate")
    async def generate(self, request: GenerateRequest) -> GenerateResult:
        if request.purpose == "summary":
            self.summary_requests.append(request)
            return self.summaries[min(len(self.summary_requests), len(self.summaries)) - 1]
        self.reply_requests.append(request)
        return await super().generate(request)


async def ended_with(environment: WorkflowEnvironment, fakes: MemoryFakes, chat_job: Any) -> Any:
    return await run_job(environment, fakes, chat_job=chat_job)


def long_job(memory: Memory | None, **more: object) -> Any:
    return job(messages=[m.model_dump() for m in long_chat(40)], character="Mira", memory=memory, **more)


def window_start(chat_job: Any) -> int:
    context = build_context(chat_job, resolved_character(chat_job), budget=BUDGET, count=estimate_tokens)
    assert context.window is not None
    return context.window.first_message


async def test_a_dropped_window_is_summarised_after_the_reply_and_covers_advances(
    dev_env: WorkflowEnvironment,  # noqa: F811 (fixture)
) -> None:
    chat_job = long_job(Memory(facts=[FACT]), priority=2, user_id="reader-9")
    start = window_start(chat_job)
    assert start > 0
    fakes = MemoryFakes(summaries=[summary(SUMMARY)])
    ended = await ended_with(dev_env, fakes, chat_job)
    result = ended.ok()
    assert result.content == GOOD and result.attempts == 1  # summaries are not the reply's attempts
    assert result.memory == Memory(summary=SUMMARY, facts=[FACT], covers=start)
    # The summary's input: the messages the window dropped, from the first one, in steps of what fits one
    # prompt (the summary budget); each step merges the summary before it.
    steps = fakes.summary_requests
    assert len(steps) == len(fakes.summary_prompts) >= 2
    assert "Turn 0:" in steps[0].messages[-1].content
    assert f"The summary so far:\n{SUMMARY}" in steps[1].messages[-1].content
    summarised = "\n".join(r.messages[-1].content for r in steps)
    assert all(m.content in summarised for m in chat_job.messages[:start])
    assert chat_job.messages[start].content not in summarised
    assert [p.covers for p in fakes.summary_prompts][-1] == start
    assert all(r.stop == fakes.summary_prompts[0].stop and r.stop for r in steps)
    # A generation like any: the generate activity on the generation queue, after the reply, one level below the
    # job's, with the job's fairness key.
    history = await dev_env.client.get_workflow_handle(ended.workflow_id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [s.activity_type.name for s in scheduled] == ["generate"] * (1 + len(steps))
    workflow_queue = history.events[0].workflow_execution_started_event_attributes.task_queue.name
    assert {s.task_queue.name for s in scheduled} == {generate_task_queue(workflow_queue)}
    assert [s.priority.priority_key for s in scheduled] == [2] + [3] * len(steps)
    assert {s.priority.fairness_key for s in scheduled} == {"reader-9"}
    # The next job carries the new memory: its context holds the summary and asks for no summary.
    follow_up = chat_job.model_copy(update={"memory": result.memory})
    context = build_context(follow_up, resolved_character(follow_up), budget=BUDGET, count=estimate_tokens)
    assert context.memory is not None and context.memory.summarize_until is None
    assert SUMMARY in context.messages[0].content


async def test_a_scene_continuation_for_a_summary_is_rejected_and_the_old_memory_kept(
    env: WorkflowEnvironment,  # noqa: F811 (fixture)
) -> None:
    old = Memory(summary="Tam arrived at the inn on a stormy night.", facts=[FACT], covers=0)
    fakes = MemoryFakes(summaries=[summary(SCENE)], max_attempts=3)
    result = (await ended_with(env, fakes, long_job(old))).ok()
    assert result.content == GOOD and result.outcome == "ok"
    assert result.memory == old
    assert len(fakes.summary_requests) == 3
    seeds = [r.sampling.seed for r in fakes.summary_requests]
    assert len(set(seeds)) == 3  # retried with a new seed each time
    temperatures = [r.sampling.temperature for r in fakes.summary_requests]
    assert temperatures == sorted(temperatures) and temperatures[0] < temperatures[-1]


async def test_a_summary_that_passes_on_a_later_attempt_is_kept(env: WorkflowEnvironment) -> None:  # noqa: F811
    fakes = MemoryFakes(summaries=[summary(SCENE), summary("")] + [summary(SUMMARY)])
    chat_job = long_job(Memory())
    result = (await ended_with(env, fakes, chat_job)).ok()
    assert result.memory == Memory(summary=SUMMARY, covers=window_start(chat_job))
    first_step = fakes.summary_requests[:3]
    assert first_step[0].messages == first_step[2].messages  # the same step, tried three times
    assert len(fakes.summary_requests) == len(fakes.summary_prompts) + 2  # the later steps passed at once


async def test_a_job_without_memory_gets_no_summary(env: WorkflowEnvironment) -> None:  # noqa: F811
    fakes = MemoryFakes(summaries=[summary(SUMMARY)])
    result = (await ended_with(env, fakes, long_job(None))).ok()
    assert result.memory is None and fakes.summary_requests == []


async def test_no_summary_while_the_window_starts_within_what_the_summary_covers(
    env: WorkflowEnvironment,  # noqa: F811 (fixture)
) -> None:
    chat_job = long_job(Memory())
    covered = chat_job.model_copy(update={"memory": Memory(summary=SUMMARY, covers=window_start(chat_job))})
    fakes = MemoryFakes(summaries=[summary(SUMMARY)])
    result = (await ended_with(env, fakes, covered)).ok()
    assert result.memory == covered.memory and fakes.summary_requests == []


async def test_chat_summarize_returns_the_summary_as_content_and_memory(env: WorkflowEnvironment) -> None:  # noqa: F811
    messages = [Message(role="user", content="I hid the compass."), Message(role="assistant", content="Safe.")]
    chat_job = job(job_type=JobType.summarize, messages=messages, character="Mira")
    fakes = MemoryFakes(summaries=[summary(SCENE), summary(f"Summary: {SUMMARY}")])
    result = (await ended_with(env, fakes, chat_job)).ok()
    assert result.content == SUMMARY and result.memory == Memory(summary=SUMMARY, covers=2)
    assert result.attempts == 2 and result.returned_attempt == 2
    assert [a.valid for a in result.attempt_details] == [False, True]
    assert fakes.reply_requests == []
    assert "I hid the compass." in fakes.summary_requests[0].messages[-1].content


async def test_chat_summarize_with_no_valid_summary_returns_the_best_flagged_and_keeps_the_memory(
    env: WorkflowEnvironment,  # noqa: F811
) -> None:
    chat_job = job(job_type=JobType.summarize, character="Mira", memory=Memory(summary=SUMMARY))
    fakes = MemoryFakes(summaries=[summary(SCENE)], max_attempts=2)
    result = (await ended_with(env, fakes, chat_job)).ok()
    assert result.outcome == "flagged" and "scene" in result.reasons
    assert (
        result.content
        == validate_summary(
            SummaryCheck(summary=SCENE, finish_reason="stop", char_name="Mira", user_name=chat_job.user_name)
        ).cleaned
    )
    assert result.memory == chat_job.memory  # a bad summary never becomes memory


async def test_chat_summarize_with_nothing_returnable_fails(env: WorkflowEnvironment) -> None:  # noqa: F811
    chat_job = job(job_type=JobType.summarize, character="Mira", memory=Memory(summary=SUMMARY))
    fakes = MemoryFakes(summaries=[summary("")], max_attempts=2)
    failure = (await ended_with(env, fakes, chat_job)).failed()
    assert failure.type == "NoValidReply" and "empty" in failure.message
    assert SUMMARY not in failure.message
