"""The job's stages that touch the worker's configuration or I/O.

- `generate` (a full activity on `{task_queue}-generate`): the only slow stage; that worker caps
  concurrency at the engine's slots.
- `prepare`, `check_reply` (local activities in the workflow's worker): the worker's limits, the engine's
  tokenizer, the policy file. Their results are markers in the history, so every attempt's verdict is there to
  read, and replay never re-runs them. `record_metrics` (local) is kept for runs begun before release-2026-12;
  newer runs write the same record from the workflow (workflows/metrics.py).

Nothing here logs chat text (ids, counts, codes and timings only) unless CHAT_WORKER_LOG_CHAT_TEXT is set."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from loguru import logger
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError

from characters import Character, UnknownCharacter, listed, resolve
from workflows.card import card_prompt, card_texts, starting_profile, validate_card
from workflows.context import ContextTooLarge, TextsCounter, budget_beside, budgeted_context
from workflows.emotion import emotion_messages
from workflows.group import GroupScene, other_names, scene_of
from workflows.memory import summary_budget, summary_prompt, summary_texts
from workflows.metrics import generation_metrics, log_job_metrics
from workflows.models import (
    STREAM_TOPIC,
    CardCheck,
    CardPrompt,
    CardVerdict,
    ChatJob,
    CheckRequest,
    DeltaEvent,
    EmotionRequest,
    EngineError,
    EngineLimits,
    ErrorType,
    GenerateRequest,
    GenerateResult,
    JobLimits,
    JobMetrics,
    Message,
    Prepared,
    PrepareRequest,
    ResetEvent,
    ResolvedSampling,
    SceneCheck,
    SceneMessages,
    SceneRequest,
    SceneVerdict,
    SummaryCheck,
    SummaryPrompt,
    SummaryRequest,
    Verdict,
    limit_problems,
)
from workflows.policy import Policy
from workflows.sampling import max_tokens_for
from workflows.scenes import scene_prompt, scene_texts, validate_scene
from workflows.summary_validation import validate_summary
from workflows.validation import validate

HEARTBEAT_EVERY_SECONDS = 1.0
# Deltas reach subscribers in batches, one signal each, and each signal is a workflow task and history events (and
# wakes every subscriber's poll, an update each): the first delta goes at once (the first token is what a chat user
# waits for), then batches STREAM_BATCH_INTERVAL apart, the gap doubling up to STREAM_MAX_BATCH_INTERVAL. The deltas
# still held when the reply ends are not signalled: the workflow publishes them from the result (streamed_chars).
STREAM_BATCH_INTERVAL = timedelta(milliseconds=200)
STREAM_MAX_BATCH_INTERVAL = timedelta(seconds=1)
OVERLOADED_RETRY_DELAY = timedelta(seconds=5)
# A generation is retried until the job's deadline (an engine outage is waited out), but an engine that is up
# and keeps failing it is given this many GenerationFailed tries; tries that found the engine down or overloaded
# do not count. The count travels from try to try as the heartbeat's second detail (Temporal hands a try the
# last heartbeat of the tries before it).
GENERATION_FAILED_TRIES = 4
# `prepare` waits for an engine that is down while it counts tokens (retried until the job's deadline, see
# workflows.chat.PREPARE_RETRY), trying again after 1, 2, 4, 8, then every 10 s; any other failure of it ends
# after PREPARE_TRIES tries.
PREPARE_TRIES = 3
ENGINE_DOWN_MAX_RETRY_DELAY = timedelta(seconds=10)
# Finished replies kept by the worker for a retry of the same generation (see `FinishedReplies`).
KEPT_REPLIES = 1024


class ChatEngine(Protocol):
    """The result's queue_ms: how long the generation waited in the worker for one of the engine's slots."""

    async def complete(
        self,
        messages: list[Message],
        sampling: ResolvedSampling,
        stop: list[str],
        on_text: Callable[[str], None] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> GenerateResult: ...


def context_too_large(error: ContextTooLarge) -> ApplicationError:
    """The job's own failure (never retried): what must go in does not fit the engine's budget (counts, no text)."""
    return ApplicationError(str(error), type=ErrorType.context_too_large.value, non_retryable=True)


def invalid_job(problem: str) -> ApplicationError:
    """The job's own failure (never retried): `problem` names the field and why."""
    return ApplicationError(f"invalid job: {problem}", type=ErrorType.invalid_job.value, non_retryable=True)


