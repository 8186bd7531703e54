"""Calls to Temporal that the server gave up on, tried again.

A call that fails with one of RETRIED_STATUSES may or may not have taken effect: the server gave up on it (the dev
server under heavy load answers CANCELLED, "operation was canceled"). Temporal's client retries UNAVAILABLE and
RESOURCE_EXHAUSTED itself, not these. Only calls that are safe to repeat go through `given_up_retried` (a read; a
start whose workflow id makes a repeat find the job started)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio.service import RPCError, RPCStatusCode

RETRIED_STATUSES = frozenset({RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED})
# Tries at most, the waits between them doubling from the first, ~7.5 s in all.
TRIES = 5
FIRST_WAIT = timedelta(seconds=0.5)

T = TypeVar("T")


async def given_up_retried(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`'s result, calling again (up to TRIES times) while the server gives up on it."""
    pause = FIRST_WAIT
    for _ in range(TRIES - 1):
        try:
            return await call()
        except RPCError as error:
            if error.status not in RETRIED_STATUSES:
                raise
        await asyncio.sleep(pause.total_seconds())
        pause *= 2
    return await call()
