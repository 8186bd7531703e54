"""A heavy job's preparation (a thousand lorebook entries, a long history, counted with the local GGUF's
tokenizer) leaves the worker's event loop free for its other jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from temporalio.testing import ActivityEnvironment

from characters import BookEntry, Character, CharacterBook
from orchestrator.settings import Settings
from orchestrator.tokens import GgufCounter, smollm2_gguf
from tests.helpers import job
from workflows.activities import JobActivities
from workflows.models import MAX_LOREBOOK_ENTRIES, ChatJob, EngineLimits, JobLimits, Prepared, PrepareRequest
from workflows.policy import Policy

LINE = "The tide drags salt and rope along the harbour wall while the lamps gutter in the wind. "


def heavy_job() -> ChatJob:
    book = CharacterBook(
        scan_depth=50,
        entries=[
            BookEntry(keys=[f"rope{i}", "salt"], content=f"Lore {i}: " + LINE * 3, secondary_keys=["harbour"])
            for i in range(MAX_LOREBOOK_ENTRIES)
        ],
    )
    character = Character(name="Mira", description="Keeps the Saltmere inn.", character_book=book)
    history = [
        {"role": role, "content": f"{role} {i}: " + LINE * 60} for i in range(60) for role in ("user", "assistant")
    ]
    return job(character=character, messages=[*history, {"role": "user", "content": "And the harbour?"}])


async def ticks_while(work: Awaitable[Prepared]) -> tuple[int, Prepared]:
    """How many times a concurrent task got the event loop while `work` ran, and what `work` gave."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = ticks
    try:
        result = await work
    finally:
        task.cancel()
    return ticks - started, result


async def test_preparing_a_heavy_job_leaves_the_event_loop_free() -> None:
    counter = GgufCounter(smollm2_gguf(Settings()))
    limits = EngineLimits(max_input_tokens=100_000, max_total_tokens=120_000, margin_tokens=64)
    activities = JobActivities(JobLimits(), limits, counter, Policy())
    heavy = heavy_job()

    ticks, prepared = await ticks_while(ActivityEnvironment().run(activities.prepare, PrepareRequest(job=heavy)))

    assert len(prepared.context.lorebook) == MAX_LOREBOOK_ENTRIES  # every entry was scanned, counted and kept
    # Run on the event loop, the scan and the counting would have let the ticker in once at most.
    assert ticks > 100
