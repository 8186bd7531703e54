"""ChatWorkflow with its activities replaced by scripted fakes, on Temporal's time-skipping test server (and
one test on the dev server: see `dev_env`). No engine, no model, no shared stack: each test runs the real
workflow code against fakes registered under the real activity names and types (`prepare`, `check_reply` as
local activities on the workflow's queue, `generate` on `{queue}-generate`), and reads
how the job ended as a client does: its result or failure, its stream, its Outcome search attribute (the kit:
tests/workflows/scripted.py; the servers: tests/workflows/conftest.py)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    ServerError,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.helpers import local_activity_markers
from tests.workflows.scripted import (
    GOOD,
    BuildingFakes,
    Fakes,
    generation_summaries,
    job,
    metrics_kept,
    reply,
    run_job,
    verdict,
)
from workflows.activities import CheckRequest
from workflows.chat import ChatWorkflow, ended_by, generation_priority, summary_priority
from workflows.context import stop_sequences
from workflows.models import (
    DEFAULT_PRIORITY,
    CancelledEvent,
    ChatResult,
    DoneEvent,
    ErrorType,
    FailedEvent,
    GenerateResult,
    Message,
    Reminder,
)
from workflows.sampling import IMPERSONATE_MAX_TOKENS
from workflows.search_attributes import JOB_TYPE
from workflows.validation import Verdict, validate


async def test_one_attempt_with_a_valid_reply(env: WorkflowEnvironment) -> None:
    fakes = Fakes(max_attempts=1)
    ended = await run_job(env, fakes)
    result = ended.ok()
    assert result.outcome == "ok" and result.content == GOOD
    assert result.attempts == 1 == len(result.attempt_details) and result.returned_attempt == 1
    assert result.reasons == [] and result.attempt_details[0].valid
    assert [r.attempt for r in fakes.generated] == [1]
    assert len(fakes.metrics) == 1 and fakes.metrics[0].outcome == "ok" and fakes.metrics[0].attempts == 1
    assert ended.final_events == ended.events[-1:] and ended.events[-1] == DoneEvent(result=result)
    assert ended.outcome == "ok"


async def test_every_attempt_rejected_returns_the_best_one_flagged(env: WorkflowEnvironment) -> None:
    replies: list[GenerateResult | Exception] = [reply("first"), reply("second"), reply("third")]
    verdicts: list[Verdict | Exception] = [
        verdict(["out_of_character", "repetitive"], cleaned="first"),
        verdict(["too_short"], cleaned="second"),
        verdict(["out_of_character", "echoes_history"], cleaned="third"),
    ]
    ended = await run_job(env, Fakes(max_attempts=3, replies=replies, verdicts=verdicts))
    result = ended.ok()
    assert result.outcome == "flagged"
    assert result.returned_attempt == 2 and result.content == "second"  # the fewest problems
    assert result.reasons == ["out_of_character", "repetitive", "too_short", "echoes_history"]
    assert result.attempts == 3 == len(result.attempt_details)
    assert [(a.attempt, a.valid, a.reasons) for a in result.attempt_details] == [
        (1, False, ["out_of_character", "repetitive"]),
        (2, False, ["too_short"]),
        (3, False, ["out_of_character", "echoes_history"]),
    ]
    assert ended.outcome == "flagged"


@pytest.mark.parametrize(
    "rejected",
    [verdict(["policy"], cleaned="something forbidden"), verdict(["empty"], cleaned="")],
    ids=["policy", "empty"],
)
async def test_every_attempt_unreturnable_fails_with_no_valid_reply(
    env: WorkflowEnvironment, rejected: Verdict
) -> None:
    fakes = Fakes(max_attempts=2, verdicts=[rejected])
    ended = await run_job(env, fakes)
    error = ended.failed()
    assert error.type == ErrorType.no_valid_reply.value
    assert f"in 2 attempts (reasons: {rejected.reasons[0]}, {rejected.reasons[0]})" in error.message
    assert len(fakes.generated) == 2 and fakes.metrics == []
    assert ended.final_events == ended.events[-1:]
    assert ended.events[-1] == FailedEvent(error_type=ErrorType.no_valid_reply.value, message=error.message)
    assert ended.outcome == "failed"


async def test_at_the_deadline_the_best_rejected_reply_so_far_is_returned_flagged(dev_env: WorkflowEnvironment) -> None:
    # The first reply is rejected but returnable; its regeneration outlives the deadline (a backlog, say).
    fakes = Fakes(
        deadline_seconds=2.0,
        generate_sleeps=3600.0,
        quick_generations=1,
        replies=[reply("first")],
        verdicts=[verdict(["too_short"], cleaned="first")],
    )
    result = (await run_job(dev_env, fakes)).ok()
    assert result.outcome == "flagged" and result.content == "first" and result.returned_attempt == 1
    assert result.reasons == ["too_short", "deadline"]
    assert result.attempts == 1 == len(result.attempt_details) and len(fakes.generated) == 2
    assert len(fakes.metrics) == 1 and fakes.metrics[0].reasons == ["too_short", "deadline"]


async def test_a_generation_past_the_deadline_fails_with_deadline(dev_env: WorkflowEnvironment) -> None:
    # On the dev server (see `dev_env`), so the deadline passes in real time: keep it short. The fake generation
    # would run for an hour.
    fakes = Fakes(deadline_seconds=1.0, generate_sleeps=3600.0)
    ended = await run_job(dev_env, fakes)
    assert ended.failed().type == ErrorType.deadline.value
    assert len(fakes.generated) == 1 and fakes.checked == [] and fakes.metrics == []
    assert [e.type for e in ended.final_events] == ["failed"] and ended.outcome == "failed"


async def test_a_job_failing_in_prepare_still_shows_its_job_type(env: WorkflowEnvironment) -> None:
    invalid = ApplicationError("invalid job: job.character: no such character", type="InvalidJob", non_retryable=True)
    ended = await run_job(env, Fakes(prepare_error=invalid))
    assert ended.failed().type == "InvalidJob" and ended.outcome == "failed"
    description = await env.client.get_workflow_handle(ended.workflow_id).describe()
    assert description.typed_search_attributes.get(JOB_TYPE) == "chat_roleplay"


async def test_the_reply_s_unstreamed_end_is_published_by_the_workflow_before_done(env: WorkflowEnvironment) -> None:
    # The fake generate streams nothing itself: its result says the activity sent the first 9 characters.
    streamed = reply().model_copy(update={"streamed_chars": 9})
    ended = await run_job(env, Fakes(max_attempts=1, replies=[streamed]))
    assert [(e.type, getattr(e, "text", None)) for e in ended.events] == [("delta", GOOD[9:]), ("done", None)]
    # A result from before streamed_chars (its activity sent every delta): nothing more is published.
    ended = await run_job(env, Fakes(max_attempts=1, replies=[reply()]))
    assert [e.type for e in ended.events] == ["done"]


async def test_an_engine_down_until_the_deadline_fails_with_deadline(dev_env: WorkflowEnvironment) -> None:
    # On the dev server, in real time: keep the deadline short. Temporal stops retrying when the next try would
    # start after the deadline (the generation's schedule-to-close timeout), before the deadline itself: that
    # too is the deadline, not the engine's error.
    down = ApplicationError("cannot reach the engine", type=ErrorType.engine_unavailable.value)
    fakes = Fakes(deadline_seconds=4.0, replies=[down])
    ended = await run_job(dev_env, fakes)
    assert ended.failed().type == ErrorType.deadline.value
    assert len(fakes.generated) > 1 and fakes.checked == [] and fakes.metrics == []  # retried, never checked
    assert [e.type for e in ended.final_events] == ["failed"] and ended.outcome == "failed"


async def test_a_cancelled_job_ends_cancelled(env: WorkflowEnvironment) -> None:
    fakes = Fakes(generate_sleeps=3600.0)

    async def cancel_once_generating(handle: WorkflowHandle[ChatWorkflow, ChatResult]) -> None:
        await fakes.generating.wait()
        await handle.cancel()

    ended = await run_job(env, fakes, while_running=cancel_once_generating)
    assert isinstance(ended.error, CancelledError)
    assert ended.final_events == ended.events[-1:] and ended.events[-1] == CancelledEvent()
    assert ended.outcome == "cancelled"


async def test_a_context_shrink_is_not_an_attempt(env: WorkflowEnvironment) -> None:
    too_long = ApplicationError(
        "inputs tokens + max_new_tokens must be <= 2048", type="InputTooLong", non_retryable=True
    )
    fakes = Fakes(max_attempts=1, replies=[too_long, reply()])
    ended = await run_job(env, fakes)
    result = ended.ok()
    assert result.outcome == "ok" and result.content == GOOD
    assert result.attempts == 1 == len(result.attempt_details) and result.returned_attempt == 1
    assert fakes.budget_shares == [1.0, 0.75]  # the context was built again, smaller
    assert [r.attempt for r in fakes.generated] == [1, 1]  # the same attempt, on the smaller context
    assert await generation_summaries(env.client, ended.workflow_id) == ["roleplay · 1 turn · attempt 1"] * 2


@pytest.mark.parametrize(
    ("fields", "keys", "fairness_key"),
    [
        ({}, [DEFAULT_PRIORITY, 2, 2, 2], ""),  # no user_id: the one key every such job shares
        ({"priority": 5, "user_id": "tenant-7:u.42"}, [5, 4, 4, 4], "tenant-7:u.42"),
        ({"priority": 1, "user_id": "u1"}, [1, 1, 1, 1], "u1"),
    ],
)
async def test_later_generations_queue_one_priority_level_above_the_first_with_the_users_fairness_key(
    dev_env: WorkflowEnvironment, fields: dict[str, object], keys: list[int], fairness_key: str
) -> None:
    # The dev server (the test server keeps no priority in its history): a shrink's retry, a regeneration
    # after a rejected reply, and its regeneration; each a generate activity scheduled with its priority.
    too_long = ApplicationError(
        "inputs tokens + max_new_tokens must be <= 2048", type="InputTooLong", non_retryable=True
    )
    fakes = Fakes(
        max_attempts=3,
        replies=[too_long, reply("first"), reply("second"), reply()],
        verdicts=[verdict(["out_of_character"], cleaned="first"), verdict(["too_short"], cleaned="second"), verdict()],
    )
    ended = await run_job(dev_env, fakes, chat_job=job(**fields))
    assert ended.ok().outcome == "ok" and [r.attempt for r in fakes.generated] == [1, 1, 2, 3]
    history = await dev_env.client.get_workflow_handle(ended.workflow_id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [s.activity_type.name for s in scheduled] == ["generate"] * 4
    assert [s.priority.priority_key for s in scheduled] == keys
    assert [s.priority.fairness_key for s in scheduled] == [fairness_key] * 4
    assert DEFAULT_PRIORITY == 3


def test_a_later_generation_is_one_level_higher_never_above_the_highest() -> None:
    assert [generation_priority(p, later=False).priority_key for p in range(1, 6)] == [1, 2, 3, 4, 5]
    assert [generation_priority(p, later=True).priority_key for p in range(1, 6)] == [1, 1, 2, 3, 4]


def test_a_reply_jobs_summary_is_one_level_below_the_job_never_below_the_lowest() -> None:
    assert [summary_priority(p).priority_key for p in range(1, 6)] == [2, 3, 4, 5, 5]
    assert summary_priority(2, "u1").fairness_key == "u1"


async def test_metrics_that_cannot_be_recorded_do_not_cost_the_reply(
    env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    fakes = Fakes(metrics_error=OSError("the log sink is gone"))
    with caplog.at_level(logging.WARNING, logger="temporalio.workflow"):
        ended = await run_job(env, fakes)
    assert ended.ok().outcome == "ok" and ended.ok().content == GOOD
    assert [e.type for e in ended.final_events] == ["done"] and ended.outcome == "ok"
    assert fakes.metrics == []
    warnings = [r.getMessage() for r in caplog.records if "metrics not recorded" in r.getMessage()]
    assert len(warnings) == 1 and "OSError" in warnings[0]


async def test_the_workflow_writes_the_metrics_record_once_and_never_on_replay(env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    ended = await run_job(env, fakes)
    assert [m.job_id for m in fakes.metrics] == [ended.ok().job_id]
    history = await env.client.get_workflow_handle(ended.workflow_id).fetch_history()
    assert local_activity_markers(history) == 2  # prepare, check_reply: no record_metrics
    with metrics_kept(fakes):
        replayed = await Replayer(workflows=[ChatWorkflow], data_converter=env.client.data_converter).replay_workflow(
            history, raise_on_replay_failure=False
        )
    assert replayed.replay_failure is None
    assert len(fakes.metrics) == 1


async def test_a_check_that_keeps_failing_ends_the_job_failed(env: WorkflowEnvironment) -> None:
    broken = ApplicationError("the policy file cannot be read", type="PolicyUnavailable", non_retryable=True)
    fakes = Fakes(verdicts=[broken])
    # temporalio 1.35 hands a local activity's ApplicationError to the workflow as it was raised, not wrapped
    # in an ActivityError.
    ended = await run_job(env, fakes)
    assert [e.type for e in ended.final_events] == ["failed"] and ended.events[-1].type == "failed"
    assert ended.events[-1].error_type == "PolicyUnavailable"
    assert ended.outcome == "failed"
    # The workflow's own failure: a non-retryable ApplicationError keeping the activity's error type.
    error = ended.failed()
    assert error.type == "PolicyUnavailable" and error.non_retryable and error.message == broken.message


@pytest.mark.parametrize(
    "check",
    [
        {"verdicts": [ApplicationError("the policy file cannot be read", type="PolicyUnavailable")]},
        {"check_sleeps": 3600.0},
    ],
    ids=["keeps-failing", "runs-past-the-deadline"],
)
async def test_the_deadline_while_checking_the_reply_ends_the_job_failed(
    env: WorkflowEnvironment, check: dict[str, Any]
) -> None:
    # check_reply (a local activity) is retried or runs until the deadline cancels it, in
    # real time: a local activity holds the workflow task open, and no time is skipped meanwhile. A short
    # workflow task timeout makes the worker report the deadline's timer sooner (it heartbeats the task at 80%
    # of its timeout).
    fakes = Fakes(deadline_seconds=1.0, **check)
    ended = await run_job(env, fakes, task_timeout=timedelta(seconds=1))
    assert not isinstance(ended.error, CancelledError), "nobody cancelled the job: its deadline passed"
    assert ended.failed().type == ErrorType.deadline.value
    assert [e.type for e in ended.final_events] == ["failed"] and ended.events[-1].type == "failed"
    assert ended.events[-1].error_type == ErrorType.deadline.value
    assert ended.outcome == "failed"
    assert len(fakes.generated) == 1 and len(fakes.checked) >= 1 and fakes.metrics == []


def local_activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "Local Activity timed out",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type="record_metrics",
        activity_id="3",
        retry_state=None,
    )
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "error_type", "message"),
    [
        (
            local_activity_error(
                TemporalTimeoutError("Activity timed out", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
            ),
            "TimeoutError",
            "Local Activity timed out: Activity timed out",
        ),
        (
            local_activity_error(ApplicationError("the policy file cannot be read", type="PolicyUnavailable")),
            "PolicyUnavailable",
            "the policy file cannot be read",
        ),
        (ServerError("history service unavailable", non_retryable=False), "ServerError", "history service unavailable"),
    ],
    ids=["activity-timeout", "activity-error", "other"],
)
def test_a_temporal_failure_no_stage_handled_ends_the_job_with_a_named_failure(
    error: FailureError, error_type: str, message: str
) -> None:
    # What `run` fails the workflow with, and puts in the `failed` event, for a Temporal failure other than the
    # workflow's own ApplicationError. No fake ends a job this way today: temporalio 1.35 hands a local
    # activity's ApplicationError over unwrapped, and the stages convert their activities' failures.
    ended = ended_by(error)
    assert (ended.type, ended.message, ended.non_retryable) == (error_type, message, True)


async def test_after_speaking_for_the_user_the_next_generation_has_the_reminder_last_and_the_stops(
    env: WorkflowEnvironment,
) -> None:
    rejected = verdict(["speaks_for_user", "too_short"], cleaned="Hm.")
    fakes = BuildingFakes(verdicts=[rejected, rejected, verdict()])
    result = (await run_job(env, fakes, chat_job=job(character="Mira"))).ok()
    assert result.outcome == "ok" and result.attempts == 3
    first, second, third = fakes.generated
    own_reply = Message(role="system", content="[Write only Mira's reply; do not write Tam's words or actions.]")
    assert own_reply not in first.messages and first.messages[-1].role == "user"
    assert second.messages == [*first.messages, own_reply] == third.messages
    assert first.stop == second.stop == stop_sequences("Tam")  # the user's names, from the first attempt
    # Prepared again once, with the reminder; a second speaks_for_user finds it there already.
    assert [r.reminders for r in fakes.prepare_requests] == [[], [Reminder.own_reply]]
    assert (second.sampling.repetition_penalty, second.sampling.frequency_penalty) == (1.0, 0.0)


async def test_after_a_repetitive_reply_out_of_character_the_next_has_the_character_reminder_and_penalties(
    env: WorkflowEnvironment,
) -> None:
    fakes = BuildingFakes(verdicts=[verdict(["out_of_character", "repetitive"], cleaned="Hm."), verdict()])
    await run_job(env, fakes, chat_job=job(character="Mira"))
    first, second = fakes.generated
    assert second.messages[:-1] == first.messages
    assert second.messages[-1].content.startswith("[Stay in character as Mira, in the scene with Tam")
    assert second.sampling.repetition_penalty > first.sampling.repetition_penalty == 1.0
    assert second.sampling.frequency_penalty > first.sampling.frequency_penalty
    assert second.sampling.temperature > first.sampling.temperature


class ValidatingFakes(BuildingFakes):
    """BuildingFakes whose check_reply is the real validation (no policy)."""

    @activity.defn(name="check_reply")
    async def check_reply(self, request: CheckRequest) -> Verdict:
        self.checked.append(request)
        return validate(request.reply, request.spec, request.history, request.finish_reason)


async def test_an_impersonation_is_checked_as_the_users_message_and_retried_like_a_reply(
    env: WorkflowEnvironment,
) -> None:
    # Scripted generations: SmolLM2 cannot be made to write the character's lines on demand (the real model's
    # impersonation runs in test_roleplay_controls_real).
    hers = 'Mira: "Two silver, and not a copper less."'
    mine = "*sets two coins on the counter* Two silver it is. Has anyone asked after me?"
    fakes = ValidatingFakes(replies=[reply(hers), reply(f"Tam: {mine}")])
    messages = [
        {"role": "user", "content": "Evening, Mira."},
        {"role": "assistant", "content": "*Mira nods.* Evening."},
    ]
    chat_job = job(character="Mira", mode="impersonate", messages=messages)
    result = (await run_job(env, fakes, chat_job=chat_job)).ok()
    assert (result.outcome, result.attempts, result.content) == ("ok", 2, mine)
    assert result.attempt_details[0].reasons == ["speaks_for_character", "empty"]
    assert [c.spec.writes_as for c in fakes.checked] == ["user", "user"]
    first, second = fakes.generated
    assert first.stop == second.stop == stop_sequences("Mira", generic=())
    assert first.sampling.max_tokens == second.sampling.max_tokens == IMPERSONATE_MAX_TOKENS
    assert second.sampling.temperature > first.sampling.temperature and second.sampling.seed != first.sampling.seed
    # No reminder to the character: prepared once, the impersonate instruction last in both.
    assert [r.reminders for r in fakes.prepare_requests] == [[]]
    assert first.messages == second.messages and first.messages[-1].content.startswith("[Write Tam's next message")
