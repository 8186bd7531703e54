"""Benchmark 1: what orchestration adds on the real model. The same request — the messages the workflow's own
`prepare` builds, the same seed and max_tokens — goes straight to the engine through `InferenceClient` and
through a ChatWorkflow (worker with one attempt: no validation retries), alternating, one at a time."""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel

from bench.stats import median, percentile
from orchestrator.client import ChatClient
from orchestrator.inference import InferenceClient
from workflows.activities import JobActivities, PrepareRequest
from workflows.models import ChatJob, ChatResult, GenerateResult, JobType
from workflows.sampling import first_sampling

SEED = 7


class OverheadResult(BaseModel):
    pairs: int
    max_tokens: int
    direct_ms: list[float]  # wall time of the engine request, per pair
    workflow_ms: list[float]  # submit → result through Temporal, per pair
    engine_ms: list[float]  # the engine's own time in the generate activity, per pair
    same_generation: int  # pairs whose two generations had the same number of tokens
    completion_tokens: int  # of the first direct generation
    direct_median_ms: float
    workflow_median_ms: float
    ratio: float  # median through the workflow / median direct
    added_p50_ms: float  # per pair: job latency minus the engine's time in the activity
    added_p95_ms: float


def overhead_job(job_id: str, max_tokens: int) -> ChatJob:
    # A short prompt: on 2 shared CPU cores SmolLM2 slows down and varies a lot with a long context (a
    # roleplay card's), which would bury the few tens of milliseconds measured here in noise.
    return ChatJob(
        job_id=job_id,
        job_type=JobType.conversation,
        messages=[{"role": "user", "content": "Describe a quiet harbour town at dawn."}],
        sampling={"max_tokens": max_tokens, "seed": SEED},
    )


def summarised(
    pairs: int,
    max_tokens: int,
    direct: list[GenerateResult],
    direct_ms: list[float],
    through: list[ChatResult],
    workflow_ms: list[float],
) -> OverheadResult:
    engine_ms = [result.timings.engine_ms for result in through]
    added = [total - engine for total, engine in zip(workflow_ms, engine_ms, strict=True)]
    return OverheadResult(
        pairs=pairs,
        max_tokens=max_tokens,
        direct_ms=direct_ms,
        workflow_ms=workflow_ms,
        engine_ms=engine_ms,
        same_generation=sum(d.completion_tokens == w.completion_tokens for d, w in zip(direct, through, strict=True)),
        completion_tokens=direct[0].completion_tokens,
        direct_median_ms=median(direct_ms),
        workflow_median_ms=median(workflow_ms),
        ratio=median(workflow_ms) / median(direct_ms),
        added_p50_ms=median(added),
        added_p95_ms=percentile(added, 0.95),
    )


async def measure_overhead(
    chat: ChatClient,
    jobs: JobActivities,
    engine: InferenceClient,
    *,
    pairs: int,
    max_tokens: int,
    progress: Callable[[str], None],
) -> OverheadResult:
    template = overhead_job("bench-overhead", max_tokens)
    # What the workflow sends: its own prepare stage, with the worker's tokenizer and limits.
    prepared = await jobs.prepare(PrepareRequest(job=template))
    sampling = first_sampling(template.job_type, template.sampling, seed=SEED)
    context = prepared.context

    async def direct() -> tuple[GenerateResult, float]:
        started = time.monotonic()
        result = await engine.complete(context.messages, sampling, context.stop)
        return result, (time.monotonic() - started) * 1000

    async def through_workflow(job_id: str) -> tuple[ChatResult, float]:
        started = time.monotonic()
        handle = await chat.submit(template.model_copy(update={"job_id": job_id}))
        result = await handle.result()
        return result, (time.monotonic() - started) * 1000

    progress("overhead: warm-up (one of each, not counted)")
    await direct()
    await through_workflow("bench-overhead-warmup")
    direct_results, direct_ms, workflow_results, workflow_ms = [], [], [], []
    for pair in range(pairs):
        # Alternate which goes first, so drift in the machine's load falls on both alike.
        if pair % 2 == 0:
            d, w = await direct(), await through_workflow(f"bench-overhead-{pair}")
        else:
            w, d = await through_workflow(f"bench-overhead-{pair}"), await direct()
        direct_results.append(d[0])
        direct_ms.append(d[1])
        workflow_results.append(w[0])
        workflow_ms.append(w[1])
        progress(f"overhead: pair {pair + 1}/{pairs}: direct {d[1]:.0f} ms, workflow {w[1]:.0f} ms")
    return summarised(pairs, max_tokens, direct_results, direct_ms, workflow_results, workflow_ms)