def forbidden_input(job: ChatJob, policy: Policy) -> list[str]:
    return [
        f"job.messages.{index}.content: matches a pattern the platform forbids"
        for index, message in enumerate(job.messages)
        if message.role == "user" and policy.violations(message.content)
    ]


def resolved_character(job: ChatJob) -> Character | None:
    try:
        return resolve(job.character)
    except UnknownCharacter as error:
        raise invalid_job(f"job.character: {error}") from None


def resolved_members(job: ChatJob) -> list[Character]:
    """A group job's members' profiles, in the job's order; an unknown bundled name is an invalid job naming it."""
    members = []
    for index, ref in enumerate(job.characters or []):
        try:
            member = resolve(ref)
        except UnknownCharacter as error:
            raise invalid_job(f"job.characters.{index}: {error}") from None
        assert member is not None
        members.append(member)
    return members


class JobActivities:
    """Local activities, bound to the worker's limits, tokenizer and policy."""

    def __init__(
        self,
        limits: JobLimits,
        engine_limits: EngineLimits,
        counter: TextsCounter,
        policy: Policy,
        log_chat_text: bool = False,
    ) -> None:
        self._limits = limits
        self._engine_limits = engine_limits
        self._counter = counter
        self._policy = policy
        self._log_chat_text = log_chat_text

    @activity.defn(name="prepare")
    async def prepare(self, request: PrepareRequest) -> Prepared:
        try:
            return await self._prepared(request)
        except ApplicationError:
            raise  # the job's own failures, already non-retryable
        except EngineError as error:
            logger.warning(
                "prepare job={} try={}: the engine's tokenizer failed ({})",
                request.job.job_id,
                activity.info().attempt,
                error.type.value,
            )
            raise prepare_error(error, activity.info().attempt, request.wait_until) from error
        except Exception as error:
            if activity.info().attempt < PREPARE_TRIES:
                raise
            raise ApplicationError(
                f"prepare failed: {type(error).__name__}", type=type(error).__name__, non_retryable=True
            ) from error

    async def _prepared(self, request: PrepareRequest) -> Prepared:
        job = request.job
        if self._log_chat_text:
            logger.debug("prepare job={} last message: {}", job.job_id, job.messages[-1].content)
        self._check_limits(job)
        scene: GroupScene | None = None
        if request.speaker is not None:
            scene = scene_of(resolved_members(job), request.speaker, job.group)
        character = scene.speaker if scene is not None else resolved_character(job)
        try:
            context = await budgeted_context(
                job,
                character,
                self._engine_limits,
                self._counter,
                request.budget_share,
                request.reminders,
                scene,
                request.user_emotion,
            )
        except ContextTooLarge as error:
            raise context_too_large(error) from None
        return Prepared(
            context=context,
            character=character,
            max_attempts=self._limits.max_attempts,
            deadline_seconds=job.deadline_seconds or self._limits.default_deadline_seconds,
            max_tokens_cap=self._limits.max_tokens_cap,
            others=other_names(scene) if scene is not None else [],
        )

    def _check_limits(self, job: ChatJob) -> None:
        problems = limit_problems(job, self._limits) + forbidden_input(job, self._policy)
        if problems:
            raise invalid_job(listed(problems))

    @activity.defn(name="group_members")
    async def group_members(self, job: ChatJob) -> list[Character]:
        """A group job's members' profiles (the workflow chooses its speakers from them), after the job's limits."""
        self._check_limits(job)
        return resolved_members(job)

    @activity.defn(name="check_reply")
    async def check_reply(self, request: CheckRequest) -> Verdict:
        return validate(request.reply, request.spec, request.history, request.finish_reason, self._policy)

    @activity.defn(name="prepare_summary")
    async def prepare_summary(self, request: SummaryRequest) -> SummaryPrompt:
        """The summary step's prompt within the engine's budget for a summary (see workflows/memory.py)."""
        character = resolved_character(request.job)
        texts = summary_texts(request.job, character, request.memory, request.until)
        counts = await self._counter.count_many(texts)
        return summary_prompt(
            request.job,
            character,
            request.memory,
            request.until,
            budget=summary_budget(self._engine_limits),
            count=counts.__getitem__,
        )

    @activity.defn(name="emotion_prompt")
    async def emotion_prompt(self, request: EmotionRequest) -> list[Message]:
        """The classification prompt for the reply, or for the user's last message once the job passed its limits,
        the policy and its character's lookup (the text goes to the engine before prepare runs)."""
        job = request.job
        if job is None:
            return emotion_messages(request.reply)
        self._check_limits(job)
        resolved_character(job)
        return emotion_messages(next(m.content for m in reversed(job.messages) if m.role == "user"))

    @activity.defn(name="check_summary")
    async def check_summary(self, check: SummaryCheck) -> Verdict:
        return validate_summary(check, self._policy)

    @activity.defn(name="prepare_scene")
    async def prepare_scene(self, request: SceneRequest) -> SceneMessages:
        """A chat_scene job's prompt within the engine's budget for its output (see workflows/scenes.py)."""
        job = request.job
        character = resolved_character(job)
        counts = await self._counter.count_many(scene_texts(job, character))
        budget = budget_beside(self._engine_limits, request.max_tokens)
        try:
            return scene_prompt(job, character, budget=budget, count=counts.__getitem__)
        except ContextTooLarge as error:
            raise context_too_large(error) from None

    @activity.defn(name="check_scene")
    async def check_scene(self, check: SceneCheck) -> SceneVerdict:
        return validate_scene(check, self._policy)

    @activity.defn(name="prepare_card")
    async def prepare_card(self, job: ChatJob) -> CardPrompt:
        """A chat_character job's prompt: the newest messages that fit the engine's budget beside the card's
        output (see workflows/card.py)."""
        profile = starting_profile(resolved_character(job))
        counts = await self._counter.count_many(card_texts(job, profile))
        budget = budget_beside(self._engine_limits, max_tokens_for(job.job_type, job.sampling))
        try:
            return card_prompt(job, profile, budget=budget, count=counts.__getitem__)
        except ContextTooLarge as error:
            raise context_too_large(error) from None

    @activity.defn(name="check_card")
    async def check_card(self, check: CardCheck) -> CardVerdict:
        return validate_card(check, self._policy)

    @activity.defn(name="record_metrics")
    async def record_metrics(self, metrics: JobMetrics) -> None:
        log_job_metrics(metrics)


