"""ChatWorkflow: the story of one chat job.

parse the job → prepare (local activity: limits, policy, character, token-budget context) →
attempt: generate (activity on `{task_queue}-generate`) → check the reply (local activity) →
(rejected: again, with a new seed and adjusted sampling) → [a job with memory whose window starts past what its
summary covers: summarize] → record metrics (the workflow's own log record, never written on replay; runs begun
before release-2026-12: a local activity) → ChatResult.

summarize (story memory, workflows/memory.py): prepare_summary (local) → generate on the generation queue, like
any generation → check_summary (local) → (rejected: again, new seed, adjusted sampling); a summary that never
passes keeps the job's memory. A chat_summarize job is that step alone, on the whole conversation.

A chat_scene job (workflows/scenes.py): prepare_scene (local) → generate (purpose "scene"; a storyboard under the
engine's JSON schema) → check_scene (local) → (rejected: again, new seed, adjusted sampling) → ChatResult.scene.

A group job (`characters`, workflows/group.py): group_members (local) → speakers drawn with workflow.random() →
for each speaker in turn: prepare (its own prompt, with the replies before it) → the attempts above → one
ChatResult with `replies`.

The input is taken as its raw payload and decoded here, so a job that does not decode (a key this worker
lacks, bytes that are not JSON) or is malformed fails the workflow at once with a non-retryable `InvalidJob`
naming the key id or the field (a typed parameter that does not decode would leave the workflow retrying its
first task forever)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import Priority, RawValue, RetryPolicy, SearchAttributeKey
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    RetryState,
    is_cancelled_exception,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError
    from pydantic_core import from_json
    from temporalio.api.common.v1 import Payload

    from characters import Character, describe_validation_error, listed
    from characters.base import not_unicode_fields
    from workflows.activities import ChatActivities, JobActivities, invalid_job
    from workflows.card import card_schema, character_spoke, starting_profile
    from workflows.context import char_name
    from workflows.emotion import EMOTION_SCHEMA, FALLBACK, emotion_label, emotion_sampling
    from workflows.group import SpeakerTurn, chosen_speakers, round_result
    from workflows.memory import merged_memory
    from workflows.metrics import NO_ERROR, UNKNOWN_JOB_TYPE, log_job_metrics, record_job_end
    from workflows.models import (
        DEFAULT_PRIORITY,
        ENCRYPTED_ENCODING,
        HIGHEST_PRIORITY,
        KEY_ID_METADATA,
        LOWEST_PRIORITY,
        NON_RETRYABLE,
        STREAM_TOPIC,
        SUMMARY_MAX_TOKENS,
        WORKFLOW_TYPE,
        CancelledEvent,
        CardCheck,
        CardVerdict,
        ChatJob,
        ChatResult,
        CheckRequest,
        DeltaEvent,
        DoneEvent,
        Emotion,
        EmotionRequest,
        Emotions,
        ErrorType,
        FailedEvent,
        GenerateRequest,
        GenerateResult,
        GroupSettings,
        JobLimits,
        JobStatus,
        JobType,
        Memory,
        Message,
        Prepared,
        PrepareRequest,
        Reminder,
        ReplySpec,
        ResolvedSampling,
        Sampling,
        SceneCheck,
        SceneRequest,
        Stage,
        SummaryCheck,
        SummaryRequest,
        Timings,
        generate_task_queue,
    )
    from workflows.outputs import OutputSpec
    from workflows.results import Attempt, best_returnable, chat_result, job_metrics
    from workflows.sampling import (
        escalated_sampling,
        first_sampling,
        max_tokens_ceiling,
        max_tokens_for,
        next_sampling,
        reminders_after,
    )
    from workflows.scenes import scene_sampling
    from workflows.search_attributes import ATTEMPTS, CHARACTER_NAME, JOB_TYPE, OUTCOME
    from workflows.speech import with_speech
    from workflows.summaries import row_summary
    from workflows.validation import writes_code

GENERATE_TIMEOUT = timedelta(seconds=90)
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
LOCAL_TIMEOUT = timedelta(seconds=30)
# After the engine still answers "input too long", the context is built once more with this share of the budget.
SHRUNK_BUDGET_SHARE = 0.75
JSON_ENCODING = b"json/plain"
# Patch ids (workflow.patched): runs begun before a change replay as they ran.
SHRINK_IS_NOT_AN_ATTEMPT = "shrink-is-not-an-attempt"
DEADLINE_IS_NOT_A_CANCEL = "deadline-is-not-a-cancel"
BEST_REPLY_AT_DEADLINE = "best-reply-at-deadline"
METRICS_NEVER_COST_THE_REPLY = "metrics-never-cost-the-reply"
GENERATE_RETRIES_UNTIL_DEADLINE = "generate-retries-until-deadline"
LATER_ATTEMPTS_GO_FIRST = "later-attempts-go-first"
# After a rejected reply, the next attempt is changed by its reasons (workflows/sampling.py), and a reason that
# calls for a reminder after the history has the context prepared again with it.
ESCALATION_PER_REASON = "escalation-per-reason"
# Story memory: a job that carries memory summarises what its window dropped (prepare_summary, generate,
# check_summary), and chat_summarize jobs exist.
STORY_MEMORY = "story-memory"
# Group scenes (workflows/group.py): a job with `characters` is a round, each chosen member replying in turn.
GROUP_SCENES = "group-scenes"
# Emotion labels (ChatJob.emotion): a classification's generation ends by then (or at the job's deadline, if
# sooner); one that fails or runs out of time labels `neutral` and never costs the job its reply.
EMOTION_WINDOW = timedelta(seconds=30)
# Summary steps per job at most (each covers what fits one prompt).
MAX_SUMMARY_STEPS = 4
# A reply job's summaries end by then after the reply (or at the job's deadline, if sooner): a slow or stuck
# summary never holds the reply back longer.
SUMMARY_WINDOW = timedelta(seconds=180)
# A job's generations queue at ChatJob.priority with ChatJob.user_id as their fairness key (Temporal's task
# queue fairness: keys take turns within a priority level). Runs begun before it: every job at DEFAULT_PRIORITY,
# no key.
JOB_PRIORITY_AND_FAIRNESS = "job-priority-and-fairness"
# Runs begun before GENERATE_RETRIES_UNTIL_DEADLINE: an engine outage failed the job after 4 tries (~7 s).
GENERATE_RETRY_BEFORE_OUTAGES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=4,
    non_retryable_error_types=sorted(t.value for t in NON_RETRYABLE),
)
# No attempt limit: the generation's schedule-to-close timeout (the job's deadline) bounds the retries, so an
# engine outage is waited out. The generate activity itself ends repeated GenerationFailed (see
# workflows.activities.GENERATION_FAILED_TRIES).
GENERATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=sorted(t.value for t in NON_RETRYABLE),
)
LOCAL_RETRY = RetryPolicy(
    maximum_attempts=3, non_retryable_error_types=[ErrorType.invalid_job.value, ErrorType.context_too_large.value]
)
PREPARE_WAITS_FOR_THE_ENGINE = "prepare-waits-for-the-engine"
# No attempt limit: the job's deadline bounds prepare's retries (its schedule-to-close timeout, and prepare itself
# stops waiting for an engine that is down then, see workflows.activities.prepare_error), so an engine that is
# down while prepare counts tokens is waited out; prepare ends any other failure after 3 tries. Runs begun before
# PREPARE_WAITS_FOR_THE_ENGINE use LOCAL_RETRY.
PREPARE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=LOCAL_RETRY.non_retryable_error_types,
)
# Waits longer than this between prepare's tries are workflow timers, so that no workflow task stays open through
# an engine outage (shorter ones run inside the worker while the task is held).
PREPARE_LOCAL_RETRY_THRESHOLD = timedelta(seconds=1)
# A raw start without deadline_seconds (ChatClient always sets one) gets the worker's default deadline, which
# only prepare learns; until then prepare waits this long, JobLimits' own default.
PREPARE_DEADLINE_UNLESS_GIVEN = JobLimits().default_deadline_seconds

# One release patch for the changes above: a run begun under it takes every one of them without their own
# markers (each workflow.patched costs a job a marker and a TemporalChangeVersion upsert, a visibility write);
# runs begun before it ask each change's patch where they always did. Later changes go into the next release
# (RELEASES below), never into one already recorded.
RELEASE_2026_11 = "release-2026-11"
RELEASED_2026_11 = frozenset(
    {
        SHRINK_IS_NOT_AN_ATTEMPT,
        DEADLINE_IS_NOT_A_CANCEL,
        BEST_REPLY_AT_DEADLINE,
        METRICS_NEVER_COST_THE_REPLY,
        GENERATE_RETRIES_UNTIL_DEADLINE,
        LATER_ATTEMPTS_GO_FIRST,
        ESCALATION_PER_REASON,
        STORY_MEMORY,
        GROUP_SCENES,
        JOB_PRIORITY_AND_FAIRNESS,
        PREPARE_WAITS_FOR_THE_ENGINE,
    }
)
# The job's metrics record is written by the workflow itself, never while it replays (workflows/metrics.py), not by
# a local activity: one activation round trip and one marker fewer in the job's last workflow task.
METRICS_WITHOUT_LOCAL_ACTIVITY = "metrics-without-local-activity"
# The next release: a run begun under it takes its changes and every one of release-2026-11's, with its one
# marker. Its changes never had patches of their own.
RELEASE_2026_12 = "release-2026-12"
RELEASED_2026_12 = frozenset({METRICS_WITHOUT_LOCAL_ACTIVITY})
# Newest first, each with every change a run begun under it takes.
RELEASES = ((RELEASE_2026_12, RELEASED_2026_12 | RELEASED_2026_11), (RELEASE_2026_11, RELEASED_2026_11))


def parsed_job(raw: RawValue) -> ChatJob:
    """The job from its payload as stored. Every way it can fail (a key this worker lacks, bytes that are not
    JSON, JSON that is not a job) is an `InvalidJob` naming why, never a workflow task retried forever.
    Messages carry positions and field names only: the payload's text is never quoted."""
    if raw.payload.metadata.get("encoding") == ENCRYPTED_ENCODING:
        name = raw.payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", errors="replace")
        raise invalid_job(f"the input is encrypted under key id {name!r}, which this worker's keys file lacks")
    try:
        value = workflow.payload_converter().from_payload(raw.payload)
    except Exception as error:  # bytes that are not JSON, an encoding no converter knows
        raise invalid_job(why_undecodable(raw.payload, error)) from None
    try:
        return ChatJob.model_validate(value)
    except ValidationError as error:
        raise invalid_job(describe_validation_error(error, "job")) from None


