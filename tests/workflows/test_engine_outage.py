"""Engine outages on the real stack: the session's Temporal dev server and a llama.cpp server (SmolLM2) of
the test's own (tests/engine_process.py), stopped with SIGTERM while jobs run, as an orchestrator stops the
engine's container. The session's shared engine is never touched. While the engine is down the worker takes no
generation task: they wait in Temporal's queue.

The prepare tests count tokens through the engine (CHAT_WORKER_TOKENIZER=engine: for llama.cpp the table's
route, llama-cpp-python's POST /extras/tokenize/count), so that `prepare` needs the engine as TGI's and vLLM's
/tokenize make it need theirs; the embedded stack itself counts with the GGUF."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.client import ChatClient
from orchestrator.devstack import DevStack
from orchestrator.settings import Settings
from tests.engine_process import EngineProcess
from tests.fake_engine import FakeEngine, Scripted
from tests.faults.scale import SCALE
from tests.helpers import failed_generate_tries, generate_backlog, job, submitted, worker_against
from tests.helpers import outcomes as outcomes_within
from workflows.activities import GENERATION_FAILED_TRIES, PREPARE_TRIES
from workflows.models import ChatResult, ErrorType

# Guards against a stuck job, not timing assertions.
GENERATING_WITHIN_SECONDS = 60.0
RESULTS_WITHIN_SECONDS = 120.0
# The prepare test's outage.
OUTAGE_SECONDS = 15.0
BACKLOG_WITHIN_SECONDS = 30.0
WAITING_JOBS = 3
# While the engine is down, Temporal would have retried a failing generation several times in this long.
HELD_FOR_SECONDS = 6.0


@pytest.fixture
def engine(stack: DevStack, settings: Settings, tmp_path: Path) -> Iterator[EngineProcess]:
    with EngineProcess(settings, tmp_path) as running:
        yield running


async def outcomes(chat: ChatClient, job_ids: list[str]) -> list[ChatResult | str]:
    return await outcomes_within(chat, job_ids, RESULTS_WITHIN_SECONDS)


async def first_generation_started(chat: ChatClient, job_ids: list[str]) -> None:
    async def started() -> None:
        while not any([(await chat.status(job_id)).stage == "generating" for job_id in job_ids]):  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the workflow's stage is read by query: there is no event to wait on

    await asyncio.wait_for(started(), timeout=GENERATING_WITHIN_SECONDS)


@pytest.mark.faults
@pytest.mark.parametrize("outage_seconds", SCALE.engine_outages_seconds)
async def test_jobs_wait_out_an_engine_outage_and_all_complete(
    outage_seconds: float, engine: EngineProcess, settings: Settings, isolated_namespace: str
) -> None:
    async with worker_against(settings, isolated_namespace, engine.base_url) as chat:
        # The deadline leaves room for the outage and for the engine working through the queue after it, on a
        # machine shared with other test runs.
        job_ids = await submitted(chat, SCALE.engine_jobs, deadline_seconds=SCALE.engine_deadline_seconds)
        await first_generation_started(chat, job_ids)
        await asyncio.to_thread(engine.stop)
        await asyncio.sleep(outage_seconds)
        await asyncio.to_thread(engine.start)
        ended = await outcomes_within(chat, job_ids, SCALE.engine_deadline_seconds + 60)
    ok = [r if isinstance(r, str) else "ok" for r in ended]
    print(f"[faults:{SCALE.name}] engine down {outage_seconds:g} s: {ok.count('ok')}/{len(ok)} ok")
    assert ok == ["ok"] * SCALE.engine_jobs
    assert all(isinstance(r, ChatResult) and r.content for r in ended)


async def test_jobs_fail_with_deadline_when_the_engine_stays_down_past_it(
    engine: EngineProcess, settings: Settings, isolated_namespace: str
) -> None:
    engine.stop()
    async with worker_against(settings, isolated_namespace, engine.base_url) as chat:
        ended = await outcomes(chat, await submitted(chat, 3, max_tokens=24, deadline_seconds=8))
    assert ended == [ErrorType.deadline.value] * 3


async def backlog_of(chat: ChatClient, count: int) -> None:
    async def reached() -> None:
        while await generate_backlog(chat) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # Temporal's count is read by RPC: there is no event to wait on

    await asyncio.wait_for(reached(), timeout=BACKLOG_WITHIN_SECONDS)


async def test_generations_wait_in_the_queue_while_the_engine_is_down_and_complete_once_it_is_up(
    engine: EngineProcess, settings: Settings, isolated_namespace: str
) -> None:
    engine.stop()
    async with worker_against(settings, isolated_namespace, engine.base_url) as chat:
        job_ids = await submitted(chat, WAITING_JOBS, deadline_seconds=90)
        await backlog_of(chat, WAITING_JOBS)
        await asyncio.sleep(HELD_FOR_SECONDS)
        assert await generate_backlog(chat) == WAITING_JOBS
        assert [(await chat.status(job_id)).stage for job_id in job_ids] == ["generating"] * WAITING_JOBS
        assert [await failed_generate_tries(chat, job_id) for job_id in job_ids] == [0] * WAITING_JOBS
        await asyncio.to_thread(engine.start)
        ended = await outcomes(chat, job_ids)
        failed_tries = [await failed_generate_tries(chat, job_id) for job_id in job_ids]
    assert [r if isinstance(r, str) else "ok" for r in ended] == ["ok"] * WAITING_JOBS
    assert failed_tries == [0] * WAITING_JOBS


async def test_tries_that_found_the_engine_unavailable_do_not_count_towards_the_generation_failed_cap(
    settings: Settings, isolated_namespace: str
) -> None:
    # FAKE engine: the real llama.cpp server cannot be made to answer 503 and then 500 on demand. One try finds it
    # unavailable (503, e.g. loading), then every try fails (500): the job ends after GENERATION_FAILED_TRIES of
    # those, not counting the first.
    unavailable = Scripted(status=503, body={"error": "Model is loading"})
    failing = Scripted(status=500, body={"error": "internal"})
    async with FakeEngine([unavailable] + [failing] * GENERATION_FAILED_TRIES) as engine:
        async with worker_against(settings, isolated_namespace, engine.base_url) as chat:
            chat_job = job(sampling={"max_tokens": 16, "seed": 1}, deadline_seconds=80)
            await chat.submit(chat_job)
            ended = await outcomes(chat, [chat_job.job_id])
    assert ended == [ErrorType.generation_failed.value]
    assert len(engine.requests) == 1 + GENERATION_FAILED_TRIES


def prepare_failures(logs: list[str], job_id: str) -> int:
    return sum(line.startswith(f"prepare job={job_id} try=") and "(EngineUnavailable)" in line for line in logs)


async def test_prepare_waits_out_an_engine_outage_while_it_counts_tokens(
    engine: EngineProcess, settings: Settings, isolated_namespace: str, all_logs: list[str]
) -> None:
    # One generation (max_attempts=1): what is tested is prepare's wait, on a machine shared with other test runs.
    wired = {"tokenizer": "engine", "max_attempts": 1}
    async with worker_against(settings, isolated_namespace, engine.base_url, **wired) as chat:
        await asyncio.to_thread(engine.stop)
        chat_job = job(sampling={"max_tokens": 16, "seed": 3}, deadline_seconds=120)
        await chat.submit(chat_job)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(engine.start)
        (ended,) = await outcomes(chat, [chat_job.job_id])
    assert isinstance(ended, ChatResult) and ended.content, ended
    # prepare met the outage, and was tried more often than a failure that is not an outage may be.
    assert prepare_failures(all_logs, chat_job.job_id) > PREPARE_TRIES


async def test_prepare_fails_with_deadline_when_the_engine_stays_down_past_it(
    engine: EngineProcess, settings: Settings, isolated_namespace: str, all_logs: list[str]
) -> None:
    async with worker_against(settings, isolated_namespace, engine.base_url, tokenizer="engine") as chat:
        await asyncio.to_thread(engine.stop)
        chat_job = job(sampling={"max_tokens": 16, "seed": 4}, deadline_seconds=8)
        await chat.submit(chat_job)
        ended = await outcomes(chat, [chat_job.job_id])
    assert ended == [ErrorType.deadline.value]
    assert prepare_failures(all_logs, chat_job.job_id) > 0
