"""The backend's side: start a chat job, follow its reply as it is written, ask where it stands, cancel it,
get its result. Workflow id `chat-{job_id}`, so submitting the same job twice runs it once, and a different job
under a taken id is refused (JobConflict). Optionally a job is refused at once when the generation backlog
could not serve it before its deadline (Overloaded)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.api.enums.v1 import PendingActivityState, TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue, TaskQueueStats
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RawValue, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.converter import DataConverter
from temporalio.exceptions import WorkflowAlreadyStartedError

from characters import UnknownCharacter, describe_validation_error, listed, resolve
from orchestrator.codec import KeysFileError, data_converter, read_keys
from orchestrator.errors import StartupError
from orchestrator.rpc import given_up_retried
from orchestrator.settings import Settings
from workflows.chat import ChatWorkflow
from workflows.models import (
    DEFAULT_PRIORITY,
    STREAM_TOPIC,
    ChatJob,
    ChatResult,
    ErrorType,
    JobStatus,
    StreamEvent,
    generate_task_queue,
    limit_problems,
)
from workflows.search_attributes import at_start
from workflows.summaries import row_summary

STREAM_EVENT = TypeAdapter(StreamEvent)

# The workflow enforces the job's deadline itself; this is Temporal's backstop past it.
EXECUTION_TIMEOUT_MARGIN = timedelta(seconds=60)


class JobConflict(ValueError):
    """A job id that is already taken by a job with other content; nothing was started."""


class InvalidJob(ValueError):
    """The job was refused before anything started, for what would fail the workflow with the error type
    `InvalidJob` (an unknown character, a limit of this deployment); the message names each field."""

    type = ErrorType.invalid_job


class Overloaded(RuntimeError):
    """The job was refused at once (`submit(..., refuse_when_overloaded=True)`): the generations queued ahead
    of it would take longer than its deadline at the recent service rate; nothing was started."""

    def __init__(self, job_id: str, wait: timedelta, deadline_seconds: float) -> None:
        super().__init__(
            f"job {job_id} refused: overloaded, the generations queued ahead of it need about "
            f"{wait.total_seconds():.0f} s at the recent service rate, past its deadline of {deadline_seconds:g} s; "
            "nothing was started"
        )
        self.job_id = job_id
        self.wait = wait
        self.deadline_seconds = deadline_seconds


class GenerationBacklog(BaseModel):
    """The generation queue as a new job of a given priority meets it."""

    # Generations queued at the job's priority or higher, which its first one waits behind at most (fairness serves
    # a user with fewer queued sooner: for such a user the estimate errs long).
    ahead: int
    dispatch_rate: float  # generations handed to workers per second over the server's last ~30 s, all priorities


def backlog_ahead(stats_by_priority_key: Mapping[int, TaskQueueStats], priority: int) -> GenerationBacklog:
    """From DescribeTaskQueue's stats by priority key (1 highest … 5 lowest)."""
    return GenerationBacklog(
        ahead=sum(
            s.approximate_backlog_count
            for key, s in stats_by_priority_key.items()
            if (key or DEFAULT_PRIORITY) <= priority  # tasks without a priority are listed under key 0
        ),
        dispatch_rate=sum(s.tasks_dispatch_rate for s in stats_by_priority_key.values()),
    )


def estimated_wait(backlog: GenerationBacklog) -> timedelta | None:
    """How long until the backlog ahead has been handed to workers at the recent rate; None when it cannot be
    told: a backlog but nothing dispatched lately (no worker polls, or the workers wait out an engine outage)."""
    if backlog.ahead == 0:
        return timedelta(0)
    if backlog.dispatch_rate <= 0:
        return None
    return timedelta(seconds=backlog.ahead / backlog.dispatch_rate)


def payload_converter(settings: Settings) -> DataConverter:
    """Jobs and results as JSON, encrypted when CHAT_WORKER_PAYLOAD_KEYS_FILE names a keys file. What it cannot
    decrypt fails naming the key id (a worker's copy hands it on instead: orchestrator.worker.worker_client)."""
    if settings.payload_keys_file is None:
        if not settings.allow_plaintext:
            raise StartupError(
                "CHAT_WORKER_PAYLOAD_KEYS_FILE is not set: chat text would be stored unencrypted in Temporal. "
                "Set it (python -m orchestrator keys new > FILE makes a key) or allow plaintext explicitly "
                "with CHAT_WORKER_ALLOW_PLAINTEXT=1"
            )
        return data_converter(None)
    try:
        keys = read_keys(settings.payload_keys_file)
    except KeysFileError as error:
        raise StartupError(f"CHAT_WORKER_PAYLOAD_KEYS_FILE: {error}") from None
    return data_converter(keys)


async def connect(settings: Settings) -> Client:
    """A Temporal client for this deployment: its address and namespace, its payload converter."""
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, data_converter=payload_converter(settings)
    )


def workflow_id(job_id: str) -> str:
    return f"chat-{job_id}"


