"""`ChatClient.submit(..., refuse_when_overloaded=True)`: the estimate from the generation queue's stats
(pure), and the refusal on the real dev server with a real backlog on a one-slot worker and the real model."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.taskqueue.v1 import TaskQueueStats
from temporalio.service import RPCError, RPCStatusCode

from orchestrator.client import (
    ChatClient,
    GenerationBacklog,
    Overloaded,
    backlog_ahead,
    estimated_wait,
)
from orchestrator.settings import Settings
from tests.helpers import USER_TEXT, cancelled, generation_started, job, worker_against
from workflows.models import DEFAULT_PRIORITY

LONG_REPLY = [{"role": "user", "content": "Tell me the whole history of Saltmere, slowly."}]


def stats(count: int, rate: float) -> TaskQueueStats:
    return TaskQueueStats(approximate_backlog_count=count, tasks_dispatch_rate=rate)


def test_the_backlog_ahead_counts_the_jobs_priority_and_higher_and_the_rate_of_all() -> None:
    by_key = {1: stats(1, 0.1), 2: stats(2, 0.2), 3: stats(4, 0.3), 4: stats(8, 0.4), 5: stats(16, 0.5)}
    ahead = backlog_ahead(by_key, 3)
    assert ahead.ahead == 7 and ahead.dispatch_rate == pytest.approx(1.5)
    assert backlog_ahead(by_key, 1).ahead == 1 and backlog_ahead(by_key, 5).ahead == 31
    # Tasks without a priority, listed under key 0, are at the server's default level 3.
    assert backlog_ahead({0: stats(5, 0.0)}, 3).ahead == 5 and backlog_ahead({0: stats(5, 0.0)}, 2).ahead == 0
    assert backlog_ahead({}, 3) == GenerationBacklog(ahead=0, dispatch_rate=0.0)


def test_the_wait_is_the_backlog_ahead_over_the_recent_dispatch_rate() -> None:
    assert estimated_wait(GenerationBacklog(ahead=6, dispatch_rate=0.5)) == timedelta(seconds=12)
    assert estimated_wait(GenerationBacklog(ahead=0, dispatch_rate=0.0)) == timedelta(0)
    # A backlog that nothing served lately (no worker, an engine outage waited out): unknown, never a refusal.
    assert estimated_wait(GenerationBacklog(ahead=40, dispatch_rate=0.0)) is None


def test_the_refusal_names_the_job_the_wait_and_the_deadline_and_no_chat_text() -> None:
    message = str(Overloaded("job-7", timedelta(seconds=41.6), 30.0))
    assert message == (
        "job job-7 refused: overloaded, the generations queued ahead of it need about 42 s at the recent service "
        "rate, past its deadline of 30 s; nothing was started"
    )


async def backlog_of_at_least(chat: ChatClient, count: int) -> None:
    while (await chat.generation_backlog(DEFAULT_PRIORITY)).ahead < count:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def test_a_job_that_the_backlog_cannot_serve_before_its_deadline_is_refused_only_when_asked(
    settings: Settings, isolated_namespace: str
) -> None:
    async with worker_against(settings, isolated_namespace, settings.inference_base_url, generation_slots=1) as chat:
        # An empty queue refuses nothing: the first long job takes the only slot.
        busy = job(messages=LONG_REPLY, sampling={"max_tokens": 400})
        started = [await chat.submit(busy, refuse_when_overloaded=True)]
        try:
            await asyncio.wait_for(generation_started(chat, busy.job_id), timeout=60)
            for _ in range(8):  # long ones too, so that the backlog drains slowly even on an idle machine
                started.append(await chat.submit(job(messages=LONG_REPLY, sampling={"max_tokens": 400})))
            # Temporal's stats are approximate and cached up to 5 s: wait until they show the backlog.
            await asyncio.wait_for(backlog_of_at_least(chat, 4), timeout=60)
            backlog = await chat.generation_backlog(DEFAULT_PRIORITY)
            assert backlog.dispatch_rate > 0  # the long job was dispatched lately: the rate is known

            refused = job(deadline_seconds=1)
            with pytest.raises(Overloaded) as overloaded:
                await chat.submit(refused, refuse_when_overloaded=True)
            assert overloaded.value.job_id == refused.job_id and overloaded.value.wait > timedelta(seconds=1)
            assert USER_TEXT not in str(overloaded.value) and "deadline of 1 s" in str(overloaded.value)
            with pytest.raises(RPCError) as missing:
                await chat.handle(refused.job_id).describe()
            assert missing.value.status == RPCStatusCode.NOT_FOUND  # nothing was started
            # The same deadline at priority 1: nothing is queued ahead of it at its level.
            started.append(await chat.submit(job(deadline_seconds=1, priority=1), refuse_when_overloaded=True))

            accepted = await chat.submit(refused)  # the same job without the flag is started
            started.append(accepted)
            assert (await accepted.describe()).raw_description.workflow_execution_info.status in (
                WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING,
                WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_FAILED,  # its 1 s deadline may pass meanwhile
            )
        finally:
            await cancelled(started)
