"""The worker process: ChatWorkflow on `chat`, generation on `chat-generate` with at most
`generation_slots` generations in flight at the engine (per-worker slots × workers must not exceed the engine's
max concurrent requests; extra demand waits in Temporal's queue, not at the engine) and `generation_reserve` tasks
more waiting in the worker to start the moment a slot frees, and none taken while this worker's engine is down
(orchestrator/engine_watch.py): workers with engines of their own on the same task queues fail over to each
other."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from functools import partial

from loguru import logger
from temporalio.client import Client
from temporalio.worker import FixedSizeSlotSupplier, PollerBehaviorSimpleMaximum, Worker, WorkerTuner

from characters import bundled_characters
from orchestrator.codec import EncryptionCodec
from orchestrator.engine_watch import EngineSlots, EngineWatch, GenerationSlots
from orchestrator.engines import Engine, detected_engine
from orchestrator.health import engine_is_down
from orchestrator.inference import InferenceClient
from orchestrator.metrics import worker_client_serving_metrics
from orchestrator.sandbox import WorkflowRunner
from orchestrator.settings import Settings
from orchestrator.tokens import token_counter
from orchestrator.visibility import check_search_attributes
from workflows.activities import ChatActivities, JobActivities
from workflows.chat import ChatWorkflow
from workflows.policy import load_policy

# Cancellation reaches an activity only on a heartbeat; without this cap heartbeats are throttled to
# 0.8 × heartbeat_timeout and a cancel lands seconds late.
MAX_HEARTBEAT_THROTTLE = timedelta(seconds=0.5)
# In-flight generations get this long to finish on SIGTERM before they are cancelled (and retried elsewhere).
GRACEFUL_SHUTDOWN = timedelta(seconds=30)
# The SDK's own default; the generation worker runs no workflows, local activities or Nexus tasks.
UNUSED_SLOTS = FixedSizeSlotSupplier(100)
# A poll already waiting at Temporal when the engine goes down can still be handed a task, which then fails its try:
# one waiting poll (the SDK's default is 5) keeps that to one try per outage. One poll hands out a task per round
# trip to Temporal, far faster than generations finish.
GENERATION_POLLS = PollerBehaviorSimpleMaximum(maximum=1)


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
        settings.engine_limits,
        counter,
        policy,
        settings.log_chat_text,
    )


def worker_client(client: Client) -> Client:
    """The same connection and keys, with a codec that hands on what it cannot decrypt (see `payload_converter`)."""
    converter = client.data_converter
    if isinstance(converter.payload_codec, EncryptionCodec):
        codec = EncryptionCodec(converter.payload_codec.keys, keep_undecryptable=True)
        converter = dataclasses.replace(converter, payload_codec=codec)
    return Client(client.service_client, namespace=client.namespace, data_converter=converter)


def generation_tuner(settings: Settings, watch: EngineWatch) -> WorkerTuner:
    """The generation worker's task slots: the engine's `generation_slots` and the `generation_reserve` waiting for
    them (EngineSlots), taken only while the engine is up."""
    return WorkerTuner.create_composite(
        workflow_supplier=UNUSED_SLOTS,
        activity_supplier=GenerationSlots(settings.generation_slots + settings.generation_reserve, watch),
        local_activity_supplier=UNUSED_SLOTS,
        nexus_supplier=UNUSED_SLOTS,
    )


async def build_workers(client: Client, settings: Settings, engine: Engine, watch: EngineWatch) -> list[Worker]:
    jobs = await job_activities(settings, engine)
    client = worker_client(client)
    workflows = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ChatWorkflow],
        workflow_runner=WorkflowRunner.passing_through(ChatWorkflow),
        max_concurrent_workflow_tasks=settings.workflow_task_slots,
        # Local activities: they run in this worker and hold no generation slot.
        activities=[
            jobs.prepare,
            jobs.group_members,
            jobs.check_reply,
            jobs.prepare_summary,
            jobs.check_summary,
            jobs.emotion_prompt,
            jobs.prepare_scene,
            jobs.check_scene,
            jobs.prepare_card,
            jobs.check_card,
            jobs.record_metrics,
        ],
    )
    engine_slots = EngineSlots(engine_client(settings, engine), settings.generation_slots, watch)
    generation = Worker(
        client,
        task_queue=settings.generate_task_queue,
        activities=[ChatActivities(engine_slots, settings.log_chat_text, watch.mark_down).generate],
        tuner=generation_tuner(settings, watch),
        activity_task_poller_behavior=GENERATION_POLLS,
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
    the engine's description when the caller already has it, else found now (`settings_engine`). With
    CHAT_WORKER_METRICS_ADDRESS set, the workers serve Prometheus metrics there (orchestrator/metrics.py)."""
    await check_search_attributes(client, settings.temporal_namespace)
    engine = engine or await settings_engine(settings)
    client = await worker_client_serving_metrics(client, settings)
    async with AsyncExitStack() as stack:
        watch = EngineWatch(settings.inference_base_url, is_down=partial(engine_is_down, engine=engine))
        stack.push_async_callback(watch.aclose)  # after the workers: their shutdown may still wait on it
        for worker in await build_workers(client, settings, engine, watch):
            await stack.enter_async_context(worker)
        if ready is not None:
            ready.set()
        logger.info(
            "worker polling task queues {} and {} ({} generation slots, {} reserved, engine {} at {}{})",
            settings.task_queue,
            settings.generate_task_queue,
            settings.generation_slots,
            settings.generation_reserve,
            engine.label,
            settings.inference_base_url,
            ", detected" if settings.engine == "auto" and engine.kind is not None else "",
        )
        if settings.metrics_address is not None:
            logger.info("metrics on http://{}/metrics", settings.metrics_address)
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
