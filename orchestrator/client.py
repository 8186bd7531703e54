"""The backend's side: start a chat job, follow its reply as it is written, ask where it stands, cancel it,
get its result. Workflow id `chat-{job_id}`, so submitting the same job twice runs it once, and a different job
under a taken id is refused (JobConflict)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from pydantic import TypeAdapter, ValidationError
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RawValue, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.converter import DataConverter
from temporalio.exceptions import WorkflowAlreadyStartedError

from characters import UnknownCharacter, describe_validation_error, resolve
from orchestrator.codec import KeysFileError, data_converter, read_keys
from orchestrator.errors import StartupError
from orchestrator.settings import Settings
from workflows.chat import ChatWorkflow
from workflows.models import (
    STREAM_TOPIC,
    ChatJob,
    ChatResult,
    ErrorType,
    JobStatus,
    StreamEvent,
    limit_problems,
)
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


def payload_converter(settings: Settings, worker: bool = False) -> DataConverter:
    """Jobs and results as JSON, encrypted when CHAT_WORKER_PAYLOAD_KEYS_FILE names a keys file. A worker's
    converter hands on what it cannot decrypt (the workflow fails that job naming the key id); everyone
    else's fails naming it."""
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
    return data_converter(keys, keep_undecryptable=worker)


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
            raise InvalidJob("invalid job: " + "; ".join(problems))
        if job.deadline_seconds is None:
            job = job.model_copy(update={"deadline_seconds": self.settings.job_deadline_seconds})
        return job

    async def submit(self, job: ChatJob) -> WorkflowHandle[ChatWorkflow, ChatResult]:
        job = self.prepared(job)
        assert job.deadline_seconds is not None
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
                # Search attributes are the workflow's to set, also for jobs started without this client.
                static_summary=row_summary(job, resolve(job.character)),
            )
        except WorkflowAlreadyStartedError:  # running or finished: the same job again, or a conflict
            if await self.submitted_job(job.job_id) != job:
                raise JobConflict(
                    f"job {job.job_id} already exists with different content; a new job needs a new job_id"
                ) from None
            return self.handle(job.job_id)

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
