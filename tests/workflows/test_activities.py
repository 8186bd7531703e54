"""The activities outside a worker, in temporalio's ActivityEnvironment: what they leave behind when a step
fails. The engine is a stand-in object: these tests never reach generation."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.testing import ActivityEnvironment

from workflows.activities import ChatActivities
from workflows.models import GenerateRequest, GenerateResult, Message, ResolvedSampling

SAMPLING = ResolvedSampling(temperature=0.7, top_p=0.9, max_tokens=16, seed=1)


class UnreachedEngine:
    async def complete(self, *args: object, **kwargs: object) -> GenerateResult:
        raise AssertionError("generation must not start when the stream cannot be opened")


def heartbeat_tasks() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and "_heartbeat_forever" in getattr(task.get_coro(), "__qualname__", "")
    ]


async def test_generate_leaves_no_heartbeat_running_when_the_stream_cannot_be_opened() -> None:
    # An ActivityEnvironment without a client: opening the job's stream from the activity raises.
    environment = ActivityEnvironment()
    request = GenerateRequest(job_id="j1", attempt=1, messages=[Message(role="user", content="hi")], sampling=SAMPLING)
    with pytest.raises(RuntimeError):
        await environment.run(ChatActivities(UnreachedEngine()).generate, request)
    await asyncio.sleep(0)
    assert heartbeat_tasks() == []
