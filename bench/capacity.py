"""Benchmarks 2–4 in one run: a burst of jobs, all submitted at once, through the real worker against the
inference STAND-IN (a fixed delay per request, no model; see bench/standin.py). Measured: throughput and
latency (2), CPU per job of the worker process and of the Temporal dev server (2), how full the stand-in's
slots stay while generations wait in Temporal's queue and the most requests ever in flight there (3), the
drain time and that every job got exactly one reply from exactly one generation (4)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel, computed_field
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from bench.critical_path import first_task_wait, history_events
from bench.machine import CpuSampler, cpu_seconds, machine_ticks
from bench.standin import StandInProcess, StandInRequest, job_marker
from bench.stats import Request, SlotUse, Spread, max_in_flight, percentile, slot_use, spread
from orchestrator.client import ChatClient
from workflows.models import ChatJob, ChatResult, JobType

PROGRESS_EVERY_SECONDS = 5.0
FIRST_TASK_SAMPLE_EVERY = 10  # every 10th job's history read after the burst, for its first workflow task's wait
WINDOWS = 10  # windows of the burst, for the spread
MIN_WINDOW_SECONDS = 5.0


class CapacityResult(BaseModel):
    jobs: int
    slots: int
    delay_ms: float  # the stand-in's fixed delay per request
    drain_seconds: float  # first submit → last reply
    ideal_drain_seconds: float  # jobs × delay / slots: the stand-in's floor
    jobs_per_second: float
    ideal_jobs_per_second: float
    latency_p50_ms: float  # submit → reply, waiting in the queue included
    latency_p95_ms: float
    worker_cpu_seconds_per_job: float  # this process: the worker and the benchmark's client
    temporal_cpu_seconds_per_job: float  # the Temporal dev server
    standin_cpu_seconds_per_job: float  # the inference stand-in
    machine_busy_share: float  # of all cores during the burst, every process included (also other work)
    slots_full_share: float  # of the time a generation waited in the queue, the share with every slot busy
    slot_occupancy: float  # of that time, the mean share of slots busy
    backlog_seconds: float
    # The burst's intake: first submit → every job's generation queued (its start and first workflow task done;
    # submitted at once, they queue in the dev server beside the first generations), and from then on the share
    # of the time with every slot busy (generations still wait: the backlog drains).
    intake_seconds: float
    slots_full_share_after_intake: float
    # What holds the intake up: first submit → every start call returned (the dev server has written them all),
    # and meanwhile the share of the backlog with all slots busy and the CPU of the worker process and of the
    # Temporal dev server (share of one core); each sampled job's start → its first workflow task picked up
    # (seconds; None when no job replied).
    starts_seconds: float
    starts_slots_full_share: float
    starts_worker_cpu_share: float
    starts_temporal_cpu_share: float
    first_task_wait: Spread | None
    max_in_flight: int  # at the stand-in
    replies: int
    failed: dict[str, int]  # error type → jobs
    lost: int  # jobs without a reply
    duplicated: int  # generations beyond one per job, plus replies beyond one per job
    # The burst cut into equal windows (the last, partial one left out): each window's throughput and CPU per
    # job replied in it (worker + Temporal dev server), for the spread within this run.
    window_seconds: float = 0.0
    windows: dict[str, Spread] = {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def throughput_share(self) -> float:
        """Of the stand-in's ceiling."""
        return self.jobs_per_second / self.ideal_jobs_per_second

    @computed_field  # type: ignore[prop-decorator]
    @property
    def orchestration_cpu_seconds_per_job(self) -> float:
        return self.worker_cpu_seconds_per_job + self.temporal_cpu_seconds_per_job


@dataclass(frozen=True)
class JobRun:
    job_id: str
    submitted: float  # time.monotonic()
    finished: float
    result: ChatResult | None
    error: str | None = None
    start_returned: float | None = None  # the start call's return: the server has written the start


def capacity_job(job_id: str, deadline_seconds: float) -> ChatJob:
    return ChatJob(
        job_id=job_id,
        job_type=JobType.conversation,
        messages=[{"role": "user", "content": f"{job_marker(job_id)} Describe the harbour at dawn in two lines."}],
        sampling={"max_tokens": 100},
        deadline_seconds=deadline_seconds,
    )


