"""The worker process: ChatWorkflow on `chat`, generation on `chat-generate` with at most
`generation_slots` generations in flight (per-worker slots × workers must not exceed the engine's
max concurrent requests; extra demand waits in Temporal's queue, not at the engine)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from loguru import logger
from temporalio.client import Client
from temporalio.worker import Worker

from characters import bundled_characters
from orchestrator.client import payload_converter
from orchestrator.engines import Engine, detected_engine
from orchestrator.inference import InferenceClient
from orchestrator.settings import Settings
from orchestrator.tokens import token_counter
from orchestrator.visibility import check_search_attributes
from workflows.activities import ChatActivities, JobActivities
from workflows.chat import ChatWorkflow
from workflows.models import EngineLimits
from workflows.policy import load_policy

# Cancellation reaches an activity only on a heartbeat; without this cap heartbeats are throttled to
# 0.8 × heartbeat_timeout and a cancel lands seconds late.
MAX_HEARTBEAT_THROTTLE = timedelta(seconds=0.5)
# In-flight generations get this long to finish on SIGTERM before they are cancelled (and retried elsewhere).
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


async def settings_engine(settings: Settings) -> Engine:
    """The description of the engine CHAT_WORKER_ENGINE names, or (auto) the one at CHAT_WORKER_INFERENCE_BASE_URL."""
    return await detected_engine(settings.engine, settings.inference_base_url, settings.engine_api_key)


def engine_client(settings: Settings, engine: Engine) -> InferenceClient:
    return InferenceClient(
        settings.inference_base_url,
        settings.model_name,
        api_key=settings.engine_api_key,
        timeout=settings.inference_timeout_seconds,
        engine=engine,
    )


async def job_activities(settings: Settings, engine: Engine) -> JobActivities:
    """The local activities, with what they need read and checked now rather than inside the first job."""
    bundled_characters()
    policy = load_policy(settings.policy_file)
    counter = await token_counter(settings, engine)
    logger.info("token counts from: {}", counter.name)
    return JobActivities(
        settings.job_limits,
        EngineLimits(
            max_input_tokens=settings.max_input_tokens,
            max_total_tokens=settings.max_total_tokens,
            margin_tokens=settings.context_margin_tokens,
        ),
        counter,
        policy,
        settings.log_chat_text,
    )


def worker_client(client: Client, settings: Settings) -> Client:
    """The same connection with the worker's payload converter (see `payload_converter`)."""
    return Client(
        client.service_client,
        namespace=client.namespace,
        data_converter=payload_converter(settings, worker=True),
    )


async def build_workers(client: Client, settings: Settings, engine: Engine) -> list[Worker]:
    jobs = await job_activities(settings, engine)
    client = worker_client(client, settings)
    workflows = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ChatWorkflow],
        # Local activities: they run in this worker and hold no generation slot.
        activities=[jobs.prepare, jobs.check_reply, jobs.record_metrics],
    )
    generation = Worker(
        client,
        task_queue=settings.generate_task_queue,
        activities=[ChatActivities(engine_client(settings, engine), settings.log_chat_text).generate],
        max_concurrent_activities=settings.generation_slots,
        max_heartbeat_throttle_interval=MAX_HEARTBEAT_THROTTLE,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    return [workflows, generation]


async def run_workers(
    client: Client,
    settings: Settings,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    engine: Engine | None = None,
) -> None:
    """Run until `stop` is set, then shut the workers down gracefully. `ready` is set once they poll. `engine`:
    the engine's description when the caller already has it, else found now (`settings_engine`)."""
    await check_search_attributes(client, settings.temporal_namespace)
    engine = engine or await settings_engine(settings)
    async with AsyncExitStack() as stack:
        for worker in await build_workers(client, settings, engine):
            await stack.enter_async_context(worker)
        if ready is not None:
            ready.set()
        logger.info(
            "worker polling task queues {} and {} ({} generation slots, engine {} at {}{})",
            settings.task_queue,
            settings.generate_task_queue,
            settings.generation_slots,
            engine.label,
            settings.inference_base_url,
            ", detected" if settings.engine == "auto" and engine.kind is not None else "",
        )
        await stop.wait()
        logger.info("shutting down workers")


@asynccontextmanager
async def workers_running(client: Client, settings: Settings) -> AsyncIterator[None]:
    """The workers, polling until the block ends; raises why when they cannot start."""
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(run_workers(client, settings, stop, ready))
    polling = asyncio.create_task(ready.wait())
    await asyncio.wait([running, polling], return_when=asyncio.FIRST_COMPLETED)
    polling.cancel()
    if running.done():
        running.result()
    try:
        yield
    finally:
        stop.set()
        await running


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
