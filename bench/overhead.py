"""Benchmark 1: what orchestration adds on the real model. The same request — the messages the workflow's own
`prepare` builds, the same seed and max_tokens — goes straight to the engine through `InferenceClient` and
through a ChatWorkflow (worker with one attempt: no validation retries), alternating, one at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType

from bench.stats import median, percentile
from orchestrator.client import ChatClient
from orchestrator.inference import InferenceClient
from workflows.activities import JobActivities, PrepareRequest
from workflows.models import ChatJob, ChatResult, GenerateResult, JobType
from workflows.sampling import first_sampling

SEED = 7


class AddedParts(BaseModel):
    """Where a job's time beyond the engine's went, in ms, from its history's event times (the server's clock)
    and the client's (the same machine's): the parts add up to job latency minus the engine's time."""

    start: float  # submit → the first workflow task picked up by the worker (start call, persistence, dispatch)
    workflow_tasks: float  # the worker running workflow tasks, local activities (prepare, check, metrics) included
    activity_dispatch: float  # generate scheduled → picked up by the generation worker
    activity_beyond_engine: float  # generate picked up → completed at the server, minus the engine's time
    back_to_workflow: float  # generate completed → the next workflow task picked up
    result: float  # workflow closed → its result at the client
    other: float  # whatever the parts above do not cover (0 unless something unexpected happened)


def added_parts(events: Sequence[tuple[int, float]], submitted: float, received: float, engine_ms: float) -> AddedParts:
    """`events`: (EventType, seconds) of one job's history; `submitted`, `received`: the client's clock."""

    def at(kind: int) -> list[float]:
        return [time for event_type, time in events if event_type == kind]

    task_started = at(EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    task_completed = at(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    scheduled = at(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    started = at(EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    completed = at(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    closed = at(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)[0]
    parts = {
        "start": task_started[0] - submitted,
        "workflow_tasks": sum(end - begin for begin, end in zip(task_started, task_completed, strict=True)),
        "activity_dispatch": sum(end - begin for begin, end in zip(scheduled, started, strict=True)),
        "activity_beyond_engine": sum(end - begin for begin, end in zip(started, completed, strict=True))
        - engine_ms / 1000,
        "back_to_workflow": sum(min(t for t in task_started if t >= done) - done for done in completed),
        "result": received - closed,
    }
    other = (received - submitted) - engine_ms / 1000 - sum(parts.values())
    return AddedParts(**{name: seconds * 1000 for name, seconds in {**parts, "other": other}.items()})


def median_parts(parts: Sequence[AddedParts]) -> AddedParts:
    return AddedParts(**{name: median([getattr(p, name) for p in parts]) for name in AddedParts.model_fields})


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
    added_parts: AddedParts  # median of each part over the pairs


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
    parts: list[AddedParts],
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
        added_parts=median_parts(parts),
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

    async def through_workflow(job_id: str) -> tuple[ChatResult, float, AddedParts]:
        started, submitted = time.monotonic(), time.time()
        handle = await chat.submit(template.model_copy(update={"job_id": job_id}))
        result = await handle.result()
        took, received = (time.monotonic() - started) * 1000, time.time()
        history = await handle.fetch_history()
        events = [(event.event_type, event.event_time.ToNanoseconds() / 1e9) for event in history.events]
        return result, took, added_parts(events, submitted, received, result.timings.engine_ms)

    progress("overhead: warm-up (one of each, not counted)")
    await direct()
    await through_workflow("bench-overhead-warmup")
    direct_results, direct_ms, workflow_results, workflow_ms, parts = [], [], [], [], []
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
        parts.append(w[2])
        progress(f"overhead: pair {pair + 1}/{pairs}: direct {d[1]:.0f} ms, workflow {w[1]:.0f} ms")
    return summarised(pairs, max_tokens, direct_results, direct_ms, workflow_results, workflow_ms, parts)
