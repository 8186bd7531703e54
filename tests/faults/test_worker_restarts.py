"""Workers that go away mid-generation, as production's do: `python -m orchestrator worker` subprocesses in a
namespace of their own on the session's Temporal dev server, on the session's real llama.cpp server.

- SIGKILL (a node dies): the generations it ran, and those it held waiting for an engine slot (its reserve: it
  runs with fewer engine slots than jobs here), are retried on the new worker (started 5 s later) once their
  heartbeat timeout (10 s) passes; every job completes. A reply that finished in the instant before the kill,
  its completion not yet sent, dies with the process and is generated again; one that finished earlier never is.
- SIGTERM (a container stopped for a deploy): in-flight generations get GRACEFUL_SHUTDOWN (30 s) to finish;
  ones that do not are cancelled and retried from zero on the next worker, within the job's deadline."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.client import ChatClient, connect
from orchestrator.devstack import DevStack
from orchestrator.settings import Settings
from tests.faults.processes import (
    check_none_finished_twice,
    finished_before,
    finished_generations,
    worker_env,
    worker_process,
)
from tests.faults.scale import SCALE
from tests.helpers import generate_tries, held_at_least, job, mid_generation, outcomes
from workflows.models import ChatResult

pytestmark = pytest.mark.faults

NEW_WORKER_AFTER_SECONDS = 5.0
# A finished reply's completion leaves the worker within milliseconds; the log's clock has whole seconds, so a
# generation logged as finished 2 s or more before the kill had certainly been reported.
COMPLETION_SENT_WITHIN_SECONDS = 2.0
# Guards against a stuck job, not timing assertions.
RESULTS_WITHIN_SECONDS = SCALE.deadline_seconds + 60
# The killed worker's engine slots and reserve: it holds every job's generation, some waiting for a slot.
KILLED_SLOTS, KILLED_RESERVE = 2, 2
HELD_WITHIN_SECONDS = 120


async def chat_in(settings: Settings, namespace: str) -> tuple[Settings, ChatClient]:
    wired = settings.model_copy(update={"temporal_namespace": namespace})
    return wired, ChatClient(await connect(wired), wired)


async def test_a_killed_workers_generations_complete_on_a_new_worker(
    stack: DevStack, settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    wired, chat = await chat_in(settings, isolated_namespace)
    jobs = [
        job(sampling={"max_tokens": SCALE.reply_tokens, "seed": n}, deadline_seconds=SCALE.deadline_seconds)
        for n in range(SCALE.worker_jobs)
    ]
    job_ids = [j.job_id for j in jobs]
    slots = {"CHAT_WORKER_GENERATION_SLOTS": str(KILLED_SLOTS), "CHAT_WORKER_GENERATION_RESERVE": str(KILLED_RESERVE)}
    async with worker_process(worker_env(wired) | slots, tmp_path / "first.log") as first:
        for chat_job in jobs:
            await chat.submit(chat_job)
        held = min(len(jobs), KILLED_SLOTS + KILLED_RESERVE)
        await asyncio.wait_for(held_at_least(chat, job_ids, held), timeout=HELD_WITHIN_SECONDS)
        await mid_generation(chat, job_ids)
        await first.kill()
        killed_at = datetime.now()
        on_first = finished_generations(first.log())
        in_flight = frozenset(on_first) - finished_before(first.log(), killed_at, COMPLETION_SENT_WITHIN_SECONDS)
    await asyncio.sleep(NEW_WORKER_AFTER_SECONDS)
    async with worker_process(worker_env(wired), tmp_path / "second.log") as second:
        ended = await outcomes(chat, job_ids, RESULTS_WITHIN_SECONDS)
        generations = on_first + finished_generations(second.log())
    tries_by_job = {j: await generate_tries(chat.temporal, chat.handle(j).id) for j in job_ids}
    tries = [t for job_tries in tries_by_job.values() for t in job_tries]
    results = [r for r in ended if isinstance(r, ChatResult)]
    print(
        f"\n[faults:{SCALE.name}] worker SIGKILL ({SCALE.worker_jobs} jobs): {len(results)}/{len(jobs)} completed "
        f"({sum(r.outcome == 'ok' for r in results)} ok), generation tries {sorted(tries)}, "
        f"finished as the worker was killed: {len(in_flight)}"
    )
    assert [r if isinstance(r, str) else "completed" for r in ended] == ["completed"] * len(jobs)
    assert all(r.content for r in results)
    assert max(tries) >= 2  # the generation the kill cut was retried (it was mid-reply)
    # Every first generation the killed worker held (each was, above) and did not finish was retried, also those
    # that waited for an engine slot.
    assert all(tries_by_job[j][0] >= 2 for j in job_ids if (j, 1) not in on_first)
    # Every reported attempt was generated once, on one of the workers.
    assert {(r.job_id, a.attempt) for r in results for a in r.attempt_details} == set(generations)
    check_none_finished_twice(generations, in_flight)


async def test_a_stopped_workers_generations_finish_in_its_grace_or_run_again(
    stack: DevStack, settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    wired, chat = await chat_in(settings, isolated_namespace)
    jobs = [
        job(
            sampling={"max_tokens": SCALE.sigterm_max_tokens, "seed": n},
            deadline_seconds=SCALE.sigterm_deadline_seconds,
        )
        for n in range(SCALE.sigterm_jobs)
    ]
    job_ids = [j.job_id for j in jobs]
    async with worker_process(worker_env(wired), tmp_path / "first.log") as first:
        for chat_job in jobs:
            await chat.submit(chat_job)
        await mid_generation(chat, job_ids)
        code, exit_seconds = await first.terminate()
        on_first = finished_generations(first.log())
    async with worker_process(worker_env(wired), tmp_path / "second.log") as second:
        ended = await outcomes(chat, job_ids, SCALE.sigterm_deadline_seconds + 60)
        generations = on_first + finished_generations(second.log())
    tries = [t for j in job_ids for t in await generate_tries(chat.temporal, chat.handle(j).id)]
    results = [r for r in ended if isinstance(r, ChatResult)]
    print(
        f"\n[faults:{SCALE.name}] worker SIGTERM ({SCALE.sigterm_jobs} jobs, {SCALE.sigterm_max_tokens} tokens): "
        f"exit {code} after {exit_seconds:.1f} s, {sum(on_first.values())} generations finished on it, "
        f"{sum(t > 1 for t in tries)} retried; {len(results)}/{len(jobs)} completed "
        f"({sum(r.outcome == 'ok' for r in results)} ok, {sum('deadline' in r.reasons for r in results)} late)"
    )
    assert code == 0  # a graceful shutdown, not a crash
    assert [r if isinstance(r, str) else "completed" for r in ended] == ["completed"] * len(jobs)
    assert all(r.content for r in results)
    # What finished in the grace was kept: every reported attempt was generated once, on one of the workers.
    assert {(r.job_id, a.attempt) for r in results for a in r.attempt_details} == set(generations)
    check_none_finished_twice(generations)