class DeltaBatches:
    """When the deltas buffered for the stream go out: the first at once, the next STREAM_BATCH_INTERVAL after
    it, each gap twice the one before, up to STREAM_MAX_BATCH_INTERVAL. Times are time.monotonic() seconds."""

    def __init__(
        self, first_gap: timedelta = STREAM_BATCH_INTERVAL, longest_gap: timedelta = STREAM_MAX_BATCH_INTERVAL
    ) -> None:
        self._gap = first_gap.total_seconds()
        self._longest = longest_gap.total_seconds()
        self._due: float | None = None

    def due(self, now: float) -> bool:
        """Whether what is buffered goes out now; when it does, the next batch is due one gap later."""
        if self._due is not None and now < self._due:
            return False
        self._due = now + self._gap
        self._gap = min(self._gap * 2, self._longest)
        return True


async def _heartbeat_forever(tokens: Callable[[], int], failed_tries: int, on_beat: Callable[[], None]) -> None:
    # Heartbeats also while waiting for the first token (the engine may queue us), and they are what
    # delivers a cancellation to this activity. Their first detail, tokens so far, is what `status` reads; the
    # second, the generation's GenerationFailed tries so far, is what the next try counts on.
    while True:
        activity.heartbeat(tokens(), failed_tries)
        on_beat()
        await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)


def failed_tries_before(info: activity.Info) -> int:
    """How many of the generation's earlier tries failed as GenerationFailed, from the last heartbeat's second
    detail (none: no earlier try, or one begun before the count was kept)."""
    details = info.heartbeat_details
    return int(details[1]) if len(details) > 1 else 0


