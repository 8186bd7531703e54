"""ChatWorkflow: the story of one chat job.

build context → generate (activity on `chat-generate`) → validate → (retry with adjusted sampling) →
record metrics → ChatResult.

The input is taken as plain JSON and validated here, so a malformed job fails the workflow at once with a
non-retryable `InvalidJob` naming the field (a pydantic-typed parameter that does not decode would leave
the workflow retrying its first task forever)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from characters import Character, UnknownCharacter, bundled_character
    from workflows.activities import ChatActivities, record_metrics
    from workflows.context import build_context
    from workflows.models import (
        NON_RETRYABLE,
        WORKFLOW_TYPE,
        ChatJob,
        ChatResult,
        ErrorType,
        GenerateRequest,
        GenerateResult,
        JobMetrics,
        JobType,
        Message,
        ResolvedSampling,
        Timings,
        describe_validation_error,
        generate_task_queue,
    )
    from workflows.sampling import escalated_sampling, first_sampling
    from workflows.validation import Verdict, validate_reply

MAX_ATTEMPTS = 3
DEFAULT_DEADLINE = timedelta(seconds=120)
GENERATE_TIMEOUT = timedelta(seconds=90)
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
GENERATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=4,
    non_retryable_error_types=sorted(t.value for t in NON_RETRYABLE),
)


def invalid_job(message: str) -> ApplicationError:
    return ApplicationError(message, type=ErrorType.invalid_job.value, non_retryable=True)


def parsed_job(raw: Any) -> ChatJob:
    try:
        return ChatJob.model_validate(raw)
    except ValidationError as error:
        raise invalid_job(f"invalid job: {describe_validation_error(error, 'job')}") from None


def resolved_character(job: ChatJob) -> Character | None:
    if isinstance(job.character, str):
        try:
            return bundled_character(job.character)
        except UnknownCharacter as error:
            raise invalid_job(f"invalid job: job.character: {error}") from None
    return job.character


def chat_messages_ok(messages: list[Message]) -> None:
    if not any(m.role == "user" for m in messages):
        raise invalid_job("invalid job: job.messages: needs at least one message with role 'user'")


def deadline_passed() -> ApplicationError:
    return ApplicationError("the job's deadline passed", type=ErrorType.deadline.value, non_retryable=True)


def better(verdict: Verdict, best: tuple[Verdict, GenerateResult] | None) -> bool:
    """Whether a rejected reply beats the best rejected one so far: non-empty, then fewer reasons."""
    if best is None:
        return True
    return (bool(verdict.content), -len(verdict.reasons)) > (bool(best[0].content), -len(best[0].reasons))


@workflow.defn(name=WORKFLOW_TYPE)
class ChatWorkflow:
    @workflow.init
    def __init__(self, job: Any) -> None:
        self._stage = "queued"
        self._attempt = 0

    @workflow.run
    async def run(self, job: Any) -> ChatResult:
        chat_job = parsed_job(job)
        chat_messages_ok(chat_job.messages)
        character = resolved_character(chat_job)
        started = workflow.info().start_time
        deadline = started + (
            timedelta(seconds=chat_job.deadline_seconds) if chat_job.deadline_seconds else DEFAULT_DEADLINE
        )

        self._stage = "building_context"
        # Wall-clock cost of a pure stage, for metrics only: it never steers the workflow.
        with workflow.unsafe.sandbox_unrestricted():
            context_started = time.perf_counter()
        context = build_context(chat_job, character)
        with workflow.unsafe.sandbox_unrestricted():
            context_ms = (time.perf_counter() - context_started) * 1000

        sampling = first_sampling(chat_job.job_type, chat_job.sampling, seed=self._new_seed())
        reasons: list[str] = []
        best: tuple[Verdict, GenerateResult] | None = None
        chosen: tuple[Verdict, GenerateResult] | None = None
        generation_ms = engine_ms = 0.0
        prompt_tokens = completion_tokens = 0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self._attempt, self._stage = attempt, "generating"
            before = workflow.now()
            result = await self._generate(chat_job.job_id, attempt, context, sampling, deadline)
            generation_ms += (workflow.now() - before).total_seconds() * 1000
            engine_ms += result.engine_ms
            prompt_tokens += result.prompt_tokens
            completion_tokens += result.completion_tokens

            self._stage = "validating"
            verdict = validate_reply(
                result.content,
                result.finish_reason,
                user_name=chat_job.user_name,
                char_name=character.name if character else None,
                roleplay=chat_job.job_type is JobType.roleplay,
            )
            if verdict.ok:
                chosen = (verdict, result)
                break
            reasons.extend(verdict.reasons)
            if better(verdict, best):
                best = (verdict, result)
            sampling = escalated_sampling(sampling, verdict.reasons, seed=self._new_seed())

        outcome = "ok" if chosen else "flagged"
        chosen = chosen or best
        assert chosen is not None  # MAX_ATTEMPTS >= 1
        verdict, result = chosen
        if not verdict.content:
            self._stage = "failed"
            raise ApplicationError(
                f"no usable reply in {self._attempt} attempts: {', '.join(reasons)}",
                type=ErrorType.no_valid_reply.value,
                non_retryable=True,
            )
        timings = Timings(
            context_ms=context_ms,
            generation_ms=generation_ms,
            engine_ms=engine_ms,
            total_ms=(workflow.now() - started).total_seconds() * 1000,
        )
        await workflow.execute_local_activity(
            record_metrics,
            JobMetrics(
                job_id=chat_job.job_id,
                job_type=chat_job.job_type,
                character=character.name if character else None,
                messages=len(chat_job.messages),
                attempts=self._attempt,
                reasons=reasons,
                outcome=outcome,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                timings=timings,
            ),
            start_to_close_timeout=timedelta(seconds=5),
        )
        self._stage = "done"
        return ChatResult(
            job_id=chat_job.job_id,
            content=verdict.content,
            finish_reason=result.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            attempts=self._attempt,
            reasons=reasons,
            outcome=outcome,
            timings=timings,
        )

    def _new_seed(self) -> int:
        return workflow.random().randint(0, 2**31 - 1)

    async def _generate(
        self,
        job_id: str,
        attempt: int,
        context: list[Message],
        sampling: ResolvedSampling,
        deadline: datetime,
    ) -> GenerateResult:
        remaining = deadline - workflow.now()
        if remaining <= timedelta(0):
            raise deadline_passed()
        try:
            return await workflow.execute_activity_method(
                ChatActivities.generate,
                GenerateRequest(job_id=job_id, attempt=attempt, messages=context, sampling=sampling),
                task_queue=generate_task_queue(workflow.info().task_queue),
                schedule_to_close_timeout=remaining,
                start_to_close_timeout=min(GENERATE_TIMEOUT, remaining),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=GENERATE_RETRY,
                summary=f"generate · attempt {attempt}",
            )
        except ActivityError as error:
            if is_cancelled_exception(error):
                raise
            self._stage = "failed"
            cause = error.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from error
            if workflow.now() >= deadline:
                raise deadline_passed() from error
            raise ApplicationError(
                f"generation did not finish: {cause}",
                type=ErrorType.generation_failed.value,
                non_retryable=True,
            ) from error
