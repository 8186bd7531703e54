"""What several test modules share: where things are, the CLI as a subprocess, a worker wired to a given
engine, a typical roleplay job, and what a job's history says about its generations. Fixtures live in
conftest.py; test modules import helpers only from here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError

from orchestrator.client import ChatClient, connect
from orchestrator.settings import Settings
from orchestrator.worker import workers_running
from workflows.chat import ChatWorkflow
from workflows.models import ChatJob, ChatResult, GenerateRequest, JobType, Message, Verdict

ROOT = Path(__file__).resolve().parents[1]
# <checkout>/../shared: the real character cards, read in place, never copied into the repo.
SHARED = ROOT.parent / "shared"

USER_TEXT = "*pushes the door open* Evening, Mira. Any rooms left tonight?"


def job(**overrides: object) -> ChatJob:
    """A short roleplay job with Mira; any field can be overridden."""
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


CHAT_WORDS = "tide lantern rope harbour gull salt storm quay cellar ledger barrel oar net chapel bell tower".split()


def long_chat(turns: int, seed: int = 3, mention: dict[int, str] | None = None) -> list[Message]:
    """A greeting, then `turns` exchanges of varied length (words from CHAT_WORDS) ending on the user's;
    `mention` puts a word into the user message of the given turns."""
    rng = random.Random(seed)
    mention = mention or {}
    messages = [Message(role="assistant", content="*Mira looks up from the bar.* Evening.")]
    for turn in range(turns):
        said = " ".join(rng.choice(CHAT_WORDS) for _ in range(rng.randint(4, 20)))
        messages.append(Message(role="user", content=f"Turn {turn}: {said} {mention.get(turn, '')}".strip()))
        if turn < turns - 1:
            reply = " ".join(rng.choice(CHAT_WORDS) for _ in range(rng.randint(20, 70)))
            messages.append(Message(role="assistant", content=f"*Mira answers {turn}.* {reply}"))
    return messages


async def submitted(
    chat: ChatClient,
    count: int,
    *,
    max_tokens: int = 16,
    deadline_seconds: int = 90,
    first_seed: int = 0,
    **overrides: object,
) -> list[str]:
    """The ids of `count` short jobs (`job` with `overrides`), submitted, with seeds from `first_seed` on."""
    jobs = [
        job(sampling={"max_tokens": max_tokens, "seed": seed}, deadline_seconds=deadline_seconds, **overrides)
        for seed in range(first_seed, first_seed + count)
    ]
    for chat_job in jobs:
        await chat.submit(chat_job)
    return [chat_job.job_id for chat_job in jobs]


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess (`python -m orchestrator …`) that talks to this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    env.update(
        CHAT_WORKER_TEMPORAL_ADDRESS=settings.temporal_address,
        CHAT_WORKER_TEMPORAL_UI_PORT=str(settings.temporal_ui_port),
        CHAT_WORKER_TEMPORAL_HTTP_PORT=str(settings.temporal_http_port),
        CHAT_WORKER_TEMPORAL_METRICS_PORT=str(settings.temporal_metrics_port),
        CHAT_WORKER_INFERENCE_BASE_URL=settings.inference_base_url,
        CHAT_WORKER_STATE_DIR=str(settings.state_dir),
        # Off unless the settings name an address: `dev` would take 127.0.0.1:9464, which a `make dev` may hold.
        CHAT_WORKER_METRICS_ADDRESS=settings.metrics_address or "",
    )
    return env


def run(
    *args: str | Path,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m orchestrator ARGS` as a user runs it; stdin is empty unless given."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *map(str, args)],
        cwd=cwd,
        env=env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def started(*args: str, env: dict[str, str], stdout: int = subprocess.DEVNULL) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


async def arun(*args: str, env: dict[str, str], within_seconds: float = 120) -> subprocess.CompletedProcess[str]:
    """`run` without blocking the event loop, which the session's in-process worker shares."""
    process = await started(*args, env=env, stdout=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=within_seconds)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