def why_undecodable(payload: Payload, error: Exception) -> str:
    """The fields whose text is not Unicode (JSON that Python's decoder reads but pydantic's refuses), else where
    JSON input stops being JSON, by line and column (pydantic's parser names them; Python's may name none, e.g. for
    a RecursionError), else the error's class."""
    if payload.metadata.get("encoding") == JSON_ENCODING:
        try:
            fields = not_unicode_fields(json.loads(payload.data), "job")
        except (ValueError, RecursionError):
            fields = []
        if fields:
            return listed([f"{field}: not valid Unicode (a lone surrogate)" for field in fields])
        try:
            from_json(payload.data)
        except ValueError as json_error:
            return f"the input cannot be decoded (not JSON: {json_error})"
    return f"the input cannot be decoded ({type(error).__name__})"


def failure(error: ActivityError) -> ApplicationError:
    """The workflow's own non-retryable failure for an activity's, keeping the activity's error type."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return ApplicationError(f"{error.message}: {cause}", type=ErrorType.generation_failed.value, non_retryable=True)


def ended_by(error: FailureError) -> ApplicationError:
    """The workflow's own non-retryable failure for a Temporal failure that no stage turned into one: an
    activity's keeps the activity's error type (`failure`) or names its cause (TimeoutError, ...); anything
    else is named by its class."""
    if isinstance(error, ActivityError) and error.cause is not None:
        if isinstance(error.cause, ApplicationError) and error.cause.type:
            return failure(error)
        return ApplicationError(f"{error.message}: {error.cause}", type=type(error.cause).__name__, non_retryable=True)
    return ApplicationError(error.message, type=type(error).__name__, non_retryable=True)


def ended_by_deadline(error: BaseException, deadline: datetime) -> bool:
    """Whether the attempts stopped because the job's deadline passed: wait_for's timeout, the generation's own
    timeout (a Deadline failure), or the deadline's cancellation of a running local activity (check_reply),
    which wait_for passes on as an ActivityError ("Local Activity cancelled") that would read as a cancelled job."""
    if isinstance(error, TimeoutError):
        return True
    if isinstance(error, ApplicationError):
        return error.type == ErrorType.deadline.value
    return is_cancelled_exception(error) and workflow.now() >= deadline and adopted(DEADLINE_IS_NOT_A_CANCEL)


def begun_under_a_release() -> bool:
    """Whether this run began under one of RELEASES. Asked first in the run's first workflow task (see
    `ChatWorkflow._run`), newest release first: a new run records the newest release's marker and no other; a run
    begun before it, replaying that task, finds its release's marker (or none) and keeps that answer."""
    return any(workflow.patched(release) for release, _ in RELEASES)


