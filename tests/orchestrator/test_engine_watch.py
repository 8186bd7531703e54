"""The generation worker's gate (orchestrator/engine_watch.py). The slot supplier's rules are checked with a
scripted answer to "is the engine down?" (the SDK calls the supplier; no engine is needed to exercise it); the
real engine checks are in tests/workflows/test_engine_outage.py and test_engine_failover.py. The last test runs a
real worker against a port where nothing listens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from orchestrator.devstack import free_port
from orchestrator.engine_watch import EngineWatch, GenerationSlots
from orchestrator.settings import Settings
from tests.helpers import worker_against

EVERY_SECONDS = 0.01
CTX: Any = None  # the SDK's context for a reservation; the supplier does not read it
# Guards against a hang, not timing assertions.
WITHIN_SECONDS = 10.0


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


async def test_a_worker_whose_engine_is_down_shuts_down_at_once(settings: Settings, isolated_namespace: str) -> None:
    # Its generation worker waits for the engine to reserve a slot; the shutdown cancels that wait.
    running = worker_against(settings, isolated_namespace, f"http://127.0.0.1:{free_port()}")
    await running.__aenter__()
    await asyncio.sleep(1.0)  # a few engine checks, the reservation waiting
    await asyncio.wait_for(running.__aexit__(None, None, None), timeout=WITHIN_SECONDS)
