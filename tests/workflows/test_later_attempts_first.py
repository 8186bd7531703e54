"""A job's regeneration goes ahead of new jobs' first generations: on the real dev server (priority matcher,
one partition: orchestrator.devstack.DEV_SERVER_DYNAMIC_CONFIG) and the real model, with one generation slot and a
reserve of one (orchestrator/engine_watch.py): a task the worker already holds has left Temporal's priority queue,
so the regeneration cannot go ahead of it."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path

import yaml
from temporalio.api.enums.v1 import EventType

from orchestrator.client import ChatClient
from orchestrator.settings import Settings
from tests.helpers import cancelled, generation_started, job, worker_against
from workflows.models import DEFAULT_PRIORITY

PROMPT = "Tell me the whole history of Saltmere, slowly."
RESERVE = 1


async def generations(chat: ChatClient, job_id: str) -> list[tuple[int, datetime, datetime | None]]:
    """(priority key, scheduled, started or None) of each generate activity of the job, in the order scheduled."""
    history = await chat.handle(job_id).fetch_history()
    started = {
        e.activity_task_started_event_attributes.scheduled_event_id: e.event_time.ToDatetime()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    return [
        (
            e.activity_task_scheduled_event_attributes.priority.priority_key,
            e.event_time.ToDatetime(),
            started.get(e.event_id),
        )
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_a_rejected_replys_regeneration_starts_before_the_new_jobs_queued_ahead_of_it(
    settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    # Every reply breaks this policy (any text but the prompt itself), so every job is regenerated: deterministic
    # with the real model.
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"patterns": [{"pattern": rf"^(?!{re.escape(PROMPT)}$)[\s\S]"}]}))
    messages = [{"role": "user", "content": PROMPT}]
    async with worker_against(
        settings,
        isolated_namespace,
        settings.inference_base_url,
        generation_slots=1,
        generation_reserve=RESERVE,
        policy_file=policy,
    ) as chat:
        # Long enough for the new jobs to queue behind it, short enough on a busy machine (~1 token/s here).
        first = job(messages=messages, sampling={"max_tokens": 64}, deadline_seconds=600)
        handles = [await chat.submit(first)]
        try:
            await asyncio.wait_for(generation_started(chat, first.job_id, attempt=1), timeout=120)
            # Queued behind the first job's generation, which holds the only slot.
            new = [job(messages=messages, sampling={"max_tokens": 32}, deadline_seconds=600) for _ in range(4)]
            handles += await asyncio.gather(*(chat.submit(j) for j in new))
            await asyncio.wait_for(generation_started(chat, first.job_id, attempt=2), timeout=300)
        finally:
            await cancelled(handles)  # the rest of the queue is of no interest
        regenerated = await generations(chat, first.job_id)
        new_first = [(await generations(chat, j.job_id))[0] for j in new]

    # A third generation may have been scheduled before the cancel reached the job: one level up as well.
    keys = [key for key, _, _ in regenerated]
    assert keys[:2] == [DEFAULT_PRIORITY, DEFAULT_PRIORITY - 1] and set(keys[1:]) == {DEFAULT_PRIORITY - 1}
    assert {key for key, _, _ in new_first} == {DEFAULT_PRIORITY}
    _, regeneration_scheduled, regeneration_started = regenerated[1]
    assert regeneration_started is not None
    # The premise: every new job's first generation was queued before the regeneration was.
    assert all(scheduled < regeneration_scheduled for _, scheduled, _ in new_first)
    # In order of arrival the regeneration would start after all four. At most 1 + RESERVE go first: the one the
    # freed slot took while the first job's reply was being checked and its regeneration not yet scheduled, and
    # those the worker held in its reserve by then.
    ahead = sum(started is not None and started < regeneration_started for _, _, started in new_first)
    assert ahead <= 1 + RESERVE
