"""Following a job as it runs: the event stream, the status query, cancellation, search attributes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError

from orchestrator.client import ChatClient
from orchestrator.inference import InferenceClient
from orchestrator.settings import Settings
from orchestrator.visibility import recent_jobs
from tests.fake_engine import FakeEngine, Scripted, reply_stream
from tests.helpers import job, worker_against
from workflows.models import JobType, Message, ResolvedSampling, StreamEvent
from workflows.search_attributes import ATTEMPTS, CHARACTER_NAME, JOB_TYPE, OUTCOME
from workflows.validation import ReplySpec, validate


async def events_of(chat: ChatClient, job_id: str) -> list[StreamEvent]:
    return [event async for event in chat.stream(job_id)]


def text_after_last_reset(events: list[StreamEvent]) -> str:
    resets = [i for i, e in enumerate(events) if e.type == "reset"]
    start = resets[-1] + 1 if resets else 0
    return "".join(e.text for e in events[start:] if e.type == "delta")


async def test_a_streamed_roleplay_reply_from_the_real_model(chat: ChatClient) -> None:
    submitted = job(sampling={"max_tokens": 60, "seed": 8})
    await chat.submit(submitted)
    events = await events_of(chat, submitted.job_id)
    assert events[-1].type == "done" and sum(e.type == "done" for e in events) == 1
    result = events[-1].result
    assert result == await chat.result(submitted.job_id)
    deltas = [e for e in events if e.type == "delta"]
    assert len(deltas) > 3  # it arrived in pieces, not as one block
    last_attempt = max(e.attempt for e in deltas)
    assert last_attempt == result.attempts
    assert sum(e.type == "reset" for e in events) == result.attempts - 1

    # The deltas after the last reset are the last attempt's reply before cleaning; cleaning the returned
    # attempt's deltas gives the result's content.
    def streamed(attempt: int) -> str:
        return "".join(e.text for e in deltas if e.attempt == attempt)

    assert text_after_last_reset(events) == streamed(result.attempts)
    spec = ReplySpec(job_type=JobType.roleplay, char_name="Mira", user_name="Tam")
    returned = result.attempt_details[result.returned_attempt - 1]
    raw = streamed(result.returned_attempt)
    assert validate(raw, spec, submitted.messages, returned.finish_reason).cleaned == result.content


async def test_a_forced_regeneration_and_a_temporal_retry_each_emit_reset_first(
    settings: Settings, isolated_namespace: str
) -> None:
    # FAKE engine: a 429 and an out-of-character reply on demand, which the real model cannot be made to give.
    overloaded = Scripted(status=429, body={"error": "Model is overloaded", "error_type": "overloaded"})
    bad = "As an AI language model, I cannot pretend to be a tavern keeper, but I can describe one."
    good = "The rain hammers the shutters while I pour you a drink. Sit down and warm up, love."
    async with FakeEngine([reply_stream(bad), overloaded, reply_stream(good)]) as engine:
        async with worker_against(settings, isolated_namespace, engine.base_url) as wired:
            submitted = job()
            await wired.submit(submitted)
            events = await events_of(wired, submitted.job_id)
    others = [e for e in events if e.type != "delta"]
    # Attempt 2 (validation rejected attempt 1) resets; its first try hits the 429 and Temporal's retry
    # resets again before streaming.
    assert [(e.type, getattr(e, "reason", None), getattr(e, "try_number", None)) for e in others] == [
        ("reset", "regenerate", 1),
        ("reset", "retry", 2),
        ("done", None, None),
    ]
    first_reset = events.index(others[0])
    assert all(e.type == "delta" and e.attempt == 1 for e in events[:first_reset])
    assert "".join(e.text for e in events[:first_reset] if e.type == "delta") == bad
    assert text_after_last_reset(events) == good and events[-1].result.content == good


async def test_status_follows_the_job(chat: ChatClient) -> None:
    submitted = job(
        sampling={"max_tokens": 200, "seed": 3},
        messages=[{"role": "user", "content": "Tell me about the harbour, Mira, in detail."}],
    )
    await chat.submit(submitted)
    seen = set()
    async for event in chat.stream(submitted.job_id):
        if event.type == "delta" and not seen:
            status = await chat.status(submitted.job_id)
            seen.add(status.stage)
            assert status.stage == "generating" and status.attempt >= 1 and status.elapsed_ms > 0
    final = await chat.status(submitted.job_id)
    result = await chat.result(submitted.job_id)
    assert final.stage == "done" and final.attempt == result.attempts and final.tokens == result.completion_tokens


async def test_cancel_stops_the_job_and_frees_the_engine(chat: ChatClient, settings: Settings) -> None:
    long = job(
        sampling={"max_tokens": 1500, "seed": 1, "temperature": 1.0},
        messages=[{"role": "user", "content": "Tell me the whole history of Saltmere, every century of it."}],
    )
    await chat.submit(long)
    started = time.monotonic()
    events = []
    async for event in chat.stream(long.job_id):
        events.append(event)
        if sum(e.type == "delta" for e in events) == 5:
            rate = 5 / (time.monotonic() - started)  # tokens/s at the engine, as this job saw them
            await chat.cancel(long.job_id)
    assert events[-1].type == "cancelled"
    with pytest.raises(WorkflowFailureError) as failure:
        await chat.result(long.job_id)
    assert isinstance(failure.value.cause, CancelledError)
    description = await chat.handle(long.job_id).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED

    # The engine is free: a short request now returns long before the cancelled reply could have finished.
    before = time.monotonic()
    probe = await InferenceClient(settings.inference_base_url, settings.model_name).complete(
        [Message(role="user", content="Say hi.")], ResolvedSampling(temperature=0.7, top_p=0.9, max_tokens=5, seed=1)
    )
    waited = time.monotonic() - before
    assert probe.completion_tokens >= 1
    unfinished = 1500 - sum(e.type == "delta" for e in events)
    assert waited < 0.5 * unfinished / rate


async def test_ops_find_jobs_by_type_and_character_without_chat_text(chat: ChatClient, client: Client) -> None:
    marker = uuid.uuid4().hex[:6]
    enhance = job(
        job_id=f"ops-enhance-{marker}",
        job_type=JobType.enhance,
        character=None,
        messages=[{"role": "user", "content": "a lighthouse at dusk"}],
        sampling={"max_tokens": 40},
    )
    roleplay = job(job_id=f"ops-roleplay-{marker}", sampling={"max_tokens": 40})
    for submitted in (enhance, roleplay):
        await (await chat.submit(submitted)).result()

    async def rows(**filters: object) -> set[str]:
        for _ in range(50):  # visibility is eventually consistent
            found = {r.workflow_id for r in await recent_jobs(client, since=timedelta(minutes=10), **filters)}
            if f"chat-ops-enhance-{marker}" in found or f"chat-ops-roleplay-{marker}" in found:
                return found
            await asyncio.sleep(0.2)
        return set()

    by_type = await rows(job_type="chat_enhance")
    assert f"chat-ops-enhance-{marker}" in by_type and f"chat-ops-roleplay-{marker}" not in by_type
    by_character = await rows(character="Mira")
    assert f"chat-ops-roleplay-{marker}" in by_character and f"chat-ops-enhance-{marker}" not in by_character

    description = await chat.handle(roleplay.job_id).describe()
    attributes = description.typed_search_attributes
    assert attributes.get(JOB_TYPE) == "chat_roleplay" and attributes.get(CHARACTER_NAME) == "Mira"
    assert attributes.get(OUTCOME) in ("ok", "flagged") and attributes.get(ATTEMPTS) >= 1
    values = " ".join(str(pair.value) for pair in attributes)
    assert "Evening" not in values and "rooms" not in values  # no chat text in search attributes
    assert await description.static_summary() == "roleplay · Mira · 1 turn"