class ChatClient:
    def __init__(self, client: Client, settings: Settings) -> None:
        self.temporal = client
        self.settings = settings

    def prepared(self, job: ChatJob) -> ChatJob:
        """The job as it will run: checked before anything starts, deadline defaulted from settings."""
        problems = limit_problems(job, self.settings.job_limits)
        try:
            resolve(job.character)
        except UnknownCharacter as error:
            problems.append(f"job.character: {error}")
        if problems:
            raise InvalidJob("invalid job: " + listed(problems))
        if job.deadline_seconds is None:
            job = job.model_copy(update={"deadline_seconds": self.settings.job_deadline_seconds})
        return job

    async def submit(
        self, job: ChatJob, *, refuse_when_overloaded: bool = False
    ) -> WorkflowHandle[ChatWorkflow, ChatResult]:
        """Start the job (or find it started). With `refuse_when_overloaded`, raise Overloaded instead when the
        generations queued ahead of it would outlast its deadline at the recent service rate (not when that
        rate is unknown: see `estimated_wait`); checked before the start, so also for a resubmitted id. A start
        the server gave up on is tried again (orchestrator/rpc.py): the workflow id makes a repeat find the job
        started."""
        job = self.prepared(job)
        assert job.deadline_seconds is not None
        if refuse_when_overloaded:
            wait = estimated_wait(await self.generation_backlog(job.priority))
            if wait is not None and wait.total_seconds() > job.deadline_seconds:
                raise Overloaded(job.job_id, wait, job.deadline_seconds)
        return await given_up_retried(lambda: self._started(job))

    async def _started(self, job: ChatJob) -> WorkflowHandle[ChatWorkflow, ChatResult]:
        """The job's workflow, started now or found started with the same job."""
        assert job.deadline_seconds is not None
        character = resolve(job.character)
        try:
            return await self.temporal.start_workflow(
                ChatWorkflow.run,
                job,
                id=workflow_id(job.job_id),
                task_queue=self.settings.task_queue,
                execution_timeout=timedelta(seconds=job.deadline_seconds) + EXECUTION_TIMEOUT_MARGIN,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                result_type=ChatResult,
                # The workflow sets those a start lacks (a raw start's, a group's speaker) or gets wrong.
                search_attributes=at_start(job.job_type.value, character.name if character else None),
                static_summary=row_summary(job, character),
            )
        except WorkflowAlreadyStartedError:  # running or finished: the same job again, or a conflict
            if await self.submitted_job(job.job_id) != job:
                raise JobConflict(
                    f"job {job.job_id} already exists with different content; a new job needs a new job_id"
                ) from None
            return self.handle(job.job_id)

    async def generation_backlog(self, priority: int) -> GenerationBacklog:
        """The generation queue's backlog ahead of a new job of this priority, from Temporal's task queue stats
        (approximate, and cached by the server for up to 5 s)."""
        response = await self.temporal.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.temporal.namespace,
                task_queue=TaskQueue(
                    name=generate_task_queue(self.settings.task_queue), kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL
                ),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                report_stats=True,
            )
        )
        return backlog_ahead(response.stats_by_priority_key, priority)

    async def submitted_job(self, job_id: str) -> ChatJob | None:
        """The job as it was first submitted under this id (its workflow's input), or None when that input is
        not a job this client would have sent."""
        async for event in self.handle(job_id).fetch_history_events():
            payloads = list(event.workflow_execution_started_event_attributes.input.payloads)
            try:
                [raw] = await self.temporal.data_converter.decode(payloads, [dict])
                return ChatJob.model_validate(raw)
            except ValueError:
                return None
        return None

    def handle(self, job_id: str) -> WorkflowHandle[ChatWorkflow, ChatResult]:
        return self.temporal.get_workflow_handle_for(ChatWorkflow.run, workflow_id(job_id))

    async def result(self, job_id: str) -> ChatResult:
        return await self.handle(job_id).result()

    async def stream(self, job_id: str, from_offset: int = 0) -> AsyncIterator[StreamEvent]:
        """The job's events as they happen: delta, reset, then done, failed or cancelled (the last one).
        Resume from an offset after a reconnect; after the job ended, what it retained is replayed."""
        stream = WorkflowStreamClient.create(self.temporal, workflow_id(job_id))
        async for item in stream.subscribe([STREAM_TOPIC], from_offset=from_offset, result_type=RawValue):
            try:
                event = STREAM_EVENT.validate_json(item.data.payload.data)
            except ValidationError as error:  # its str() would quote the event, i.e. chat text
                raise ValueError(f"job {job_id}: {describe_validation_error(error, 'stream event')}") from None
            yield event
            if event.type in ("done", "failed", "cancelled"):
                return

    async def status(self, job_id: str) -> JobStatus:
        """Where the job stands; `tokens` includes the running generation's, from its last heartbeat."""
        handle = self.handle(job_id)
        status = await handle.query(ChatWorkflow.status)
        description = await handle.describe()
        streaming = [
            a
            for a in description.raw_description.pending_activities
            if a.activity_type.name == "generate" and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ]
        if streaming and streaming[0].heartbeat_details.payloads:
            details = list(streaming[0].heartbeat_details.payloads)[:1]  # tokens; the second is for the next try
            running = (await self.temporal.data_converter.decode(details, [int]))[0]
            status = status.model_copy(update={"tokens": status.tokens + running})
        return status

    async def cancel(self, job_id: str) -> None:
        """Cancel the job: its generation stops at the engine and the workflow ends cancelled."""
        await self.handle(job_id).cancel()