async def run_job(chat: ChatClient, job: ChatJob) -> JobRun:
    submitted, start_returned = time.monotonic(), None
    try:
        handle = await chat.submit(job)
        start_returned = time.monotonic()
        result = await handle.result()
    except WorkflowFailureError as error:
        kind = getattr(error.cause, "type", None) or type(error.cause).__name__
        return JobRun(job.job_id, submitted, time.monotonic(), None, kind, start_returned)
    except RPCError as error:  # Temporal refused the start or the result call
        return JobRun(job.job_id, submitted, time.monotonic(), None, f"RPCError {error.status.name}", start_returned)
    return JobRun(job.job_id, submitted, time.monotonic(), result, start_returned=start_returned)


def clipped(request: Request, begin: float, end: float) -> Request:
    """The part of a request inside [begin, end): its times held to the window."""

    def held(instant: float) -> float:
        return min(max(instant, begin), end)

    return Request(held(request.scheduled), held(request.started), held(request.finished))


def slot_use_between(requests: list[Request], slots: int, begin: float, end: float) -> SlotUse:
    """Slot use inside [begin, end): each request held to the window."""
    return slot_use([clipped(r, begin, end) for r in requests], slots)


def once_all_queued(requests: list[Request], slots: int, since: float) -> tuple[float, SlotUse]:
    """(when the last request was queued, `since` if none was; slot use from then on): after the burst's intake
    only its backlog drains, so a slot left idle then is the refill's, not the intake's."""
    queued = max((r.scheduled for r in requests), default=since)
    return queued, slot_use_between(requests, slots, queued, math.inf)


