"""The generation worker's gate (orchestrator/engine_watch.py). The slot supplier's rules are checked with a
scripted answer to "is the engine down?" (the SDK calls the supplier; no engine is needed to exercise it); the
real engine checks are in tests/workflows/test_engine_outage.py and test_engine_failover.py. EngineSlots (the cap
at the engine behind the reserve) is checked against the benchmark's inference STAND-IN, a fake engine with a
fixed delay (bench/standin.py): the real llama.cpp server's speed cannot be held still long enough to keep
requests waiting on purpose, and the stand-in counts what it has in flight. The last test runs a real worker
against a port where nothing listens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from bench.standin import StandIn
from orchestrator.devstack import free_port
from orchestrator.engine_watch import EngineSlots, EngineWatch, GenerationSlots
from orchestrator.inference import InferenceClient
from orchestrator.settings import Settings
from tests.helpers import worker_against
from workflows.models import EngineError, ErrorType, GenerateResult, Message, ResolvedSampling

EVERY_SECONDS = 0.01
CTX: Any = None  # the SDK's context for a reservation; the supplier does not read it
# Guards against a hang, not timing assertions.
WITHIN_SECONDS = 10.0
STANDIN_DELAY_SECONDS = 0.3
ASKING = [Message(role="user", content="Describe the harbour.")]
SAMPLING = ResolvedSampling(temperature=0.7, top_p=0.9, max_tokens=100, seed=1)


class Answers:
    """`is_down` answering from a script, then up; counts the checks."""

    def __init__(self, *down: bool) -> None:
        self.script = list(down)
        self.checks = 0

    async def __call__(self, base_url: str) -> bool:
        self.checks += 1
        return self.script.pop(0) if self.script else False


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


async def reserved(slots: GenerationSlots) -> object:
    return await asyncio.wait_for(slots.reserve_slot(CTX), timeout=WITHIN_SECONDS)


async def test_a_slot_is_given_once_the_engine_is_up_and_the_outage_is_logged_once(logged: list[str]) -> None:
    answers = Answers(True, True, True)
    watch = EngineWatch("http://engine", every_seconds=EVERY_SECONDS, is_down=answers)
    await reserved(GenerationSlots(2, watch))
    await watch.aclose()
    assert answers.checks == 4
    assert logged == [
        "engine down at http://engine: no generation task is taken until it is up",
        "engine up again at http://engine: generation tasks are taken",
    ]


async def test_no_more_than_the_slots_and_a_cancelled_reservation_gives_its_slot_back() -> None:
    watch = EngineWatch("http://engine", every_seconds=EVERY_SECONDS, is_down=Answers())
    slots = GenerationSlots(2, watch)
    await reserved(slots)
    await reserved(slots)
    third = asyncio.create_task(slots.reserve_slot(CTX))
    await asyncio.sleep(0.05)
    assert not third.done()
    assert slots.try_reserve_slot(CTX) is None
    third.cancel()
    slots.release_slot(CTX)
    await reserved(slots)  # the freed slot, not taken by the cancelled reservation
    assert slots.try_reserve_slot(CTX) is None
    await watch.aclose()


async def test_a_generation_that_found_the_engine_unavailable_closes_the_gate_until_a_check_finds_it_up() -> None:
    answers = Answers(False, True, True)
    watch = EngineWatch("http://engine", every_seconds=60.0, is_down=answers)
    slots = GenerationSlots(4, watch)
    await reserved(slots)
    assert slots.try_reserve_slot(CTX) is not None
    watch.mark_down()
    assert slots.try_reserve_slot(CTX) is None
    waiting = asyncio.create_task(slots.reserve_slot(CTX))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # checked once since: still down; the next check is a minute away
    waiting.cancel()
    await watch.aclose()
    assert answers.checks == 2


async def test_a_due_check_runs_in_the_background_and_finding_the_engine_down_closes_the_gate() -> None:
    answers = Answers(False, *[True] * 1000)  # up, then down for a good while
    watch = EngineWatch("http://engine", every_seconds=EVERY_SECONDS, is_down=answers)
    slots = GenerationSlots(4, watch)
    await reserved(slots)
    await asyncio.sleep(2 * EVERY_SECONDS)
    await reserved(slots)  # at once, on the last answer; the due check starts beside it

    async def checked_again() -> None:
        while answers.checks < 2:  # noqa: ASYNC110
            await asyncio.sleep(EVERY_SECONDS)

    await asyncio.wait_for(checked_again(), timeout=WITHIN_SECONDS)
    assert slots.try_reserve_slot(CTX) is None
    await watch.aclose()


async def up_watch(answers: Answers) -> EngineWatch:
    watch = EngineWatch("http://engine", every_seconds=60.0, is_down=answers)
    await asyncio.wait_for(watch.wait_until_up(), timeout=WITHIN_SECONDS)
    return watch


def generation(slots: EngineSlots) -> asyncio.Task[GenerateResult]:
    return asyncio.create_task(slots.complete(ASKING, SAMPLING, []))


async def in_flight_at(standin: StandIn, count: int) -> None:
    async def reached() -> None:
        while standin.stats().max_in_flight < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reached(), timeout=WITHIN_SECONDS)


async def test_no_more_generations_than_the_slots_reach_the_engine_and_the_rest_wait_and_say_so() -> None:
    watch = await up_watch(Answers())
    async with StandIn(STANDIN_DELAY_SECONDS) as standin:
        slots = EngineSlots(InferenceClient(standin.base_url, "stand-in"), 2, watch)
        results = await asyncio.wait_for(
            asyncio.gather(*(slots.complete(ASKING, SAMPLING, []) for _ in range(5))), timeout=WITHIN_SECONDS
        )
        stats = standin.stats()
    await watch.aclose()
    assert len(stats.requests) == 5 and stats.max_in_flight == 2
    # Three waited for a slot, each at least until a generation of the stand-in's delay ended: their queue_ms.
    assert sum(r.queue_ms >= STANDIN_DELAY_SECONDS * 1000 for r in results) == 3


async def test_a_generation_cancelled_while_it_waits_never_reaches_the_engine_nor_keeps_a_slot() -> None:
    watch = await up_watch(Answers())
    async with StandIn(STANDIN_DELAY_SECONDS) as standin:
        slots = EngineSlots(InferenceClient(standin.base_url, "stand-in"), 1, watch)
        running = generation(slots)
        await in_flight_at(standin, 1)
        waiting = generation(slots)
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.wait_for(running, timeout=WITHIN_SECONDS)
        await asyncio.wait_for(generation(slots), timeout=WITHIN_SECONDS)  # the slot is free again
        stats = standin.stats()
    await watch.aclose()
    assert waiting.cancelled()
    assert len(stats.requests) == 2 and stats.max_in_flight == 1


async def test_a_generation_whose_wait_ends_while_the_gate_is_closed_hands_its_task_back_unsent() -> None:
    watch = await up_watch(Answers(False, *[True] * 1000))
    async with StandIn(STANDIN_DELAY_SECONDS) as standin:
        slots = EngineSlots(InferenceClient(standin.base_url, "stand-in"), 1, watch)
        running = generation(slots)
        await in_flight_at(standin, 1)
        waiting = generation(slots)
        watch.mark_down()  # as the activity does when a generation found the engine unavailable
        await asyncio.wait_for(running, timeout=WITHIN_SECONDS)
        with pytest.raises(EngineError) as handed_back:
            await asyncio.wait_for(waiting, timeout=WITHIN_SECONDS)
        stats = standin.stats()
    await watch.aclose()
    assert handed_back.value.type is ErrorType.engine_unavailable  # retried by Temporal, on whichever worker polls
    assert len(stats.requests) == 1


async def test_a_worker_whose_engine_is_down_shuts_down_at_once(settings: Settings, isolated_namespace: str) -> None:
    # Its generation worker waits for the engine to reserve a slot; the shutdown cancels that wait.
    running = worker_against(settings, isolated_namespace, f"http://127.0.0.1:{free_port()}")
    await running.__aenter__()
    await asyncio.sleep(1.0)  # a few engine checks, the reservation waiting
    await asyncio.wait_for(running.__aexit__(None, None, None), timeout=WITHIN_SECONDS)