def adopted(patch_id: str) -> bool:
    """Whether this run takes the change `patch_id` (one of RELEASES' changes): a run begun under a release that
    has it does, with no marker of its own; a run begun before release-2026-11, as that change's own
    `workflow.patched` says (release-2026-12's changes have none: runs begun before it never take them)."""
    releases = [release for release, changes in RELEASES if patch_id in changes]
    if not releases:
        raise ValueError(f"{patch_id} is in no release: call workflow.patched")
    return any(workflow.patched(release) for release in releases) or (
        patch_id in RELEASED_2026_11 and workflow.patched(patch_id)
    )


def upserted(key: SearchAttributeKey[str], value: str) -> None:
    """Sets search attribute `key` to `value` unless the run's start did (ChatClient sets JobType and
    CharacterName when it knows them; a raw start sets none): a run begun under a release skips that upsert,
    one event and one visibility write; a run begun before them upserts as it did."""
    if begun_under_a_release() and workflow.info().typed_search_attributes.get(key) == value:
        return
    workflow.upsert_search_attributes([key.value_set(value)])


def generation_priority(job_priority: int, later: bool, fairness_key: str | None = None) -> Priority:
    """A job's first generation queues at the job's priority; its later ones (a regeneration after a rejected
    reply, the retry on a shrunk context) one level higher, so they do not wait behind new jobs' first ones."""
    key = max(HIGHEST_PRIORITY, job_priority - 1) if later else job_priority
    return Priority(priority_key=key, fairness_key=fairness_key)


def summary_priority(job_priority: int, fairness_key: str | None = None) -> Priority:
    """A reply job's summary comes after its reply was written: one level below the job's (never below the
    lowest), so it queues behind the replies of other jobs of the job's level."""
    return Priority(priority_key=min(LOWEST_PRIORITY, job_priority + 1), fairness_key=fairness_key)


def deadline_passed() -> ApplicationError:
    return ApplicationError("the job's deadline passed", type=ErrorType.deadline.value, non_retryable=True)