def window_figures(
    replied_at: list[float], requests: list[Request], cpu: CpuSampler, wall_offset: float, slots: int
) -> tuple[float, dict[str, Spread]]:
    """The burst from its first reply to its last, cut into equal windows (the last, partial one left out):
    (window length, spreads over the windows of jobs/s, orchestration CPU ms per job replied and the share of the
    backlog with all slots busy). Times on time.monotonic(); `wall_offset` turns them into time.time()'s."""
    first, last = min(replied_at), max(replied_at)
    length = max(MIN_WINDOW_SECONDS, (last - first) / WINDOWS)
    count = int((last - first) // length)
    rates, cpu_per_job, full = [], [], []
    for index in range(count):
        begin = first + index * length
        end = begin + length
        replies = sum(begin <= t < end for t in replied_at)
        rates.append(replies / length)
        if replies:
            cpu_per_job.append(cpu.used(begin + wall_offset, end + wall_offset) * 1000 / replies)
        use = slot_use_between(requests, slots, begin, end)
        if use.backlog_seconds:
            full.append(use.share)
    found = {"jobs_per_second": rates, "orchestration_cpu_ms_per_job": cpu_per_job, "slots_full_share": full}
    return length, {name: spread(samples) for name, samples in found.items() if samples}


@dataclass(frozen=True)
class Tally:
    lost: int
    duplicated: int


def tally(job_ids: Iterable[str], replied: Iterable[str], generated: Iterable[str | None]) -> Tally:
    """Lost: jobs without a reply. Duplicated: replies beyond one per job, generations beyond one per job,
    and generations for no job of this run."""
    wanted = set(job_ids)
    replies, generations = Counter(replied), Counter(generated)
    duplicated = sum(n - 1 for n in replies.values() if n > 1) + sum(n - 1 for n in generations.values() if n > 1)
    strangers = sum(n for marker, n in generations.items() if marker not in wanted)
    return Tally(lost=len(wanted - set(replies)), duplicated=duplicated + strangers)


def engine_requests(runs: list[JobRun], requests: list[StandInRequest]) -> list[Request]:
    """Each job's generation at the stand-in, with when it was queued: its arrival minus the queue wait the
    activity measured (Temporal's scheduled → started)."""
    queue_seconds = {run.job_id: run.result.timings.queue_ms / 1000 for run in runs if run.result is not None}
    return [
        Request(scheduled=r.arrived - queue_seconds.get(r.marker or "", 0.0), started=r.arrived, finished=r.finished)
        for r in requests
    ]


async def first_task_waits(chat: ChatClient, job_ids: list[str]) -> Spread:
    """Over the jobs' histories (at least one): seconds from each start to its first workflow task picked up."""
    waits = []
    for job_id in job_ids:
        history = await chat.handle(job_id).fetch_history()
        waits.append(first_task_wait(history_events(history.events)))
    return spread(waits)


async def reporting(runs: list[asyncio.Task[JobRun]], started: float, progress: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_SECONDS)
        done = sum(task.done() for task in runs)
        progress(f"burst: {done}/{len(runs)} replied after {time.monotonic() - started:.0f} s")


async def measure_capacity(
    chat: ChatClient,
    standin: StandInProcess,
    temporal_pid: int,
    *,
    jobs: int,
    slots: int,
    run_id: str,
    progress: Callable[[str], None],
) -> CapacityResult:
    deadline = chat.settings.max_deadline_seconds
    progress(f"burst: warm-up ({slots} jobs, not counted)")
    await asyncio.gather(*(run_job(chat, capacity_job(f"{run_id}-warmup-{i}", deadline)) for i in range(slots)))
    await asyncio.to_thread(standin.reset)

    burst = [capacity_job(f"{run_id}-{i:05d}", deadline) for i in range(jobs)]
    progress(f"burst: submitting {jobs} jobs at once ({slots} slots, stand-in delay {standin.delay_seconds:g} s)")
    pids = os.getpid(), temporal_pid, standin.pid
    cpu_before, ticks_before = [cpu_seconds(pid) for pid in pids], machine_ticks()
    started, wall_started = time.monotonic(), time.time()
    with CpuSampler(pids[:2], period=0.1) as cpu:
        tasks = [asyncio.create_task(run_job(chat, job)) for job in burst]
        reporter = asyncio.create_task(reporting(tasks, started, progress))
        try:
            runs = list(await asyncio.gather(*tasks))
        finally:
            reporter.cancel()
    drained = max(run.finished for run in runs) - started
    used = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    ticks_after = machine_ticks()
    stats = await asyncio.to_thread(standin.stats)

    replied = [run for run in runs if run.result is not None and run.result.job_id == run.job_id]
    latencies = [(run.finished - run.submitted) * 1000 for run in replied] or [0.0]
    counted = tally((job.job_id for job in burst), (run.job_id for run in replied), (r.marker for r in stats.requests))
    requests = engine_requests(runs, stats.requests)
    use = slot_use(requests, slots)
    queued, draining = once_all_queued(requests, slots, since=started)
    starts_seconds = max((run.start_returned or started for run in runs), default=started) - started
    starting = wall_started, wall_started + starts_seconds  # CpuSampler reads wall-clock instants
    starts_cpu, starts_worker_cpu = cpu.used(*starting), cpu.used(*starting, pids[:1])
    while_starting = slot_use_between(requests, slots, started, started + starts_seconds)
    progress(f"burst: reading every {FIRST_TASK_SAMPLE_EVERY}th job's history")
    sampled = [run.job_id for run in runs[::FIRST_TASK_SAMPLE_EVERY] if run.result is not None]
    waits = await first_task_waits(chat, sampled) if sampled else None
    if max_in_flight(requests) != stats.max_in_flight:
        progress(f"note: in flight from intervals {max_in_flight(requests)}, counted live {stats.max_in_flight}")
    ideal = jobs * standin.delay_seconds / slots
    window, windows = window_figures(
        [run.finished for run in replied] or [started], requests, cpu, wall_started - started, slots
    )
    return CapacityResult(
        jobs=jobs,
        slots=slots,
        delay_ms=standin.delay_seconds * 1000,
        drain_seconds=drained,
        ideal_drain_seconds=ideal,
        jobs_per_second=len(replied) / drained,
        ideal_jobs_per_second=jobs / ideal,
        latency_p50_ms=percentile(latencies, 0.5),
        latency_p95_ms=percentile(latencies, 0.95),
        worker_cpu_seconds_per_job=used[0] / jobs,
        temporal_cpu_seconds_per_job=used[1] / jobs,
        standin_cpu_seconds_per_job=used[2] / jobs,
        machine_busy_share=(ticks_after[0] - ticks_before[0]) / max(1, ticks_after[1] - ticks_before[1]),
        slots_full_share=use.share,
        slot_occupancy=use.occupancy,
        backlog_seconds=use.backlog_seconds,
        intake_seconds=queued - started,
        slots_full_share_after_intake=draining.share,
        starts_seconds=starts_seconds,
        starts_slots_full_share=while_starting.share,
        starts_worker_cpu_share=starts_worker_cpu / starts_seconds if starts_seconds else 0.0,
        starts_temporal_cpu_share=(starts_cpu - starts_worker_cpu) / starts_seconds if starts_seconds else 0.0,
        first_task_wait=waits,
        max_in_flight=stats.max_in_flight,
        replies=len(replied),
        failed=dict(Counter(run.error for run in runs if run.error is not None)),
        lost=counted.lost,
        duplicated=counted.duplicated,
        window_seconds=window,
        windows=windows,
    )