def application_error(error: EngineError, failed_tries: int) -> ApplicationError:
    """The activity's failure for the engine's error, when `failed_tries` of the generation's tries (this one
    included) have failed as GenerationFailed."""
    gave_up = error.type is ErrorType.generation_failed and failed_tries >= GENERATION_FAILED_TRIES
    return ApplicationError(
        error.message,
        type=error.type.value,
        non_retryable=gave_up or not error.retryable,
        next_retry_delay=OVERLOADED_RETRY_DELAY if error.type is ErrorType.engine_overloaded else None,
    )


def prepare_error(error: EngineError, try_number: int, wait_until: datetime | None) -> ApplicationError:
    """prepare's failure for the engine's error (from its tokenizer) on its `try_number`th try: an engine that is
    down is waited for until `wait_until` (the job's deadline; then the job fails with Deadline), anything else
    ends after PREPARE_TRIES tries. The wait is enforced here: the SDK's local-activity retries were seen to run
    on past their schedule-to-close timeout."""
    if error.type is not ErrorType.engine_unavailable:
        return ApplicationError(error.message, type=error.type.value, non_retryable=try_number >= PREPARE_TRIES)
    if wait_until is None:  # a run begun before prepare waited: its retry policy ends it after 3 tries
        return ApplicationError(error.message, type=error.type.value)
    left = wait_until - datetime.now(UTC)
    if left <= timedelta(0):
        return ApplicationError(
            "the job's deadline passed while the engine was down", type=ErrorType.deadline.value, non_retryable=True
        )
    delay = min(timedelta(seconds=2 ** min(try_number - 1, 4)), ENGINE_DOWN_MAX_RETRY_DELAY, left)
    return ApplicationError(error.message, type=error.type.value, next_retry_delay=delay)


def unexpected_failure(error: Exception) -> ApplicationError:
    """Anything but an engine error (a bug, say) ends like GenerationFailed after GENERATION_FAILED_TRIES tries,
    not retried until the deadline as an engine outage is; named by its class only."""
    return ApplicationError(
        f"generation failed: {type(error).__name__}", type=ErrorType.generation_failed.value, non_retryable=True
    )


def queue_ms(info: activity.Info) -> float:
    return max(0.0, (info.started_time - info.current_attempt_scheduled_time).total_seconds() * 1000)


class FinishedReplies:
    """The replies this worker finished, by generation (workflow run and activity id), the most recent
    KEPT_REPLIES of them. When Temporal was unreachable longer than a generation's heartbeat timeout, it refuses the
    finished try's completion and retries the generation: that retry gets the reply back instead of a new one. A
    regeneration is another activity (another id), so it never gets a kept reply. In memory only, never stored."""

    def __init__(self, size: int = KEPT_REPLIES) -> None:
        self._size = size
        self._replies: OrderedDict[tuple[str, str, str], GenerateResult] = OrderedDict()

    @staticmethod
    def key(info: activity.Info) -> tuple[str, str, str]:
        return (info.workflow_id or "", info.workflow_run_id or "", info.activity_id)

    def get(self, info: activity.Info) -> GenerateResult | None:
        return self._replies.get(self.key(info))

    def keep(self, info: activity.Info, result: GenerateResult) -> None:
        self._replies[self.key(info)] = result
        while len(self._replies) > self._size:
            self._replies.popitem(last=False)


