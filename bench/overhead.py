"""Benchmark 1 on the real model: what orchestration adds. The same request — the messages the workflow's own
`prepare` builds, the same seed and max_tokens — goes straight to the engine through `InferenceClient` and
through a ChatWorkflow (worker with one attempt: no validation retries), alternating, one at a time.

- Overhead pairs: job latency at the client minus the engine's time in the generate activity, split along the
  job's critical path from its history (bench/critical_path.py); what ran beside the generation (the stream's
  signals, their workflow tasks, the CPU of the worker and the Temporal server meanwhile) apart.
- First-token pairs: `ChatClient.stream`'s first delta after submit against the engine's own time to first
  token for the same request sent directly.
- History by reply length: per job, history events and bytes, workflow tasks, signals and updates, at each
  max_tokens asked for (a prompt that asks for a long story, so the reply runs to it).
- Subscribers: the same figures and the job's CPU with 0, 1 and 3 clients following it through
  `ChatClient.stream` (each poll is an update, and every batch of deltas wakes every poll)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel
from temporalio.api.history.v1 import History
from temporalio.client import WorkflowHandle

from bench.critical_path import (
    AddedParts,
    Event,
    HistoryFigures,
    Overlap,
    added_parts,
    generation_spans,
    history_events,
    history_figures,
    overlap,
)
from bench.machine import CpuSampler
from bench.stats import Spread, median, percentile, spread
from orchestrator.client import ChatClient
from orchestrator.inference import InferenceClient
from workflows.activities import JobActivities, PrepareRequest
from workflows.chat import ChatWorkflow
from workflows.models import ChatJob, ChatResult, GenerateResult, JobType
from workflows.sampling import first_sampling

SEED = 7
OVERHEAD_PROMPT = "Describe a quiet harbour town at dawn."
LONG_PROMPT = (
    "Write a long story, chapter after chapter, about a quiet harbour town: its people, its boats, its storms."
)


class Processes(BaseModel):
    """The CPU the bench reads: this process (the worker and the bench's client) and the Temporal dev server."""

    worker: int
    temporal: int


class Cpu:
    """The worker and Temporal processes' CPU, sampled while the pairs run."""

    def __init__(self, processes: Processes) -> None:
        self._processes = processes
        self._sampler = CpuSampler([processes.worker, processes.temporal])

    def __enter__(self) -> Cpu:
        self._sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.__exit__()

    def used_ms(self, begin: float, end: float) -> tuple[float, float]:
        """(worker, Temporal) CPU ms between two wall-clock instants."""
        worker, temporal = self._processes.worker, self._processes.temporal
        return self._sampler.used(begin, end, [worker]) * 1000, self._sampler.used(begin, end, [temporal]) * 1000


class Direct(BaseModel):
    result: GenerateResult
    ms: float  # wall time of the engine request
    begin: float  # time.time()
    end: float


class Through(BaseModel):
    """One job through ChatWorkflow: its result, latency, history and where its time went."""

    result: ChatResult
    ms: float  # submit → result at the client
    submitted: float  # time.time()
    received: float
    events: list[Event]
    history_bytes: int

    def parts(self) -> AddedParts:
        return added_parts(self.events, self.submitted, self.received, self.result.timings.engine_ms)

    def overlap(self) -> Overlap:
        return overlap(self.events)

    def history(self) -> HistoryFigures:
        return history_figures(self.events, self.history_bytes)


class PairCpu(BaseModel):
    """CPU ms of one pair, worker and Temporal together unless named."""

    job_worker: float  # the whole job through the workflow, the worker process (+ bench client)
    job_temporal: float  # the same, the Temporal dev server
    direct: float  # the direct request
    generation: float  # while the job's generation ran (generate started → completed)


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
    # Spreads over the pairs (this run's repeats).
    direct: Spread
    workflow: Spread
    pair_ratio: Spread  # per pair: through the workflow / direct
    added: Spread
    parts: dict[str, Spread]  # by AddedParts field
    overlap: dict[str, Spread]  # by Overlap field, plus cpu_ms: the generation's CPU beyond the direct request's
    cpu: dict[str, Spread]  # by PairCpu field, plus beyond_direct: the job's CPU minus the direct request's
    history: dict[str, Spread]  # by HistoryFigures field


class FirstTokenResult(BaseModel):
    pairs: int
    direct: Spread  # the engine's own time to first token, request sent directly
    backend: Spread  # submit → ChatClient.stream's first delta
    added: Spread  # per pair: backend − direct
    added_p50_ms: float
    added_p95_ms: float


class LengthFigures(BaseModel):
    max_tokens: int
    repeats: int
    completion_tokens: Spread
    added: Spread  # job latency − engine time
    history: dict[str, Spread]  # by HistoryFigures field


class GrowthResult(BaseModel):
    lengths: dict[str, LengthFigures]  # by max_tokens
    # Per 100 completion tokens, from the shortest to the longest length's medians.
    per_100_tokens: dict[str, float]  # by HistoryFigures field


class SubscriberFigures(BaseModel):
    subscribers: int
    repeats: int
    history: dict[str, Spread]  # by HistoryFigures field
    cpu_worker: Spread  # ms per job, submit → result and every subscriber's `done` (the subscribers run here)
    cpu_temporal: Spread


class SubscribersResult(BaseModel):
    max_tokens: int
    counts: dict[str, SubscriberFigures]  # by number of subscribers


def overhead_job(job_id: str, max_tokens: int, prompt: str = OVERHEAD_PROMPT) -> ChatJob:
    # A short prompt: on 2 shared CPU cores SmolLM2 slows down and varies a lot with a long context (a
    # roleplay card's), which would bury the few tens of milliseconds measured here in noise.
    return ChatJob(
        job_id=job_id,
        job_type=JobType.conversation,
        messages=[{"role": "user", "content": prompt}],
        sampling={"max_tokens": max_tokens, "seed": SEED},
    )


def spreads_of(models: Sequence[BaseModel]) -> dict[str, Spread]:
    """Each numeric field's spread over the models."""
    fields = type(models[0]).model_fields
    return {name: spread([float(getattr(m, name)) for m in models]) for name in fields}


def median_parts(parts: Sequence[AddedParts]) -> AddedParts:
    return AddedParts(**{name: median([getattr(p, name) for p in parts]) for name in AddedParts.model_fields})


def summarised(max_tokens: int, direct: list[Direct], through: list[Through], cpu: list[PairCpu]) -> OverheadResult:
    direct_ms = [d.ms for d in direct]
    workflow_ms = [t.ms for t in through]
    engine_ms = [t.result.timings.engine_ms for t in through]
    added = [total - engine for total, engine in zip(workflow_ms, engine_ms, strict=True)]
    parts = [t.parts() for t in through]
    overlaps = spreads_of([t.overlap() for t in through])
    overlaps["cpu_ms"] = spread([c.generation - c.direct for c in cpu])
    cpus = spreads_of(cpu)
    cpus["beyond_direct"] = spread([c.job_worker + c.job_temporal - c.direct for c in cpu])
    return OverheadResult(
        pairs=len(through),
        max_tokens=max_tokens,
        direct_ms=direct_ms,
        workflow_ms=workflow_ms,
        engine_ms=engine_ms,
        same_generation=sum(
            d.result.completion_tokens == t.result.completion_tokens for d, t in zip(direct, through, strict=True)
        ),
        completion_tokens=direct[0].result.completion_tokens,
        direct_median_ms=median(direct_ms),
        workflow_median_ms=median(workflow_ms),
        ratio=median(workflow_ms) / median(direct_ms),
        added_p50_ms=median(added),
        added_p95_ms=percentile(added, 0.95),
        added_parts=median_parts(parts),
        direct=spread(direct_ms),
        workflow=spread(workflow_ms),
        pair_ratio=spread([w / d for w, d in zip(workflow_ms, direct_ms, strict=True)]),
        added=spread(added),
        parts=spreads_of(parts),
        overlap=overlaps,
        cpu=cpus,
        history=spreads_of([t.history() for t in through]),
    )


class Arms:
    """The two ways to send the same request: straight to the engine, and as a job through ChatWorkflow."""

    def __init__(self, chat: ChatClient, jobs: JobActivities, engine: InferenceClient) -> None:
        self.chat, self._jobs, self._engine = chat, jobs, engine

    async def direct(self, job: ChatJob) -> Direct:
        # What the workflow sends: its own prepare stage, with the worker's tokenizer and limits.
        prepared = await self._jobs.prepare(PrepareRequest(job=job))
        sampling = first_sampling(job.job_type, job.sampling, seed=SEED)
        context = prepared.context
        begin, started = time.time(), time.monotonic()
        result = await self._engine.complete(context.messages, sampling, context.stop)
        return Direct(result=result, ms=(time.monotonic() - started) * 1000, begin=begin, end=time.time())

    async def through(self, job: ChatJob) -> Through:
        started, submitted = time.monotonic(), time.time()
        handle = await self.chat.submit(job)
        result = await handle.result()
        took, received = (time.monotonic() - started) * 1000, time.time()
        return await traced(handle, result, took, submitted, received)

    async def followed(self, job: ChatJob, subscribers: int) -> Through:
        """The job through ChatWorkflow with `subscribers` clients following its stream to the end; received: when
        the result and every subscriber's last event are in."""
        started, submitted = time.monotonic(), time.time()
        handle = await self.chat.submit(job)

        async def follow() -> int:
            return sum([1 async for _ in self.chat.stream(job.job_id)])

        following = [asyncio.create_task(follow()) for _ in range(subscribers)]
        result = await handle.result()
        await asyncio.gather(*following)
        took, received = (time.monotonic() - started) * 1000, time.time()
        return await traced(handle, result, took, submitted, received)

    async def first_token(self, job: ChatJob) -> float:
        """Submit → the first delta `ChatClient.stream` yields, in ms; the job is then run to its end."""
        started = time.monotonic()
        handle = await self.chat.submit(job)
        first = None
        async for event in self.chat.stream(job.job_id):
            if event.type == "delta":
                first = (time.monotonic() - started) * 1000
                break
        await handle.result()
        if first is None:
            raise RuntimeError(f"job {job.job_id} streamed no delta")
        return first


async def traced(
    handle: WorkflowHandle[ChatWorkflow, ChatResult], result: ChatResult, took: float, submitted: float, received: float
) -> Through:
    history = await handle.fetch_history()
    return Through(
        result=result,
        ms=took,
        submitted=submitted,
        received=received,
        events=history_events(history.events),
        history_bytes=History(events=history.events).ByteSize(),
    )


def pair_cpu(cpu: Cpu, direct: Direct, through: Through) -> PairCpu:
    job_worker, job_temporal = cpu.used_ms(through.submitted, through.received)
    running = generation_spans(through.events)
    generation = sum(sum(cpu.used_ms(span.begin, span.end)) for span in running)
    return PairCpu(
        job_worker=job_worker,
        job_temporal=job_temporal,
        direct=sum(cpu.used_ms(direct.begin, direct.end)),
        generation=generation,
    )


async def measure_overhead(
    arms: Arms,
    processes: Processes,
    *,
    pairs: int,
    max_tokens: int,
    progress: Callable[[str], None],
) -> OverheadResult:
    progress("overhead: warm-up (one of each, not counted)")
    await arms.direct(overhead_job("bench-overhead", max_tokens))
    await arms.through(overhead_job("bench-overhead-warmup", max_tokens))
    direct: list[Direct] = []
    through: list[Through] = []
    with Cpu(processes) as cpu:
        for pair in range(pairs):
            job = overhead_job(f"bench-overhead-{pair}", max_tokens)
            # Alternate which goes first, so drift in the machine's load falls on both alike.
            if pair % 2 == 0:
                d, w = await arms.direct(job), await arms.through(job)
            else:
                w, d = await arms.through(job), await arms.direct(job)
            direct.append(d)
            through.append(w)
            progress(f"overhead: pair {pair + 1}/{pairs}: direct {d.ms:.0f} ms, workflow {w.ms:.0f} ms")
    cpus = [pair_cpu(cpu, d, w) for d, w in zip(direct, through, strict=True)]
    return summarised(max_tokens, direct, through, cpus)


async def measure_first_token(
    arms: Arms, *, pairs: int, max_tokens: int, progress: Callable[[str], None]
) -> FirstTokenResult:
    direct_ms: list[float] = []
    backend_ms: list[float] = []
    for pair in range(pairs):
        job = overhead_job(f"bench-first-token-{pair}", max_tokens)
        if pair % 2 == 0:
            d, b = await arms.direct(job), await arms.first_token(job)
        else:
            b, d = await arms.first_token(job), await arms.direct(job)
        if d.result.first_token_ms is None:
            raise RuntimeError("the engine sent no text")
        direct_ms.append(d.result.first_token_ms)
        backend_ms.append(b)
        progress(f"first token: pair {pair + 1}/{pairs}: engine {direct_ms[-1]:.0f} ms, backend {b:.0f} ms")
    added = [b - d for b, d in zip(backend_ms, direct_ms, strict=True)]
    return FirstTokenResult(
        pairs=pairs,
        direct=spread(direct_ms),
        backend=spread(backend_ms),
        added=spread(added),
        added_p50_ms=median(added),
        added_p95_ms=percentile(added, 0.95),
    )


def per_100_tokens(lengths: list[LengthFigures]) -> dict[str, float]:
    """Each history figure's growth per 100 completion tokens between the shortest and the longest length."""
    if len(lengths) < 2:
        return {}
    first, last = lengths[0], lengths[-1]
    tokens = last.completion_tokens.p50 - first.completion_tokens.p50
    if tokens <= 0:
        return {}
    return {name: (last.history[name].p50 - first.history[name].p50) * 100 / tokens for name in first.history}


async def measure_growth(
    arms: Arms, *, lengths: Sequence[int], repeats: int, progress: Callable[[str], None]
) -> GrowthResult:
    figures = []
    for max_tokens in lengths:
        runs = []
        for repeat in range(repeats):
            runs.append(
                await arms.through(overhead_job(f"bench-growth-{max_tokens}-{repeat}", max_tokens, LONG_PROMPT))
            )
            progress(
                f"history growth: max_tokens {max_tokens}, {repeat + 1}/{repeats}: "
                f"{runs[-1].result.completion_tokens} tokens, {len(runs[-1].events)} events"
            )
        figures.append(
            LengthFigures(
                max_tokens=max_tokens,
                repeats=repeats,
                completion_tokens=spread([float(t.result.completion_tokens) for t in runs]),
                added=spread([t.ms - t.result.timings.engine_ms for t in runs]),
                history=spreads_of([t.history() for t in runs]),
            )
        )
    return GrowthResult(lengths={str(f.max_tokens): f for f in figures}, per_100_tokens=per_100_tokens(figures))


async def measure_subscribers(
    arms: Arms,
    processes: Processes,
    *,
    counts: Sequence[int],
    repeats: int,
    max_tokens: int,
    progress: Callable[[str], None],
) -> SubscribersResult:
    figures = {}
    with Cpu(processes) as cpu:
        for subscribers in counts:
            runs = []
            for repeat in range(repeats):
                job = overhead_job(f"bench-subscribers-{subscribers}-{repeat}", max_tokens)
                runs.append(await arms.followed(job, subscribers))
                progress(
                    f"subscribers: {subscribers}, {repeat + 1}/{repeats}: {len(runs[-1].events)} events, "
                    f"{runs[-1].history().updates} updates"
                )
            used = [cpu.used_ms(t.submitted, t.received) for t in runs]
            figures[str(subscribers)] = SubscriberFigures(
                subscribers=subscribers,
                repeats=repeats,
                history=spreads_of([t.history() for t in runs]),
                cpu_worker=spread([worker for worker, _ in used]),
                cpu_temporal=spread([temporal for _, temporal in used]),
            )
    return SubscribersResult(max_tokens=max_tokens, counts=figures)
