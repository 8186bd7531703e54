"""Engine outages on the real stack: the session's Temporal dev server and a llama.cpp server (SmolLM2) of
the test's own (tests/engine_process.py), stopped with SIGTERM while jobs run, as an orchestrator stops the
engine's container. The session's shared engine is never touched.

The prepare tests count tokens through the engine (CHAT_WORKER_TOKENIZER=engine: for llama.cpp the table's
route, llama-cpp-python's POST /extras/tokenize/count), so that `prepare` needs the engine as TGI's and vLLM's
/tokenize make it need theirs; the embedded stack itself counts with the GGUF."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from orchestrator.client import ChatClient
from orchestrator.devstack import DevStack
from orchestrator.settings import Settings
from tests.engine_process import EngineProcess
from tests.helpers import job, worker_against
from workflows.activities import PREPARE_TRIES
from workflows.models import ChatResult, ErrorType

JOBS = 4
OUTAGE_SECONDS = 15.0
# Guards against a stuck job, not timing assertions.
GENERATING_WITHIN_SECONDS = 60.0
RESULTS_WITHIN_SECONDS = 120.0


@pytest.fixture
def engine(stack: DevStack, settings: Settings, tmp_path: Path) -> Iterator[EngineProcess]:
    with EngineProcess(settings, tmp_path) as running:
        yield running


async def outcome(chat: ChatClient, job_id: str) -> ChatResult | str:
    """The job's result, or the type of its failure."""
    try:
        return await chat.result(job_id)
    except WorkflowFailureError as failure:
        assert isinstance(failure.cause, ApplicationError), repr(failure.cause)
        return failure.cause.type or ""


async def outcomes(chat: ChatClient, job_ids: list[str]) -> list[ChatResult | str]:
    gathered = asyncio.gather(*(outcome(chat, job_id) for job_id in job_ids))
    return await asyncio.wait_for(gathered, timeout=RESULTS_WITHIN_SECONDS)


async def first_generation_started(chat: ChatClient, job_ids: list[str]) -> None:
    async def started() -> None:
        while not any([(await chat.status(job_id)).stage == "generating" for job_id in job_ids]):  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the workflow's stage is read by query: there is no event to wait on

    await asyncio.wait_for(started(), timeout=GENERATING_WITHIN_SECONDS)


async def test_jobs_wait_out_an_engine_outage_and_all_complete(
    engine: EngineProcess, settings: Settings, isolated_namespace: str
) -> None:
    async with worker_against(settings, isolated_namespace, engine.base_url) as chat:
        # The deadline leaves room for the outage and for the engine working through the queue after it, on a
        # machine shared with other test runs.
        jobs = [job(sampling={"max_tokens": 16, "seed": n}, deadline_seconds=90) for n in range(JOBS)]
        for chat_job in jobs:
            await chat.submit(chat_job)
        job_ids = [j.job_id for j in jobs]
        await first_generation_started(chat, job_ids)
        await asyncio.to_thread(engine.stop)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(engine.start)
        ended = await outcomes(chat, job_ids)
    assert [r if isinstance(r, str) else "ok" for r in ended] == ["ok"] * JOBS
    assert all(isinstance(r, ChatResult) and r.content for r in ended)


async def test_jobs_fail_with_deadline_when_the_engine_stays_down_past_it(
    engine: EngineProcess, settings: Settings, isolated_namespace: str
) -> None:
    engine.stop()
    async with worker_against(settings, isolated_namespace, engine.base_url) as chat:
        jobs = [job(sampling={"max_tokens": 24, "seed": n}, deadline_seconds=8) for n in range(3)]
        for chat_job in jobs:
            await chat.submit(chat_job)
        ended = await outcomes(chat, [j.job_id for j in jobs])
    assert ended == [ErrorType.deadline.value] * 3


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