class ChatActivities:
    """`on_engine_unavailable` is called when a generation finds the engine unavailable (the worker's gate then
    takes no more generation tasks until the engine is up)."""

    def __init__(
        self, engine: ChatEngine, log_chat_text: bool = False, on_engine_unavailable: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._log_chat_text = log_chat_text
        self._on_engine_unavailable = on_engine_unavailable
        self._finished = FinishedReplies()

    @activity.defn(name="generate")
    async def generate(self, request: GenerateRequest) -> GenerateResult:
        """Streams the reply to the engine's caller and, as it grows, to the job's stream."""
        with generation_metrics(activity.metric_meter(), activity.info().task_queue, request.purpose):
            return await self._generated(request)

    async def _generated(self, request: GenerateRequest) -> GenerateResult:
        info = activity.info()
        kept = self._finished.get(info)
        if kept is not None:
            logger.info(
                "generate job={} attempt={} try={}: the reply finished on an earlier try is returned",
                request.job_id,
                request.attempt,
                info.attempt,
            )
            return kept
        failed_before = failed_tries_before(info)
        streamed = 0
        batches = DeltaBatches()
        replying = request.purpose == "reply"  # nothing else is streamed or logged
        held: list[DeltaEvent] = []  # deltas not yet handed to the stream
        sent_chars = 0  # of the reply, handed to the stream

        def release_when_due() -> None:
            nonlocal sent_chars
            if held and batches.due(time.monotonic()):
                for event in held:
                    events.publish(event, force_flush=True)
                sent_chars += sum(len(event.text) for event in held)
                held.clear()

        def publish_delta(text: str) -> None:
            nonlocal streamed
            streamed += 1
            if replying:
                held.append(DeltaEvent(attempt=request.attempt, speaker=request.speaker, text=text))
                release_when_due()

        # Its own timer would flush only deltas already released (each is flushed at once anyway); the heartbeat
        # releases held ones that waited a gap when deltas stop arriving for a while.
        stream = WorkflowStreamClient.from_within_activity(batch_interval=STREAM_MAX_BATCH_INTERVAL)
        heartbeats = asyncio.create_task(_heartbeat_forever(lambda: streamed, failed_before, release_when_due))

        def failed_tries(failed: bool) -> int:
            """The GenerationFailed tries with this one, recorded for the next try."""
            heartbeats.cancel()
            activity.heartbeat(streamed, failed_before + int(failed))
            return failed_before + int(failed)

        result: GenerateResult | None = None
        try:
            async with stream:  # leaving flushes what is buffered, also on cancellation
                events = stream.topic(STREAM_TOPIC)
                if replying and (request.attempt > 1 or info.attempt > 1):
                    reason = "retry" if info.attempt > 1 else "regenerate"
                    events.publish(
                        ResetEvent(
                            attempt=request.attempt, speaker=request.speaker, try_number=info.attempt, reason=reason
                        )
                    )
                try:
                    result = await self._engine.complete(
                        request.messages,
                        request.sampling,
                        request.stop,
                        on_text=publish_delta,
                        json_schema=request.json_schema,
                    )
                finally:
                    # The batch in flight (and one released but not yet sent) is awaited here: leaving the stream
                    # cancels a flush in flight, and a signal cancelled so was seen to hang the exit until the try
                    # timed out (a fast engine ends while its first delta's batch is on its way). A failure is the
                    # exit's to raise. The held deltas are not sent: the workflow publishes them.
                    held.clear()
                    with suppress(Exception):
                        await stream.flush()
        except Exception as error:
            # An engine error, also one that the stream's final flush then replaced.
            engine_error = error if isinstance(error, EngineError) else error.__context__
            if isinstance(engine_error, EngineError):
                logger.warning(
                    "generate failed job={} attempt={} try={} type={}",
                    request.job_id,
                    request.attempt,
                    info.attempt,
                    engine_error.type.value,
                )
                if engine_error.type is ErrorType.engine_unavailable and self._on_engine_unavailable is not None:
                    self._on_engine_unavailable()
                failed = failed_tries(engine_error.type is ErrorType.generation_failed)
                raise application_error(engine_error, failed) from engine_error
            if result is None:
                if failed_tries(True) < GENERATION_FAILED_TRIES:
                    raise
                raise unexpected_failure(error) from error
            # The reply is done and is the job's point; only its last deltas did not reach subscribers, who get
            # the whole reply in the `done` event.
            logger.warning(
                "generate job={} attempt={} try={}: the stream's final flush failed ({}); the reply is kept",
                request.job_id,
                request.attempt,
                info.attempt,
                type(error).__name__,
            )
        finally:
            heartbeats.cancel()
        result.queue_ms += queue_ms(info)  # and in Temporal's queue
        result.streamed_chars = sent_chars if replying else None
        logger.info(
            "generated job={} {}={} try={} finish={} prompt_tokens={} completion_tokens={} engine_ms={:.0f}",
            request.job_id,
            "attempt" if replying else f"{request.purpose}_attempt",
            request.attempt,
            info.attempt,
            result.finish_reason,
            result.prompt_tokens,
            result.completion_tokens,
            result.engine_ms,
        )
        if self._log_chat_text and replying:
            logger.debug("reply job={} attempt={}: {}", request.job_id, request.attempt, result.content)
        self._finished.keep(info, result)
        return result