@asynccontextmanager
async def worker_against(
    settings: Settings, namespace: str, base_url: str, **more: object
) -> AsyncIterator[ChatClient]:
    """A worker in `namespace` whose engine is `base_url` (e.g. a fault-injecting fake), and a client for it."""
    wired = settings.model_copy(update={"temporal_namespace": namespace, "inference_base_url": base_url, **more})
    for _ in range(50):  # a new namespace takes a moment to reach the frontend's cache
        try:
            wired_client = await connect(wired)
            await wired_client.count_workflows()
            break
        except Exception:
            await asyncio.sleep(0.2)
    async with workers_running(wired_client, wired):
        yield ChatClient(wired_client, wired)


async def generation_started(chat: ChatClient, job_id: str, attempt: int = 1) -> None:
    """Returns once the job's generation for this attempt runs on a worker (wrap it in a guard timeout). The attempt
    is read first: once the workflow is at it, the generations before it have ended, so a generation running then is
    this attempt's (read the other way round, the one before could still be running when read)."""
    while True:
        if (await chat.status(job_id)).attempt == attempt:
            pending = (await chat.handle(job_id).describe()).raw_description.pending_activities
            if any(a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for a in pending):
                return
        await asyncio.sleep(0.1)


async def generations_held(chat: ChatClient, job_ids: list[str]) -> int:
    """The jobs' generation tasks that workers hold (started there: at the engine or waiting for one of its slots)."""
    held = 0
    for job_id in job_ids:
        pending = (await chat.handle(job_id).describe()).raw_description.pending_activities
        held += sum(a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for a in pending)
    return held


async def held_at_least(chat: ChatClient, job_ids: list[str], count: int) -> int:
    """Returns how many of the jobs' generation tasks workers hold once they hold `count` or more (wrap it in a
    guard timeout)."""
    while (held := await generations_held(chat, job_ids)) < count:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return held


async def cancelled(handles: list[WorkflowHandle[ChatWorkflow, ChatResult]]) -> None:
    """Each job cancelled and ended (e.g. a backlog that would keep a test's worker busy for minutes), before
    the worker stops."""
    for handle in handles:
        await handle.cancel()
    for handle in handles:
        with contextlib.suppress(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout=120)


async def failed_generate_tries(chat: ChatClient, job_id: str) -> int:
    """How many tries of the job's generations failed, from its history: Temporal writes one ActivityTaskStarted
    per generation, for its last try (`attempt` - 1 tries failed before it), and ActivityTaskFailed or
    ActivityTaskTimedOut when that one failed too."""
    history = await chat.handle(job_id).fetch_history()
    scheduled = {
        event.event_id
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "generate"
    }
    failed = 0
    for event in history.events:
        if event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            failed += started.attempt - 1 if started.scheduled_event_id in scheduled else 0
        for ended in ("activity_task_failed_event_attributes", "activity_task_timed_out_event_attributes"):
            if event.HasField(ended) and getattr(event, ended).scheduled_event_id in scheduled:
                failed += 1
    return failed


async def generate_backlog(chat: ChatClient) -> int:
    """Generation tasks waiting in the worker's `chat-generate` queue (Temporal's approximate count)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    described = await chat.temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=chat.temporal.namespace,
            task_queue=TaskQueue(name=chat.settings.generate_task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            report_stats=True,
        )
    )
    return described.stats.approximate_backlog_count


async def outcome(chat: ChatClient, job_id: str) -> ChatResult | str:
    """The job's result, or the type of its failure (the error class when it is not the workflow's own, e.g.
    TimeoutError for Temporal's execution timeout)."""
    try:
        return await chat.result(job_id)
    except WorkflowFailureError as failure:
        if isinstance(failure.cause, ApplicationError):
            return failure.cause.type or ""
        return type(failure.cause).__name__


async def outcomes(chat: ChatClient, job_ids: list[str], within_seconds: float) -> list[ChatResult | str]:
    """Every job's `outcome`; `within_seconds` guards against a job that never ends."""
    gathered = asyncio.gather(*(outcome(chat, job_id) for job_id in job_ids))
    return await asyncio.wait_for(gathered, timeout=within_seconds)


