"""Engine errors the real llama.cpp server cannot be made to produce, from the FAKE engine (tests/fake_engine.py):
a storm of 429s (TGI over its max concurrent requests) and errors inside a 200 stream after some text (TGI's
`{"error", "error_type"}` event when generation fails midway). Everything else is real: the session's Temporal
dev server and a worker in a namespace of its own. The client-level reading of these errors is in
tests/orchestrator/test_inference_faults.py; here whole jobs retry through them and complete."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.devstack import DevStack
from orchestrator.settings import Settings
from tests.fake_engine import FakeEngine, Scripted, broken_stream, overloaded, reply_stream
from tests.faults.scale import SCALE
from tests.helpers import generate_tries, job, outcomes, verdicts, worker_against
from workflows.models import ChatResult

pytestmark = pytest.mark.faults

# A reply that passes validation for the helpers' job (Mira, user Tam).
REPLY = "The rain hammers the shutters while I pour you a drink. Sit down and warm up."
PARTIAL = "The rain hammers the"
# Guards against a stuck job, not timing assertions.
RESULTS_WITHIN_SECONDS = 180.0


async def through_fake_engine(
    settings: Settings, namespace: str, script: list[Scripted]
) -> tuple[list[ChatResult | str], list[int], int]:
    """SCALE.fake_jobs jobs through a worker whose engine answers `script`, then REPLY to every later request:
    their outcomes, every job's generation tries, and the requests the engine saw. Each job's one checked reply
    is REPLY, accepted."""
    async with FakeEngine(script, then=reply_stream(REPLY)) as engine:
        async with worker_against(settings, namespace, engine.base_url) as chat:
            jobs = [job() for _ in range(SCALE.fake_jobs)]
            await asyncio.gather(*(chat.submit(j) for j in jobs))
            job_ids = [j.job_id for j in jobs]
            ended = await outcomes(chat, job_ids, RESULTS_WITHIN_SECONDS)
            tries = [t for j in job_ids for t in await generate_tries(chat.temporal, chat.handle(j).id)]
            checked = [await verdicts(chat.temporal, chat.handle(j).id) for j in job_ids]
    assert [[(v.valid, v.cleaned) for v in vs] for vs in checked] == [[(True, REPLY)]] * len(jobs)
    return ended, tries, len(engine.requests)


async def test_jobs_retry_through_a_429_storm_and_complete(
    stack: DevStack, settings: Settings, isolated_namespace: str
) -> None:
    ended, tries, requests = await through_fake_engine(
        settings, isolated_namespace, [overloaded() for _ in range(SCALE.storm_429s)]
    )
    print(
        f"\n[faults:{SCALE.name}] 429 storm (FAKE engine): {SCALE.storm_429s} × 429 over {SCALE.fake_jobs} jobs, "
        f"{requests} requests, tries {sorted(tries)}, outcomes {[getattr(r, 'outcome', r) for r in ended]}"
    )
    assert [getattr(r, "outcome", r) for r in ended] == ["ok"] * SCALE.fake_jobs
    assert all(isinstance(r, ChatResult) and r.content == REPLY and r.attempts == 1 for r in ended)
    # Each 429 cost one try of one job's generation and nothing more: no reply was generated twice.
    assert requests == SCALE.storm_429s + SCALE.fake_jobs
    assert sum(tries) == requests


async def test_jobs_retry_after_errors_inside_a_200_stream_and_complete(
    stack: DevStack, settings: Settings, isolated_namespace: str
) -> None:
    errors = [
        ("Request failed during generation: CUDA out of memory", "generation"),
        ("Model is overloaded", "overloaded"),
    ]
    script = [broken_stream(PARTIAL, *errors[n % len(errors)]) for n in range(SCALE.fake_jobs)]
    ended, tries, requests = await through_fake_engine(settings, isolated_namespace, script)
    print(
        f"\n[faults:{SCALE.name}] errors inside a 200 stream (FAKE engine): {SCALE.fake_jobs} broken streams, "
        f"{requests} requests, tries {sorted(tries)}, outcomes {[getattr(r, 'outcome', r) for r in ended]}"
    )
    assert [getattr(r, "outcome", r) for r in ended] == ["ok"] * SCALE.fake_jobs
    # The broken stream's text is not part of the reply: the retry started it over.
    assert all(isinstance(r, ChatResult) and r.content == REPLY and r.attempts == 1 for r in ended)
    # One broken stream and one good one per job, each a try of its own.
    assert requests == 2 * SCALE.fake_jobs
    assert sum(tries) == requests