@workflow.defn(name=WORKFLOW_TYPE)
class ChatWorkflow:
    @workflow.init
    def __init__(self, job: RawValue) -> None:
        # The stream registers its handlers here, before the generate activity can publish to it.
        self.stream = WorkflowStream()
        self._events = self.stream.topic(STREAM_TOPIC)
        self._stage: Stage = "queued"
        self._attempt = 0
        self._attempts: list[Attempt] = []
        self._summary_attempts: list[Attempt] = []  # a reply job's summary generations (not its attempts)
        self._generations = 0  # generate activities scheduled: unlike _attempt, a shrink's retry counts
        self._context_ms = 0.0
        self._generation_ms = 0.0
        self._summary = "chat"
        self._job_type = UNKNOWN_JOB_TYPE
        self._speaker: str | None = None  # a group job: the member whose reply the attempts are for
        self._user_emotion: Emotion | None = None  # emotion.of_user: the label of the user's last message

    @workflow.query
    def status(self) -> JobStatus:
        return JobStatus(
            stage=self._stage,
            attempt=self._attempt,
            tokens=sum(a.result.completion_tokens for a in self._attempts),
            elapsed_ms=(workflow.now() - workflow.info().start_time).total_seconds() * 1000,
        )

    @workflow.run
    async def run(self, job: RawValue) -> ChatResult:
        try:
            result = await self._run(job)
        except BaseException as error:
            if is_cancelled_exception(error):
                self._end("cancelled", CancelledEvent())
                raise asyncio.CancelledError from error  # the workflow ends cancelled, not failed
            if not isinstance(error, FailureError):
                raise  # a bug: the workflow task fails and Temporal retries it; the job has not ended
            failed = error if isinstance(error, ApplicationError) else ended_by(error)
            self._end("failed", FailedEvent(error_type=failed.type or "", message=failed.message))
            if failed is error:
                raise
            raise failed from error
        self._end(result.outcome, DoneEvent(result=result))
        return result

    def _end(self, outcome: str, event: DoneEvent | FailedEvent | CancelledEvent) -> None:
        self._stage = "done" if isinstance(event, DoneEvent) else event.type
        workflow.upsert_search_attributes([ATTEMPTS.value_set(len(self._attempts)), OUTCOME.value_set(outcome)])
        self._events.publish(event)
        record_job_end(
            workflow.metric_meter(),  # records nothing while replaying: each job is counted once, when it ends
            job_type=self._job_type,
            outcome=outcome,
            error_type=event.error_type if isinstance(event, FailedEvent) else NO_ERROR,
            seconds=(workflow.now() - workflow.info().start_time).total_seconds(),
            attempts=self._attempts,
            result=event.result if isinstance(event, DoneEvent) else None,
        )

    async def _run(self, job: RawValue) -> ChatResult:
        chat_job = parsed_job(job)
        self._job_type = chat_job.job_type.value
        begun_under_a_release()  # decided once, in the run's first workflow task
        started = workflow.now()
        upserted(JOB_TYPE, chat_job.job_type.value)
        if chat_job.characters is not None:
            return await self._group_round(chat_job, started)
        self._stage = "building_context"
        if chat_job.emotion is not None and chat_job.emotion.of_user:
            self._user_emotion = await self._user_emotion_of(chat_job)
        prepared = await self._prepare(chat_job)
        self._summary = row_summary(chat_job, prepared.character)
        workflow.set_current_details(self._summary)
        if prepared.character is not None:
            upserted(CHARACTER_NAME, prepared.character.name)
        deadline = workflow.info().start_time + timedelta(seconds=prepared.deadline_seconds)
        if chat_job.job_type is JobType.summarize:
            return await self._summarize_job(chat_job, prepared, deadline, started)
        if chat_job.job_type is JobType.scene:
            return await self._scene_job(chat_job, prepared, deadline, started)
        if chat_job.job_type is JobType.character:
            return await self._character_job(chat_job, prepared, deadline, started)
        try:
            chosen = await asyncio.wait_for(
                self._attempts_until_valid(chat_job, prepared, deadline),
                timeout=max(0.0, (deadline - workflow.now()).total_seconds()),
            )
        except (TimeoutError, FailureError) as error:
            if not ended_by_deadline(error, deadline):
                raise
            return await self._after_deadline(chat_job, prepared, started)
        emotion = await self._emotions(chat_job, chosen, deadline)
        memory = await self._memory_after_reply(chat_job, prepared, deadline)
        return await self._finish(chat_job, prepared, chosen, started=started, memory=memory, emotion=emotion)

    async def _after_deadline(self, job: ChatJob, prepared: Prepared, started: datetime) -> ChatResult:
        """The deadline passed before a valid reply: the best rejected one so far, flagged with reason
        `deadline`, rather than nothing (a backlog costs quality, not the reply); none to return: Deadline."""
        best = best_returnable(self._attempts)
        if best is None or not adopted(BEST_REPLY_AT_DEADLINE):
            raise deadline_passed()
        emotion = await self._emotions(job, best, until=workflow.now())  # no time left: the reply's is neutral
        return await self._finish(job, prepared, best, started=started, late=True, memory=job.memory, emotion=emotion)

    async def _group_round(self, job: ChatJob, started: datetime) -> ChatResult:
        """A group job: the chosen members reply in order, each seeing the replies before it, each validated and
        retried on its own (the attempt loop, per speaker); a member with no reply that can be returned is left out
        (flagged). The job's deadline covers the round: a speaker cut short returns its best rejected reply, those
        not reached are left out, and the result is flagged."""
        adopted(GROUP_SCENES)
        self._stage = "building_context"
        try:
            members = await workflow.execute_local_activity_method(
                JobActivities.group_members,
                job,
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
                summary="group members",
            )
        except ActivityError as error:
            raise failure(error) from error
        speakers = chosen_speakers(members, job.group or GroupSettings(), job.messages, workflow.random())
        turns: list[SpeakerTurn] = []
        no_reply: ApplicationError | None = None
        late = False
        deadline: datetime | None = None
        for speaker in speakers:
            if deadline is not None and workflow.now() >= deadline:
                late = True
                break
            turn_job = job.model_copy(
                update={
                    "messages": [
                        *job.messages,
                        *(
                            Message(role="assistant", content=t.chosen.verdict.cleaned, name=t.speaker)
                            for t in turns
                            if t.chosen is not None
                        ),
                    ]
                }
            )
            self._speaker, self._attempt, self._attempts = speaker.name, 0, []
            self._stage = "building_context"
            try:
                prepared = await self._prepare(turn_job)
            except ApplicationError as error:
                if not turns or error.type != ErrorType.deadline.value:
                    raise
                late = True
                break
            if deadline is None:
                deadline = workflow.info().start_time + timedelta(seconds=prepared.deadline_seconds)
                self._summary = row_summary(job, prepared.character)
                workflow.set_current_details(self._summary)
                workflow.upsert_search_attributes([CHARACTER_NAME.value_set(speaker.name)])
            try:
                chosen = await asyncio.wait_for(
                    self._attempts_until_valid(turn_job, prepared, deadline),
                    timeout=max(0.0, (deadline - workflow.now()).total_seconds()),
                )
            except (TimeoutError, FailureError) as error:
                if isinstance(error, ApplicationError) and error.type == ErrorType.no_valid_reply.value:
                    no_reply = error
                    turns.append(SpeakerTurn(speaker.name, self._attempts, None, prepared.context.prompt_tokens))
                    continue
                if not ended_by_deadline(error, deadline):
                    raise
                late = True
                best = best_returnable(self._attempts)
                turns.append(SpeakerTurn(speaker.name, self._attempts, best, prepared.context.prompt_tokens, True))
                break
            turns.append(SpeakerTurn(speaker.name, self._attempts, chosen, prepared.context.prompt_tokens))
        self._attempts = [a for turn in turns for a in turn.attempts]
        answered = [turn for turn in turns if turn.chosen is not None]
        if not answered:
            raise no_reply if no_reply is not None and not late else deadline_passed()
        first = answered[0]
        results = [a.result for a in self._attempts]
        timings = Timings(
            context_ms=self._context_ms,
            queue_ms=sum(r.queue_ms for r in results),
            first_token_ms=first.chosen.result.first_token_ms if first.chosen is not None else None,
            generation_ms=self._generation_ms,
            engine_ms=sum(r.engine_ms for r in results),
            total_ms=(workflow.now() - started).total_seconds() * 1000,
        )
        result = with_speech(job, round_result(job, turns, timings, late), members)
        speaker = next(m for m in members if m.name == first.speaker)
        await self._record_metrics(job, speaker, first.attempts[0].sampling, result)
        return result

    async def _prepare(
        self, job: ChatJob, budget_share: float = 1.0, reminders: list[Reminder] | None = None
    ) -> Prepared:
        before = workflow.now()
        waits = adopted(PREPARE_WAITS_FOR_THE_ENGINE)
        deadline = workflow.info().start_time + timedelta(seconds=job.deadline_seconds or PREPARE_DEADLINE_UNLESS_GIVEN)
        if waits and deadline <= before:
            raise deadline_passed()
        try:
            prepared = await workflow.execute_local_activity_method(
                JobActivities.prepare,
                PrepareRequest(
                    job=job,
                    budget_share=budget_share,
                    wait_until=deadline if waits else None,
                    reminders=reminders or [],
                    speaker=self._speaker,
                    user_emotion=self._user_emotion,
                ),
                start_to_close_timeout=LOCAL_TIMEOUT,
                schedule_to_close_timeout=deadline - before if waits else None,
                retry_policy=PREPARE_RETRY if waits else LOCAL_RETRY,
                local_retry_threshold=PREPARE_LOCAL_RETRY_THRESHOLD if waits else None,
                summary="prepare context",
            )
        except ActivityError as error:
            # The engine was still down at the job's deadline: Temporal's retry gave up, or the worker timed the local
            # activity out (schedule-to-close, the deadline) within a workflow task that began just before it.
            timed_out = error.retry_state == RetryState.TIMEOUT or isinstance(error.cause, TemporalTimeoutError)
            if waits and (timed_out or workflow.now() >= deadline):
                raise deadline_passed() from error
            raise failure(error) from error
        self._context_ms += (workflow.now() - before).total_seconds() * 1000
        return prepared

    async def _attempts_until_valid(self, job: ChatJob, prepared: Prepared, deadline: datetime) -> Attempt:
        sampling = first_sampling(job.job_type, job.sampling, seed=self._new_seed(), mode=job.mode)
        impersonate = job.mode == "impersonate"  # the reply is the user's next message
        spec = ReplySpec(
            job_type=job.job_type,
            char_name=char_name(prepared.character),
            user_name=job.user_name,
            code_in_scene=writes_code(prepared.character) and not impersonate,
            writes_as="user" if impersonate else "character",
            others=prepared.others,
        )
        shrunk = False
        reminders: list[Reminder] = []
        while self._attempt < prepared.max_attempts:
            self._attempt += 1
            self._stage = "generating"
            try:
                result = await self._generate(job, prepared, sampling, deadline)
            except ApplicationError as error:
                if error.type != ErrorType.input_too_long.value or shrunk:
                    raise
                shrunk = True
                if adopted(SHRINK_IS_NOT_AN_ATTEMPT):
                    self._attempt -= 1  # the engine saw no reply: this attempt runs again on the smaller context
                self._stage = "building_context"
                prepared = await self._prepare(job, SHRUNK_BUDGET_SHARE, reminders)
                continue
            self._stage = "validating"
            verdict = await workflow.execute_local_activity_method(
                JobActivities.check_reply,
                CheckRequest(reply=result.content, spec=spec, history=job.messages, finish_reason=result.finish_reason),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
                summary=f"check reply · attempt {self._attempt}",
            )
            attempt = Attempt(self._attempt, sampling, result, verdict)
            self._attempts.append(attempt)
            if verdict.valid:
                return attempt
            if not adopted(ESCALATION_PER_REASON):
                sampling = escalated_sampling(sampling, verdict.reasons, seed=self._new_seed())
                continue
            roleplay = job.job_type is JobType.roleplay and prepared.character is not None
            # The reminders speak to the character; an impersonation's own instruction is already last.
            after = reminders_after(verdict.reasons, roleplay) if not impersonate else []
            wanted = list(dict.fromkeys([*reminders, *after]))
            if wanted != reminders and self._attempt < prepared.max_attempts:
                reminders = wanted
                self._stage = "building_context"
                prepared = await self._prepare(job, SHRUNK_BUDGET_SHARE if shrunk else 1.0, reminders)
            context = prepared.context
            ceiling = max_tokens_ceiling(
                job.sampling,
                max_tokens_for(job.job_type, job.sampling, job.mode),
                prepared.max_tokens_cap,
                context.budget,
                context.prompt_tokens,
            )
            sampling = next_sampling(sampling, verdict.reasons, self._new_seed(), ceiling)
        best = best_returnable(self._attempts)
        if best is None:
            reasons = ", ".join(r for a in self._attempts for r in a.verdict.reasons) or "none"
            raise ApplicationError(
                f"no reply that can be returned in {len(self._attempts)} attempts (reasons: {reasons})",
                type=ErrorType.no_valid_reply.value,
                non_retryable=True,
            )
        return best

    async def _generate(
        self, job: ChatJob, prepared: Prepared, sampling: ResolvedSampling, deadline: datetime
    ) -> GenerateResult:
        request = GenerateRequest(
            job_id=job.job_id,
            attempt=self._attempt,
            messages=prepared.context.messages,
            sampling=sampling,
            stop=prepared.context.stop,
            speaker=self._speaker,
        )
        return await self._generation(job, request, deadline, f"{self._summary} · attempt {self._attempt}")

    async def _generation(
        self,
        job: ChatJob,
        request: GenerateRequest,
        deadline: datetime,
        summary: str,
        priority: Priority | None = None,
    ) -> GenerateResult:
        """The generate activity on the generation queue; `priority` None: the job's, one level up for its later
        generations."""
        before = workflow.now()
        remaining = deadline - before
        if remaining <= timedelta(0):
            raise deadline_passed()
        until_deadline = adopted(GENERATE_RETRIES_UNTIL_DEADLINE)
        self._generations += 1
        if priority is None and adopted(LATER_ATTEMPTS_GO_FIRST):
            level, fairness_key = self._queue_place(job)
            priority = generation_priority(level, later=self._generations > 1, fairness_key=fairness_key)
        try:
            result = await workflow.execute_activity_method(
                ChatActivities.generate,
                request,
                task_queue=generate_task_queue(workflow.info().task_queue),
                schedule_to_close_timeout=remaining,
                start_to_close_timeout=min(GENERATE_TIMEOUT, remaining),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=GENERATE_RETRY if until_deadline else GENERATE_RETRY_BEFORE_OUTAGES,
                # The activity flushes its last deltas to the stream before the workflow may close.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=summary,
                priority=priority or Priority.default,
            )
        except ActivityError as error:
            if is_cancelled_exception(error):
                raise
            # Temporal stops retrying, with the last try's error, when the next try would start after the
            # schedule-to-close timeout: the job's deadline, reached while the engine was still down.
            if workflow.now() >= deadline or (until_deadline and error.retry_state == RetryState.TIMEOUT):
                raise deadline_passed() from error
            raise failure(error) from error
        finally:
            self._generation_ms += (workflow.now() - before).total_seconds() * 1000
        self._publish_unstreamed(request, result)
        return result

    def _publish_unstreamed(self, request: GenerateRequest, result: GenerateResult) -> None:
        """The reply's deltas the activity did not signal (its last batch), as one delta, before anything after it.
        No patch: publishing is no command, and a result from before streamed_chars (None) publishes nothing, as its
        activity signalled every delta (a patch would cost every job a marker and a TemporalChangeVersion upsert)."""
        streamed = result.streamed_chars
        if request.purpose == "reply" and streamed is not None and streamed < len(result.content):
            self._events.publish(
                DeltaEvent(attempt=request.attempt, speaker=request.speaker, text=result.content[streamed:])
            )

    async def _memory_after_reply(self, job: ChatJob, prepared: Prepared, deadline: datetime) -> Memory | None:
        """The memory to return with the reply: the job's, merged with what its window dropped beyond what the
        summary covers (the context's `memory.summarize_until`). Whatever fails in the summary (the engine, the
        deadline, every summary rejected) keeps the job's memory: the reply is the job's point."""
        block = prepared.context.memory
        if job.memory is None or block is None or block.summarize_until is None:
            return job.memory
        if not adopted(STORY_MEMORY):
            return job.memory
        until = min(deadline, workflow.now() + SUMMARY_WINDOW)
        try:
            return await self._summarized(
                job,
                prepared,
                job.memory,
                block.summarize_until,
                until,
                self._summary_attempts,
                summary_priority(*self._queue_place(job)),
            )
        except FailureError as error:
            if is_cancelled_exception(error):
                raise
            workflow.logger.warning("summary failed for job %s (%s): memory kept", job.job_id, type(error).__name__)
            return job.memory

    async def _summarize_job(
        self, job: ChatJob, prepared: Prepared, deadline: datetime, started: datetime
    ) -> ChatResult:
        """A chat_summarize job: the whole conversation merged into the job's memory; its summary is the reply.
        When no summary passes, the best rejected one is returned flagged, as a reply would be, and the memory as
        it came (a bad summary never becomes memory)."""
        adopted(STORY_MEMORY)
        before = job.memory or Memory()
        memory = await self._summarized(job, prepared, before, len(job.messages), deadline, self._attempts, None)
        valid = [a for a in self._attempts if a.verdict.valid]
        chosen = valid[-1] if valid else best_returnable(self._attempts)
        if chosen is None:
            reasons = ", ".join(r for a in self._attempts for r in a.verdict.reasons) or "none"
            raise ApplicationError(
                f"no summary that can be returned in {len(self._attempts)} attempts (reasons: {reasons})",
                type=ErrorType.no_valid_reply.value,
                non_retryable=True,
            )
        return await self._finish(job, prepared, chosen, started=started, memory=memory)

    async def _character_job(
        self, job: ChatJob, prepared: Prepared, deadline: datetime, started: datetime
    ) -> ChatResult:
        """A chat_character job: prepare_card (local) → the output attempts, each held to `card_schema` and checked
        by check_card (local). The job's memory comes back as it came. No patch: no run begun before
        chat_character existed reaches this branch."""
        prompt = await workflow.execute_local_activity_method(
            JobActivities.prepare_card,
            job,
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="prepare card",
        )
        base = max_tokens_for(job.job_type, job.sampling)
        check = CardCheck(
            reply="",
            finish_reason="",
            profile=starting_profile(prepared.character),
            user_name=job.user_name,
            character_spoke=character_spoke(job),
        )

        chosen, late = await self._output_attempts(
            job,
            prepared,
            deadline,
            OutputSpec(
                purpose="card",
                what="card",
                messages=prompt.messages,
                sampling=first_sampling(job.job_type, job.sampling, seed=self._new_seed()),
                ceiling=max_tokens_ceiling(
                    job.sampling, base, prepared.max_tokens_cap, prompt.budget, prompt.prompt_tokens
                ),
                schema=card_schema,
                check=JobActivities.check_card,
                check_input=lambda result: check.model_copy(
                    update={"reply": result.content, "finish_reason": result.finish_reason}
                ),
            ),
        )
        result = await self._finish(job, prepared, chosen, started=started, late=late, memory=job.memory)
        card = chosen.verdict.card if isinstance(chosen.verdict, CardVerdict) else None
        return result.model_copy(update={"card": card})

    async def _summarized(
        self,
        job: ChatJob,
        prepared: Prepared,
        memory: Memory,
        until: int,
        deadline: datetime,
        attempts: list[Attempt],
        priority: Priority | None,
    ) -> Memory:
        """`memory` merged with the job's messages up to `until`, a step per prompt's worth; a step whose
        summary never passes ends the steps, keeping what the ones before it made."""
        self._stage = "summarizing"
        for _ in range(MAX_SUMMARY_STEPS):
            if memory.covers >= until:
                break
            step = await self._summary_step(job, prepared, memory, until, deadline, attempts, priority)
            if step is None or step.covers <= memory.covers:
                break
            memory = step
        return memory

    async def _summary_step(
        self,
        job: ChatJob,
        prepared: Prepared,
        memory: Memory,
        until: int,
        deadline: datetime,
        attempts: list[Attempt],
        priority: Priority | None,
    ) -> Memory | None:
        prompt = await workflow.execute_local_activity_method(
            JobActivities.prepare_summary,
            SummaryRequest(job=job, memory=memory, until=until),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="prepare summary",
        )
        # A reply job's sampling is for its reply; only its seed carries over, so that a seeded job is repeatable.
        requested = job.sampling if job.job_type is JobType.summarize else Sampling(seed=job.sampling.seed)
        sampling = first_sampling(JobType.summarize, requested, seed=self._new_seed())
        sampling = sampling.model_copy(update={"max_tokens": min(sampling.max_tokens, SUMMARY_MAX_TOKENS)})
        check = SummaryCheck(
            summary="", finish_reason="", char_name=char_name(prepared.character), user_name=job.user_name
        )
        for _ in range(prepared.max_attempts):
            number = len(attempts) + 1
            if attempts is self._attempts:
                self._attempt = number
            request = GenerateRequest(
                job_id=job.job_id,
                attempt=number,
                messages=prompt.messages,
                sampling=sampling,
                stop=prompt.stop,
                purpose="summary",
            )
            result = await self._generation(job, request, deadline, f"{self._summary} · summary {number}", priority)
            verdict = await workflow.execute_local_activity_method(
                JobActivities.check_summary,
                check.model_copy(update={"summary": result.content, "finish_reason": result.finish_reason}),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
                summary=f"check summary {number}",
            )
            attempts.append(Attempt(number, sampling, result, verdict))
            if verdict.valid:
                return merged_memory(memory, verdict.cleaned, prompt.covers)
            sampling = next_sampling(sampling, verdict.reasons, self._new_seed(), sampling.max_tokens)
        return None

    async def _scene_job(self, job: ChatJob, prepared: Prepared, deadline: datetime, started: datetime) -> ChatResult:
        """A chat_scene job (workflows/scenes.py): prepare_scene (local) → the output attempts, each checked by
        check_scene (local); the result's `scene` is the chosen attempt's."""
        assert job.scene is not None
        sampling = scene_sampling(job, self._new_seed())
        prompt = await workflow.execute_local_activity_method(
            JobActivities.prepare_scene,
            SceneRequest(job=job, max_tokens=sampling.max_tokens),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="prepare scene",
        )
        check = SceneCheck(
            output="",
            finish_reason="",
            scene=job.scene,
            names=prompt.names,
            prefix=prompt.prefix,
            char_name=char_name(prepared.character),
            user_name=job.user_name,
        )

        chosen, late = await self._output_attempts(
            job,
            prepared,
            deadline,
            OutputSpec(
                purpose="scene",
                what="scene prompt",
                messages=prompt.messages,
                stop=prompt.stop,
                sampling=sampling,
                ceiling=sampling.max_tokens,
                schema=lambda _: prompt.json_schema,
                check=JobActivities.check_scene,
                check_input=lambda result: check.model_copy(
                    update={"output": result.content, "finish_reason": result.finish_reason}
                ),
            ),
        )
        result = await self._finish(job, prepared, chosen, started=started, late=late)
        return result.model_copy(update={"scene": getattr(chosen.verdict, "scene", None)})

    async def _output_attempts(
        self,
        job: ChatJob,
        prepared: Prepared,
        deadline: datetime,
        spec: OutputSpec,
    ) -> tuple[Attempt, bool]:
        """A structured output's attempts (chat_scene, chat_character): generate → check, again with a new seed and
        sampling changed by the reasons while rejected. The chosen attempt: the valid one, else the best rejected
        one (flagged; also when the deadline ends the attempts, then `late`); none to return: NoValidReply, or
        Deadline when the deadline came first."""
        sampling, chosen, late = spec.sampling, None, False
        try:
            while self._attempt < prepared.max_attempts and chosen is None:
                self._attempt += 1
                self._stage = "generating"
                request = GenerateRequest(
                    job_id=job.job_id,
                    attempt=self._attempt,
                    messages=spec.messages,
                    sampling=sampling,
                    stop=spec.stop,
                    purpose=spec.purpose,
                    json_schema=spec.schema(sampling.max_tokens),
                )
                result = await self._generation(
                    job, request, deadline, f"{self._summary} · {spec.purpose} {self._attempt}"
                )
                self._stage = "validating"
                verdict = await workflow.execute_local_activity_method(
                    spec.check,
                    spec.check_input(result),
                    start_to_close_timeout=LOCAL_TIMEOUT,
                    retry_policy=LOCAL_RETRY,
                    summary=f"check {spec.purpose} · attempt {self._attempt}",
                )
                self._attempts.append(Attempt(self._attempt, sampling, result, verdict))
                if verdict.valid:
                    chosen = self._attempts[-1]
                else:
                    sampling = next_sampling(sampling, verdict.reasons, self._new_seed(), spec.ceiling)
        except ApplicationError as error:
            if error.type != ErrorType.deadline.value:
                raise
            late = True
        chosen = chosen or best_returnable(self._attempts)
        if chosen is None:
            if late:
                raise deadline_passed()
            reasons = ", ".join(r for a in self._attempts for r in a.verdict.reasons) or "none"
            raise ApplicationError(
                f"no {spec.what} that can be returned in {len(self._attempts)} attempts (reasons: {reasons})",
                type=ErrorType.no_valid_reply.value,
                non_retryable=True,
            )
        return chosen, late

    async def _finish(
        self,
        job: ChatJob,
        prepared: Prepared,
        chosen: Attempt,
        *,
        started: datetime,
        late: bool = False,
        memory: Memory | None = None,
        emotion: Emotions | None = None,
    ) -> ChatResult:
        results = [a.result for a in self._attempts]
        timings = Timings(
            context_ms=self._context_ms,
            queue_ms=sum(r.queue_ms for r in results),
            first_token_ms=chosen.result.first_token_ms,
            generation_ms=self._generation_ms,
            engine_ms=sum(r.engine_ms for r in results),
            total_ms=(workflow.now() - started).total_seconds() * 1000,
        )
        result = chat_result(job, self._attempts, chosen, timings, prepared.context.prompt_tokens, late, memory)
        # Speech is computed here, from the returned reply: pure, so no command and no marker (see workflows/speech.py).
        result = with_speech(job, result, [prepared.character])
        result = result.model_copy(update={"emotion": emotion})
        await self._record_metrics(job, prepared.character, self._attempts[0].sampling, result)
        return result

    async def _record_metrics(
        self, job: ChatJob, character: Character | None, first: ResolvedSampling, result: ChatResult
    ) -> None:
        metrics = job_metrics(job, character, first, result)
        if adopted(METRICS_WITHOUT_LOCAL_ACTIVITY):
            if workflow.unsafe.is_replaying():
                return
            try:
                log_job_metrics(metrics)
            except Exception as error:  # e.g. a log sink that raises: the reply is returned all the same
                workflow.logger.warning("metrics not recorded for job %s: %s", job.job_id, type(error).__name__)
            return
        try:
            await workflow.execute_local_activity_method(
                JobActivities.record_metrics,
                metrics,
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
                summary="record metrics",
            )
        except FailureError as error:  # the reply is the job's point: it is returned all the same
            if is_cancelled_exception(error) or not adopted(METRICS_NEVER_COST_THE_REPLY):
                raise
            workflow.logger.warning("metrics not recorded for job %s: %s", job.job_id, type(error).__name__)

    async def _user_emotion_of(self, job: ChatJob) -> Emotion:
        """The label of the user's last message, before the reply's context is built (its note names it)."""
        start = workflow.info().start_time
        deadline = start + timedelta(seconds=job.deadline_seconds or PREPARE_DEADLINE_UNLESS_GIVEN)
        return await self._emotion_of(job, EmotionRequest(job=job), min(deadline, workflow.now() + EMOTION_WINDOW))

    async def _emotions(self, job: ChatJob, chosen: Attempt, until: datetime) -> Emotions | None:
        """The labels the job asked for: the returned reply's now (its generation ends by `until`), the user's
        message's from before the reply."""
        if job.emotion is None:
            return None
        reply = None
        if job.emotion.of_reply:
            until = min(until, workflow.now() + EMOTION_WINDOW)
            reply = await self._emotion_of(job, EmotionRequest(reply=chosen.verdict.cleaned), until)
        return Emotions(reply=reply, user=self._user_emotion)

    async def _emotion_of(self, job: ChatJob, request: EmotionRequest, until: datetime) -> Emotion:
        """A text's label: the emotion_prompt local activity, one short generation constrained to the labels, its
        output read leniently. The reply is the job's point: a generation that fails or is not done by `until`
        labels `neutral` (FALLBACK); only the user's message's prompt fails the job, when the job breaks its limits
        or the policy."""
        what = "user" if request.job is not None else "reply"
        if workflow.now() >= until:
            return FALLBACK
        try:
            messages = await workflow.execute_local_activity_method(
                JobActivities.emotion_prompt,
                request,
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
                summary=f"emotion prompt · {what}",
            )
            seed = job.sampling.seed if job.sampling.seed is not None else self._new_seed()
            generation = GenerateRequest(
                job_id=job.job_id,
                attempt=1,
                messages=messages,
                sampling=emotion_sampling(seed),
                purpose="emotion",
                json_schema=EMOTION_SCHEMA,
            )
            result = await self._generation(job, generation, until, f"{self._summary} · emotion of {what}")
        except ActivityError as error:  # the prompt's local activity, or a cancelled generation
            if is_cancelled_exception(error):
                raise
            if request.job is not None:
                raise failure(error) from error  # the job breaks its limits or the policy
            return self._unlabelled(job, what, error)
        except ApplicationError as error:  # the generation, as _generation ends it
            return self._unlabelled(job, what, error)
        return emotion_label(result.content) or FALLBACK

    def _unlabelled(self, job: ChatJob, what: str, error: FailureError) -> Emotion:
        kind = error.type if isinstance(error, ApplicationError) else type(error).__name__
        workflow.logger.warning("emotion of the %s not labelled for job %s (%s): neutral", what, job.job_id, kind)
        return FALLBACK

    def _queue_place(self, job: ChatJob) -> tuple[int, str | None]:
        """The job's priority level and fairness key."""
        if adopted(JOB_PRIORITY_AND_FAIRNESS):
            return job.priority, job.user_id
        return DEFAULT_PRIORITY, None

    def _new_seed(self) -> int:
        return workflow.random().randint(0, 2**31 - 1)
