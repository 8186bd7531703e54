"""The backend's side: start a chat job, get its result. Workflow id `chat-{job_id}`, so submitting the
same job twice runs it once."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from characters import bundled_character
from orchestrator.settings import Settings
from workflows.chat import ChatWorkflow
from workflows.models import ChatJob, ChatResult, limit_problems

# The workflow enforces the job's deadline itself; this is Temporal's backstop past it.
EXECUTION_TIMEOUT_MARGIN = timedelta(seconds=60)


class InvalidJob(ValueError):
    """The job asks for more than this deployment allows; nothing was started."""


def workflow_id(job_id: str) -> str:
    return f"chat-{job_id}"


class ChatClient:
    def __init__(self, client: Client, settings: Settings) -> None:
        self.temporal = client
        self.settings = settings

    def prepared(self, job: ChatJob) -> ChatJob:
        """The job as it will run: checked before anything starts, deadline defaulted from settings."""
        problems = limit_problems(job, self.settings.job_limits)
        if problems:
            raise InvalidJob("invalid job: " + "; ".join(problems))
        if isinstance(job.character, str):
            bundled_character(job.character)  # raises UnknownCharacter naming the known ones
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
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                result_type=ChatResult,
            )
        except WorkflowAlreadyStartedError:  # already ran to completion: the same job, not a new one
            return self.handle(job.job_id)

    def handle(self, job_id: str) -> WorkflowHandle[ChatWorkflow, ChatResult]:
        return self.temporal.get_workflow_handle_for(ChatWorkflow.run, workflow_id(job_id))

    async def result(self, job_id: str) -> ChatResult:
        return await self.handle(job_id).result()