async def mid_generation(chat: ChatClient, job_ids: list[str], within_seconds: float = 120) -> None:
    """Returns once one of the jobs is generating and its reply has begun (tokens reported by heartbeat)."""

    async def begun() -> None:
        while True:
            for job_id in job_ids:
                status = await chat.status(job_id)
                if status.stage == "generating" and status.tokens > 0:
                    return
            await asyncio.sleep(0.2)  # the stage is read by query: there is no event to wait on

    await asyncio.wait_for(begun(), timeout=within_seconds)


async def generate_tries(client: Client, workflow_id: str) -> list[int]:
    """For each generation the job ran, the try it ended on (history keeps only the last try's start)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


async def verdicts(
    client: Client, workflow_id: str, check: str = "check_reply", shape: type[Verdict] = Verdict
) -> list[Verdict]:
    """The verdict on each reply (or with `check="check_summary"`, each summary) the job checked: the results of
    its check local activities, which its history records as markers (details: "data", the SDK's JSON naming the
    activity type; "result"); `shape`: the verdict's model (check_scene's: SceneVerdict)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found = []
    for event in history.events:
        details = event.marker_recorded_event_attributes.details
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED or "data" not in details:
            continue
        if json.loads(details["data"].payloads[0].data).get("activity_type") != check:
            continue
        [value] = await client.data_converter.decode(list(details["result"].payloads))
        found.append(shape.model_validate(value))
    return found


async def generate_requests(client: Client, workflow_id: str) -> list[GenerateRequest]:
    """What the job asked of each generation it scheduled (replies and summaries), from its history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        [value] = await client.data_converter.decode(
            list(event.activity_task_scheduled_event_attributes.input.payloads)
        )
        found.append(GenerateRequest.model_validate(value))
    return found


def local_activity_markers(history: WorkflowHistory) -> int:
    """How many local activities the job's history records (a "core_local_activity" marker each)."""
    return sum(
        event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
        for event in history.events
    )


def patch_ids(history: WorkflowHistory) -> list[str]:
    """The ids of the job's workflow.patched markers ("core_patch"), in the order recorded."""
    return [
        json.loads(event.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


def upserted_keys(history: WorkflowHistory) -> list[list[str]]:
    """The search attributes each of the job's upserts sets, by name (sorted), in the order recorded."""
    return [
        sorted(event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]


def change_versions(history: WorkflowHistory) -> list[list[str]]:
    """What each of the job's upserts of TemporalChangeVersion (the SDK's, one per patch marker) set it to."""
    return [
        json.loads(fields["TemporalChangeVersion"].data)
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        and "TemporalChangeVersion"
        in (fields := event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
    ]


async def temporal_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    from orchestrator.devstack import temporal_binary

    address = ["--address", settings.temporal_address, "--namespace", settings.temporal_namespace]
    process = await asyncio.create_subprocess_exec(
        str(temporal_binary()), *args, *address, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def start_with_the_temporal_cli(settings: Settings, workflow_id: str, raw_job: str) -> None:
    """A job started as raw JSON with the `temporal` CLI, as a backend in another language does."""
    code, _, err = await temporal_cli(
        settings,
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
    assert code == 0, err


async def start_and_wait_with_the_temporal_cli(settings: Settings, workflow_id: str, raw_job: str) -> dict:
    """A job started as raw JSON with the `temporal` CLI and how it ended, as the CLI prints it (`workflow result
    --output json`)."""
    await start_with_the_temporal_cli(settings, workflow_id, raw_job)
    _, out, _ = await temporal_cli(settings, "workflow", "result", "--workflow-id", workflow_id, "--output", "json")
    return json.loads(out)


async def stored_result(client: Client, workflow_id: str) -> dict:
    """The finished workflow's result as Temporal stores it (plain JSON without payload keys), where the CLI's
    printout shows empty lists as null."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return json.loads(history.events[-1].workflow_execution_completed_event_attributes.result.payloads[0].data)


def one_json_object(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    payload = json.loads(done.stdout)
    assert isinstance(payload, dict)
    return payload


def one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
