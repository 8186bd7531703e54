"""Slot refill (orchestrator/engine_watch.py EngineSlots): the generation worker holds more generation tasks than
the engine's slots, and the engine never has more than the slots in flight. On the real Temporal dev server and
the real worker; the engine is the benchmark's inference STAND-IN (bench/standin.py), a fake with a fixed slow
delay and no model, allowed here because the real llama.cpp server cannot be made to hold its requests long
enough for the worker's reserve to fill, and because the stand-in counts the requests it has in flight."""

from __future__ import annotations

import asyncio
import uuid

from bench.capacity import capacity_job
from bench.standin import StandIn
from orchestrator.settings import Settings
from tests.helpers import held_at_least, worker_against

SLOTS = 2
RESERVE = 2
JOBS = 8
# Long enough that the worker's reserve fills while the slots' generations run, on a busy machine too.
STANDIN_DELAY_SECONDS = 3.0
# Guards against a hang, not timing assertions.
WITHIN_SECONDS = 180


async def test_the_worker_holds_more_generations_than_the_engine_slots_and_the_engine_never_sees_more(
    settings: Settings, isolated_namespace: str
) -> None:
    run = uuid.uuid4().hex[:8]
    jobs = [capacity_job(f"refill-{run}-{n}", deadline_seconds=WITHIN_SECONDS) for n in range(JOBS)]
    job_ids = [j.job_id for j in jobs]
    async with (
        StandIn(STANDIN_DELAY_SECONDS) as standin,
        worker_against(
            settings,
            isolated_namespace,
            standin.base_url,
            generation_slots=SLOTS,
            generation_reserve=RESERVE,
            max_attempts=1,  # the stand-in's one reply is judged once: one generation per job
        ) as chat,
    ):
        handles = [await chat.submit(j) for j in jobs]
        held = await asyncio.wait_for(held_at_least(chat, job_ids, SLOTS + RESERVE), timeout=WITHIN_SECONDS)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=WITHIN_SECONDS)
        stats = standin.stats()

    assert held == SLOTS + RESERVE  # the worker took the reserve beyond the engine's slots, and no more
    assert stats.max_in_flight == SLOTS  # yet the engine never had more than the slots
    assert sorted(r.marker or "" for r in stats.requests) == sorted(job_ids)  # one generation per job
    assert [r.job_id for r in results] == job_ids and all(r.content for r in results)
