"""The job's I/O stages. `generate` is the only slow one: it runs on the `chat-generate` queue, whose
worker caps concurrency at the engine's slots. `record_metrics` runs as a local activity.

Neither logs chat text: only ids, counts, codes and timings."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Protocol

from loguru import logger
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.models import (
    EngineError,
    ErrorType,
    GenerateRequest,
    GenerateResult,
    JobMetrics,
    Message,
    ResolvedSampling,
)

HEARTBEAT_EVERY_SECONDS = 1.0
OVERLOADED_RETRY_DELAY = timedelta(seconds=5)


class ChatEngine(Protocol):
    async def complete(self, messages: list[Message], sampling: ResolvedSampling) -> GenerateResult: ...


async def _heartbeat_forever() -> None:
    # Heartbeats also while waiting for the first token (the engine may queue us), and they are what
    # delivers a cancellation to this activity.
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)


def application_error(error: EngineError) -> ApplicationError:
    return ApplicationError(
        error.message,
        type=error.type.value,
        non_retryable=not error.retryable,
        next_retry_delay=OVERLOADED_RETRY_DELAY if error.type is ErrorType.engine_overloaded else None,
    )


class ChatActivities:
    def __init__(self, engine: ChatEngine) -> None:
        self._engine = engine

    @activity.defn(name="generate")
    async def generate(self, request: GenerateRequest) -> GenerateResult:
        info = activity.info()
        heartbeats = asyncio.create_task(_heartbeat_forever())
        try:
            result = await self._engine.complete(request.messages, request.sampling)
        except EngineError as error:
            logger.warning(
                "generate failed job={} attempt={} try={} type={}",
                request.job_id,
                request.attempt,
                info.attempt,
                error.type.value,
            )
            raise application_error(error) from error
        finally:
            heartbeats.cancel()
        logger.info(
            "generated job={} attempt={} try={} finish={} prompt_tokens={} completion_tokens={} engine_ms={:.0f}",
            request.job_id,
            request.attempt,
            info.attempt,
            result.finish_reason,
            result.prompt_tokens,
            result.completion_tokens,
            result.engine_ms,
        )
        return result


@activity.defn(name="record_metrics")
async def record_metrics(metrics: JobMetrics) -> None:
    logger.bind(metrics=metrics.model_dump(mode="json")).info(
        "job done job={} type={} outcome={} attempts={} reasons={} tokens={}+{} total_ms={:.0f}",
        metrics.job_id,
        metrics.job_type.value,
        metrics.outcome,
        metrics.attempts,
        ",".join(metrics.reasons),
        metrics.prompt_tokens,
        metrics.completion_tokens,
        metrics.timings.total_ms,
    )
