"""Several engines: two worker groups on the same task queues, each with a llama.cpp server (SmolLM2) of its own
(tests/engine_process.py), on the session's real Temporal dev server. A worker takes no generation task while
its engine is down, so jobs reach the worker whose engine is up. The session's shared engine is never touched."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestrator.client import ChatClient
from orchestrator.devstack import DevStack
from orchestrator.settings import Settings
from tests.engine_process import EngineProcess
from tests.helpers import failed_generate_tries, mid_generation, submitted, worker_against
from tests.helpers import outcomes as outcomes_within

JOBS = 2
MOVED_MAX_TOKENS = 200
# SmolLM2 ends its reply to the usual short prompt after ~55 tokens, in under a second on a quick machine: sooner
# than B can be stopped. Asked for a long story it writes to max_tokens (as in the bench's history section).
LONG_REPLY_PROMPT = "Write a long story, chapter after chapter, about a quiet harbour town: its people, its boats."
DEADLINE_SECONDS = 150
# Guards against a stuck job, not timing assertions.
GENERATING_WITHIN_SECONDS = 60.0
RESULTS_WITHIN_SECONDS = 120.0


async def outcomes(chat: ChatClient, job_ids: list[str]) -> list[str]:
    """`ok` for a result with content, else the type of the job's failure."""
    ended = await outcomes_within(chat, job_ids, RESULTS_WITHIN_SECONDS)
    return [r if isinstance(r, str) else "ok" if r.content else "empty" for r in ended]


async def test_jobs_complete_on_the_worker_whose_engine_is_up(
    stack: DevStack, settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    with EngineProcess(settings, tmp_path) as engine_a, EngineProcess(settings, tmp_path) as engine_b:
        await asyncio.to_thread(engine_a.stop)
        # One generation per job (a rejected reply is returned flagged): the test is about where generations run.
        async with (
            worker_against(settings, isolated_namespace, engine_a.base_url, max_attempts=1) as chat,
            worker_against(settings, isolated_namespace, engine_b.base_url, max_attempts=1),
        ):
            # A down, B up: every job on B; A's worker takes none (against A, its try would fail).
            on_b = await submitted(chat, JOBS, deadline_seconds=DEADLINE_SECONDS)
            on_b_ended = await outcomes(chat, on_b)
            on_b_failed_tries = [await failed_generate_tries(chat, job_id) for job_id in on_b]

            # B stopped while it generates; A back: the jobs it was running and the rest complete on A.
            # Long replies, so that B is stopped mid-generation rather than after a short one ended.
            moved = await submitted(
                chat,
                JOBS,
                max_tokens=MOVED_MAX_TOKENS,
                deadline_seconds=DEADLINE_SECONDS,
                first_seed=JOBS,
                messages=[{"role": "user", "content": LONG_REPLY_PROMPT}],
            )
            await mid_generation(chat, moved, GENERATING_WITHIN_SECONDS)
            await asyncio.to_thread(engine_b.stop)
            await asyncio.to_thread(engine_a.start)
            moved_ended = await outcomes(chat, moved)
            moved_failed_tries = [await failed_generate_tries(chat, job_id) for job_id in moved]
    assert on_b_ended == ["ok"] * JOBS
    assert on_b_failed_tries == [0] * JOBS
    assert moved_ended == ["ok"] * JOBS
    assert sum(moved_failed_tries) >= 1  # B was stopped mid-generation: that try failed and was retried on A
