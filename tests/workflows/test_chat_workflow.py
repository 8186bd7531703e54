"""ChatWorkflow through a real worker, on the real Temporal dev server, against the real model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from loguru import logger
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from characters import Character, UnknownCharacter
from orchestrator.client import ChatClient
from orchestrator.settings import Settings
from orchestrator.worker import run_workers
from tests.fake_engine import FakeEngine, Scripted, reply_stream
from workflows.models import ChatJob, ChatResult, JobType

USER_TEXT = "*pushes the door open* Evening, Mira. Any rooms left tonight?"


def job(**overrides: object) -> ChatJob:
    values: dict[str, object] = {
        "job_id": f"test-{uuid.uuid4().hex[:10]}",
        "job_type": JobType.roleplay,
        "messages": [{"role": "user", "content": USER_TEXT}],
        "user_name": "Tam",
        "character": "Mira",
        "sampling": {"max_tokens": 48, "seed": 11},
    }
    values.update(overrides)
    return ChatJob.model_validate(values)


async def generate_events(client: Client, workflow_id: str) -> tuple[list, list]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    return scheduled, started


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    yield lines
    logger.remove(sink)


async def test_roleplay_job_runs_end_to_end_on_the_real_model(
    chat: ChatClient, client: Client, log_lines: list[str]
) -> None:
    submitted = job()
    handle = await chat.submit(submitted)
    result = await handle.result()

    assert isinstance(result, ChatResult)
    assert result.job_id == submitted.job_id
    assert len(result.content) >= 10
    assert result.finish_reason in ("stop", "length")
    assert 1 <= result.attempts <= 3
    assert len(result.reasons) >= result.attempts - 1
    assert 0 < result.completion_tokens <= 48 * result.attempts
    assert result.timings.engine_ms > 0 and result.timings.total_ms >= result.timings.engine_ms

    scheduled, _ = await generate_events(client, handle.id)
    assert [s.activity_type.name for s in scheduled] == ["generate"] * result.attempts
    assert {s.task_queue.name for s in scheduled} == {"chat-generate"}

    # Privacy: neither the user's text nor the reply reaches the logs.
    logged = "\n".join(log_lines)
    assert f"job={submitted.job_id}" in logged
    assert USER_TEXT not in logged and result.content not in logged


async def test_same_job_id_runs_once(chat: ChatClient, client: Client) -> None:
    submitted = job(sampling={"max_tokens": 16, "seed": 3})
    first = await chat.submit(submitted)
    again = await chat.submit(submitted)
    assert again.id == first.id
    await first.result()
    after = await chat.submit(submitted)  # after completion, too
    assert (await after.result()).content == (await first.result()).content
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{first.id}'")]
    assert len(runs) == 1


async def test_inline_character_and_conversation_job(chat: ChatClient) -> None:
    inline = Character(name="Orrin", description="A grumpy lighthouse keeper.", personality="Terse, kind underneath.")
    result = await (await chat.submit(job(character=inline, sampling={"max_tokens": 32, "seed": 5}))).result()
    assert result.content
    conversation = job(job_type=JobType.conversation, character=None, sampling={"max_tokens": 32, "seed": 5})
    assert (await (await chat.submit(conversation)).result()).content


async def test_unknown_character_is_refused_before_anything_starts(chat: ChatClient, client: Client) -> None:
    submitted = job(character="Nobody")
    with pytest.raises(UnknownCharacter, match="Mira"):
        await chat.submit(submitted)
    assert [w async for w in client.list_workflows(f"WorkflowId = 'chat-{submitted.job_id}'")] == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"job_id": "bad-1", "messages": []}, "job.messages"),
        ({"job_id": "bad-2", "messages": [{"role": "narrator", "content": "x"}]}, "job.messages.0.role"),
        (
            {"job_id": "bad-3", "messages": [{"role": "user", "content": "x"}], "sampling": {"temperature": 3}},
            "job.sampling.temperature",
        ),
        ({"job_id": "bad-4", "messages": [{"role": "user", "content": "x"}], "character": "Nobody"}, "job.character"),
        ({"job_id": "bad-5", "messages": [{"role": "assistant", "content": "x"}]}, "job.messages"),
        ("not a job at all", "job"),
    ],
)
async def test_bad_raw_input_fails_the_workflow_at_once_naming_the_field(
    chat: ChatClient, client: Client, settings: Settings, raw: object, field: str
) -> None:
    # A backend in another language sends plain JSON: no client-side validation protects the workflow.
    handle = await client.start_workflow(
        "ChatWorkflow", raw, id=f"raw-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=30)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidJob" and cause.non_retryable
    assert field in cause.message
    scheduled, _ = await generate_events(client, handle.id)
    assert scheduled == []


@pytest.fixture
async def isolated_namespace(client: Client) -> str:
    """A second namespace on the same dev server, for a worker wired to a broken or fake engine."""
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest

    name = f"faults-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86400))
    )
    return name


async def worker_against(settings: Settings, namespace: str, base_url: str, **more: str) -> AsyncIterator[ChatClient]:
    from orchestrator.worker import connect

    wired = settings.model_copy(update={"temporal_namespace": namespace, "inference_base_url": base_url, **more})
    for _ in range(50):  # a new namespace takes a moment to reach the frontend's cache
        try:
            wired_client = await connect(wired)
            await wired_client.count_workflows()
            break
        except Exception:
            await asyncio.sleep(0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(wired_client, wired, stop))
    try:
        yield ChatClient(wired_client, wired)
    finally:
        stop.set()
        await running


async def test_non_retryable_engine_error_fails_the_job_after_one_try(
    settings: Settings, isolated_namespace: str
) -> None:
    async for chat in worker_against(settings, isolated_namespace, f"{settings.inference_base_url}/nope"):
        handle = await chat.submit(job())
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause, ApplicationError)
        assert failure.value.cause.type == "EngineMisconfigured"
        _, started = await generate_events(chat.temporal, handle.id)
        assert [s.attempt for s in started] == [1]


async def test_engine_429_is_retried_by_temporal_within_one_attempt(
    settings: Settings, isolated_namespace: str
) -> None:
    # FAKE engine: the real llama.cpp server never answers 429.
    overloaded = Scripted(status=429, body={"error": "Model is overloaded", "error_type": "overloaded"})
    reply = "The rain hammers the shutters while I pour you a drink. Sit down and warm up."
    async with FakeEngine([overloaded, reply_stream(reply)]) as engine:
        async for chat in worker_against(settings, isolated_namespace, engine.base_url):
            handle = await chat.submit(job())
            result = await handle.result()
            _, started = await generate_events(chat.temporal, handle.id)
    assert result.content == reply and result.attempts == 1
    assert len(engine.requests) == 2
    assert [s.attempt for s in started] == [2]  # history keeps the last try's start; it says "attempt 2"


async def test_a_renamed_task_queue_keeps_generation_beside_it(settings: Settings, isolated_namespace: str) -> None:
    async for chat in worker_against(settings, isolated_namespace, settings.inference_base_url, task_queue="rp"):
        handle = await chat.submit(job(sampling={"max_tokens": 16, "seed": 2}))
        await handle.result()
        scheduled, _ = await generate_events(chat.temporal, handle.id)
    assert {s.task_queue.name for s in scheduled} == {"rp-generate"}


async def test_plain_json_start_and_result_with_the_temporal_cli(chat: ChatClient, settings: Settings) -> None:
    # What a backend in another language does: raw JSON in, raw JSON out, no Python models involved.
    from orchestrator.devstack import temporal_binary

    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    raw_job = json.dumps(
        {
            "job_id": workflow_id,
            "messages": [{"role": "user", "content": "Hi Mira!"}],
            "character": "Mira",
            "sampling": {"max_tokens": 24, "seed": 1},
        }
    )
    address = ["--address", settings.temporal_address, "--namespace", settings.temporal_namespace]

    async def temporal(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(temporal_binary()), *args, *address, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        return out.decode()

    await temporal(
        "workflow",
        "start",
        "--type",
        "ChatWorkflow",
        "--task-queue",
        settings.task_queue,
        "--workflow-id",
        workflow_id,
        "--input",
        raw_job,
    )
    result = json.loads(await temporal("workflow", "result", "--workflow-id", workflow_id, "--output", "json"))
    assert result["status"] == "COMPLETED"
    assert result["result"]["job_id"] == workflow_id and len(result["result"]["content"]) >= 10
