"""The generation worker's gate: it takes a generation task only while its engine is up, so while the engine is
down the tasks wait in Temporal's queue (a backlog that another worker group, with an engine that is up, serves)
instead of failing attempts here.

`EngineWatch` knows whether the engine is up: `orchestrator.health.engine_is_down`, checked before the first poll,
in the background when a poll is due and the last check is older than CHECK_EVERY_SECONDS, every
CHECK_EVERY_SECONDS while the engine is down, and told by the generate activity when a generation found it
unavailable (the gate closes at once). `GenerationSlots` is the worker's activity slot supplier: at most `slots`
generation tasks held, and a slot (which the SDK takes before it polls) only while the engine is up.

What the gate cannot stop: a poll already waiting at Temporal when the engine goes down may still be given a task,
which then fails its try (EngineUnavailable) and closes the gate; the retry goes to whichever worker polls.

Slot refill: the worker takes `reserve` tasks beyond the engine's slots (GenerationSlots counts both), and
`EngineSlots` lets at most `slots` of them call the engine at once; the others wait in the worker, heartbeating and
cancellable, and the next one starts the moment a generation ends instead of after a poll to Temporal. One whose
wait ends while the gate is closed hands its task back (EngineUnavailable, retried by Temporal on whichever worker
polls) without calling the engine. Such a task has left Temporal's priority queue: a later, higher-priority task
cannot go ahead of it, so the reserve stays small."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from loguru import logger
from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)

from workflows.activities import ChatEngine
from workflows.models import EngineError, ErrorType, GenerateResult, Message, ResolvedSampling

CHECK_EVERY_SECONDS = 1.0

EngineIsDown = Callable[[str], Awaitable[bool]]


class EngineWatch:
    """Whether the engine at `base_url` is up, as of a check at most `every_seconds` old."""

    def __init__(self, base_url: str, is_down: EngineIsDown, every_seconds: float = CHECK_EVERY_SECONDS) -> None:
        self._base_url = base_url
        self._every = every_seconds
        self._is_down = is_down
        self._up: bool | None = None  # None: not checked yet
        self._checked_at = -math.inf
        self._marked_down_at = -math.inf
        self._checking: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Up as of the last check, and no generation has found it unavailable since."""
        return self._up is True

    async def wait_until_up(self) -> None:
        """Returns at once while the engine is up (starting a check in the background when the last one is older
        than `every_seconds`: a reservation never waits on a busy engine's answer); else once a check finds it
        up, checking every `every_seconds`."""
        if self.up:
            if time.monotonic() - self._checked_at >= self._every:
                self._check_loop()
            return
        while not self.up:
            # Shielded: a cancelled waiter (the worker shutting down) leaves the shared check to the others.
            await asyncio.shield(self._check_loop())

    def mark_down(self) -> None:
        """A generation found the engine unavailable: no slot until a check begun after this finds it up."""
        self._marked_down_at = time.monotonic()
        self._record(down=True)
        self._check_loop()

    async def aclose(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)
            self._checking = None

    def _check_loop(self) -> asyncio.Task[None]:
        """The one running check loop, started if none runs."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._checks_until_up())
        return self._checking

    async def _checks_until_up(self) -> None:
        while True:
            began = time.monotonic()
            try:
                down = await self._is_down(self._base_url)
            except Exception as error:  # e.g. an answer that is not HTTP: not known up, so not up
                logger.debug("engine check at {} failed: {}", self._base_url, type(error).__name__)
                down = True
            if began < self._marked_down_at:
                continue  # begun before a generation found the engine unavailable: check again
            self._checked_at = time.monotonic()
            self._record(down=down)
            if not down:
                return
            await asyncio.sleep(self._every)

    def _record(self, down: bool) -> None:
        """The engine's state; a change (or down at the first check) is logged once."""
        if down and self._up is not False:
            logger.warning("engine down at {}: no generation task is taken until it is up", self._base_url)
        elif not down and self._up is False:
            logger.info("engine up again at {}: generation tasks are taken", self._base_url)
        self._up = not down


class GenerationSlots(CustomSlotSupplier):
    """At most `slots` generation tasks held (a slot is taken before each poll for a task, and held while the task
    runs or waits for one of EngineSlots'), and a slot only while the engine is up. The SDK may call the non-async
    methods from another thread."""

    def __init__(self, slots: int, watch: EngineWatch) -> None:
        self._slots = slots
        self._watch = watch
        self._taken = 0
        self._lock = threading.Lock()
        self._freed: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        await self._take_slot()
        try:
            await self._watch.wait_until_up()
        except BaseException:  # cancelled: the worker is shutting down
            self._give_back()
            raise
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        if not self._watch.up:
            return None
        with self._lock:
            if self._taken >= self._slots:
                return None
            self._taken += 1
        return SlotPermit()

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        pass

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        self._give_back()

    async def _take_slot(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            freed = asyncio.Event()
            with self._lock:
                if self._taken < self._slots:
                    self._taken += 1
                    return
                self._freed.append((loop, freed))
            try:
                await freed.wait()
            finally:
                with self._lock:
                    if (loop, freed) in self._freed:
                        self._freed.remove((loop, freed))

    def _give_back(self) -> None:
        with self._lock:
            self._taken -= 1
            waiting, self._freed = self._freed, []
        for loop, freed in waiting:
            with suppress(RuntimeError):  # that loop is closed: its waiter is gone with it
                loop.call_soon_threadsafe(freed.set)


class EngineSlots:
    """`engine` as the worker's generations see it: at most `slots` of them call it at once, the rest wait here for
    a slot (see the module's doc). The result's queue_ms is the wait; the activity adds Temporal's to it."""

    def __init__(self, engine: ChatEngine, slots: int, watch: EngineWatch) -> None:
        self._engine = engine
        self._free = asyncio.Semaphore(slots)
        self._watch = watch

    async def complete(
        self,
        messages: list[Message],
        sampling: ResolvedSampling,
        stop: list[str],
        on_text: Callable[[str], None] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> GenerateResult:
        waiting_since = time.monotonic()
        async with self._free:
            waited_ms = (time.monotonic() - waiting_since) * 1000
            if not self._watch.up:
                raise EngineError(ErrorType.engine_unavailable, "the engine went down while this generation waited")
            result = await self._engine.complete(messages, sampling, stop, on_text=on_text, json_schema=json_schema)
        result.queue_ms = waited_ms
        return result
