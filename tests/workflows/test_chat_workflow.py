"""ChatWorkflow through a real worker, on the real Temporal dev server, against the real model."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml
from loguru import logger
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from characters import Character
from orchestrator.client import ChatClient, InvalidJob, JobConflict
from orchestrator.settings import Settings
from tests.fake_engine import FakeEngine, Scripted, reply_stream
from tests.helpers import (
    USER_TEXT,
    change_versions,
    job,
    local_activity_markers,
    patch_ids,
    start_and_wait_with_the_temporal_cli,
    upserted_keys,
    worker_against,
)
from workflows.chat import RELEASE_2026_12
from workflows.models import ChatResult, JobType
from workflows.sampling import reminders_after
from workflows.search_attributes import CHARACTER_NAME, JOB_TYPE


async def generate_events(client: Client, workflow_id: str) -> tuple[list, list]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    return scheduled, started


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO", serialize=True)
    yield lines
    logger.remove(sink)


async def test_roleplay_job_runs_end_to_end_on_the_real_model(
    chat: ChatClient, client: Client, log_lines: list[str]
) -> None:
    submitted = job()
    handle = await chat.submit(submitted)
    result = await handle.result()

    assert isinstance(result, ChatResult)
    assert result.job_id == submitted.job_id
    assert len(result.content) >= 10
    assert result.finish_reason in ("stop", "length")
    assert 1 <= result.attempts <= 3
    # Every rejected attempt says why (`reasons` itself lists each code once, however many attempts had it).
    assert len(result.attempt_details) == result.attempts
    assert all(a.reasons for a in result.attempt_details if not a.valid)
    assert set(result.reasons) == {r for a in result.attempt_details for r in a.reasons}
    assert 0 < result.completion_tokens <= 48 * result.attempts
    assert result.timings.engine_ms > 0 and result.timings.total_ms >= result.timings.engine_ms

    scheduled, _ = await generate_events(client, handle.id)
    assert [s.activity_type.name for s in scheduled] == ["generate"] * result.attempts
    assert {s.task_queue.name for s in scheduled} == {"chat-generate"}

    # One structured metrics record per job, with numbers and codes only.
    records = [json.loads(line)["record"] for line in log_lines]
    metrics = [r["extra"]["metrics"] for r in records if "metrics" in r["extra"]]
    assert len(metrics) == 1 and metrics[0]["job_id"] == submitted.job_id
    assert set(metrics[0]) >= {
        "job_type",
        "conversation_length",
        "response_length",
        "temperature",
        "max_tokens",
        "attempts",
        "reasons",
        "finish_reason",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "tokens_per_second",
        "timings",
        "warnings",
    }
    assert set(metrics[0]["timings"]) >= {"queue_ms", "first_token_ms", "total_ms", "engine_ms"}
    assert metrics[0]["response_length"] == len(result.content) and metrics[0]["max_tokens"] == 48

    # Privacy: neither the user's text nor the reply reaches the logs.
    logged = "\n".join(log_lines)
    assert f"job={submitted.job_id}" in logged
    for text in (USER_TEXT, result.content):  # as it would appear inside a JSON log line
        assert json.dumps(text)[1:-1] not in logged


async def test_same_job_id_runs_once(chat: ChatClient, client: Client) -> None:
    submitted = job(sampling={"max_tokens": 16, "seed": 3})
    first = await chat.submit(submitted)
    again = await chat.submit(submitted)
    assert again.id == first.id
    await first.result()
    after = await chat.submit(submitted)  # after completion, too
    assert (await after.result()).content == (await first.result()).content
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{first.id}'")]
    assert len(runs) == 1


async def test_the_same_job_id_with_other_content_is_refused_naming_it(chat: ChatClient, client: Client) -> None:
    submitted = job(sampling={"max_tokens": 16, "seed": 4})
    first = await chat.submit(submitted)
    other = job(job_id=submitted.job_id, messages=[{"role": "user", "content": "Something else entirely."}])
    with pytest.raises(JobConflict, match=f"job {submitted.job_id} already exists with different content"):
        await chat.submit(other)  # while it runs
    await first.result()
    with pytest.raises(JobConflict, match=submitted.job_id):
        await chat.submit(other)  # and after it finished
    assert len([w async for w in client.list_workflows(f"WorkflowId = '{first.id}'")]) == 1


async def test_inline_character_and_conversation_job(chat: ChatClient) -> None:
    inline = Character(name="Orrin", description="A grumpy lighthouse keeper.", personality="Terse, kind underneath.")
    result = await (await chat.submit(job(character=inline, sampling={"max_tokens": 32, "seed": 5}))).result()
    assert result.content
    conversation = job(job_type=JobType.conversation, character=None, sampling={"max_tokens": 32, "seed": 5})
    assert (await (await chat.submit(conversation)).result()).content


async def test_unknown_character_is_refused_before_anything_starts(chat: ChatClient, client: Client) -> None:
    submitted = job(character="Nobody")
    with pytest.raises(InvalidJob, match="job.character: unknown character 'Nobody'.*Mira"):
        await chat.submit(submitted)
    assert [w async for w in client.list_workflows(f"WorkflowId = 'chat-{submitted.job_id}'")] == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"job_id": "bad-1", "messages": []}, "job.messages"),
        ({"job_id": "bad-2", "messages": [{"role": "narrator", "content": "x"}]}, "job.messages.0.role"),
        (
            {"job_id": "bad-3", "messages": [{"role": "user", "content": "x"}], "sampling": {"temperature": 3}},
            "job.sampling.temperature",
        ),
        ({"job_id": "bad-4", "messages": [{"role": "user", "content": "x"}], "character": "Nobody"}, "job.character"),
        ({"job_id": "bad-5", "messages": [{"role": "assistant", "content": "x"}]}, "job.messages"),
        ({"job_id": "bad-6", "mode": "continue", "messages": [{"role": "user", "content": "x"}]}, "job.messages"),
        (
            {"job_id": "bad-7", "messages": [{"role": "user", "content": "x"}], "sampling": {"max_tokens": 5000}},
            "job.sampling.max_tokens: must be 1-2048",
        ),
        (
            {"job_id": "bad-8", "messages": [{"role": "user", "content": "x"}], "deadline_seconds": 3000},
            "job.deadline_seconds: must be at most 600",
        ),
        ({"job_id": "bad-9", "messages": [{"role": "user", "content": "x"}], "mode": "rewrite"}, "job.mode"),
        ("not a job at all", "job"),
    ],
)
async def test_bad_raw_input_fails_the_workflow_at_once_naming_the_field(
    chat: ChatClient, client: Client, settings: Settings, raw: object, field: str
) -> None:
    # A backend in another language sends plain JSON: no client-side validation protects the workflow.
    handle = await client.start_workflow(
        "ChatWorkflow", raw, id=f"raw-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=30)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidJob" and cause.non_retryable
    assert field in cause.message
    scheduled, _ = await generate_events(client, handle.id)
    assert scheduled == []


async def test_non_retryable_engine_error_fails_the_job_after_one_try(
    settings: Settings, isolated_namespace: str
) -> None:
    async with worker_against(settings, isolated_namespace, f"{settings.inference_base_url}/nope") as chat:
        handle = await chat.submit(job())
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause, ApplicationError)
        assert failure.value.cause.type == "EngineMisconfigured"
        _, started = await generate_events(chat.temporal, handle.id)
        assert [s.attempt for s in started] == [1]


async def test_engine_429_is_retried_by_temporal_within_one_attempt(
    settings: Settings, isolated_namespace: str
) -> None:
    # FAKE engine: the real llama.cpp server never answers 429.
    overloaded = Scripted(status=429, body={"error": "Model is overloaded", "error_type": "overloaded"})
    reply = "The rain hammers the shutters while I pour you a drink. Sit down and warm up."
    async with FakeEngine([overloaded, reply_stream(reply)]) as engine:
        async with worker_against(settings, isolated_namespace, engine.base_url) as chat:
            handle = await chat.submit(job())
            result = await handle.result()
            _, started = await generate_events(chat.temporal, handle.id)
    assert result.content == reply and result.attempts == 1
    assert len(engine.requests) == 2
    assert [s.attempt for s in started] == [2]  # history keeps the last try's start; it says "attempt 2"


async def test_a_renamed_task_queue_keeps_generation_beside_it(settings: Settings, isolated_namespace: str) -> None:
    async with worker_against(settings, isolated_namespace, settings.inference_base_url, task_queue="rp") as chat:
        handle = await chat.submit(job(sampling={"max_tokens": 16, "seed": 2}))
        await handle.result()
        scheduled, _ = await generate_events(chat.temporal, handle.id)
    assert {s.task_queue.name for s in scheduled} == {"rp-generate"}


async def test_plain_json_start_and_result_with_the_temporal_cli(
    chat: ChatClient, client: Client, settings: Settings, schemas: dict
) -> None:
    # What a backend in another language does: raw JSON in, raw JSON out, no Python models involved.
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    raw_job = json.dumps(
        {
            "job_id": workflow_id,
            "messages": [{"role": "user", "content": "Hi Mira!"}],
            "character": "Mira",
            "sampling": {"max_tokens": 24, "seed": 1},
        }
    )
    outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, raw_job)
    assert outcome["status"] == "COMPLETED"
    assert outcome["result"]["job_id"] == workflow_id and len(outcome["result"]["content"]) >= 10
    # The result payload's own bytes (the CLI's rendering turns empty lists into null) against the schema.
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    completed = history.events[-1].workflow_execution_completed_event_attributes
    payload = json.loads(completed.result.payloads[0].data)
    jsonschema.validate(payload, schemas["ChatResult"])
    jsonschema.validate(json.loads(raw_job), schemas["ChatJob"])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"job_id": "x"}, "job.messages"),
        (
            {"job_id": "x", "messages": [{"role": "user", "content": "hi"}], "sampling": {"temperature": 5}},
            "job.sampling.temperature",
        ),
    ],
)
async def test_an_invalid_plain_json_job_fails_at_once_naming_the_field(
    chat: ChatClient, settings: Settings, raw: dict, field: str
) -> None:
    workflow_id = f"cli-bad-{uuid.uuid4().hex[:8]}"
    outcome = await asyncio.wait_for(
        start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw)), timeout=30
    )
    assert outcome["status"] == "FAILED"
    assert field in json.dumps(outcome) and "InvalidJob" in json.dumps(outcome)


SUMMARIZED_CONVERSATION = [
    {"role": "user", "content": USER_TEXT},
    {"role": "assistant", "content": 'Mira looks up from the ledger. "One room left, under the eaves. Two silver."'},
    {"role": "user", "content": "*sets two coins on the counter* I'll take it. Has anyone asked after me?"},
    {"role": "assistant", "content": '"A tall man in a grey cloak, this morning," Mira says, sliding the key across.'},
    {"role": "user", "content": "*frowns* Did he leave a name?"},
]


@pytest.mark.parametrize("job_type", list(JobType))
async def test_each_job_type_runs_with_its_defaults(chat: ChatClient, client: Client, job_type: JobType) -> None:
    messages = {
        JobType.enhance: [{"role": "user", "content": "a lighthouse keeper at dusk"}],
        JobType.conversation: [{"role": "user", "content": "Suggest a name for a tavern by the sea."}],
        JobType.summarize: SUMMARIZED_CONVERSATION,  # a summary is of a conversation, not of one line
        JobType.character: SUMMARIZED_CONVERSATION[:4],  # a card too; any role may come last
    }.get(job_type, [{"role": "user", "content": USER_TEXT}])
    submitted = job(
        job_type=job_type,
        character="Mira" if job_type in (JobType.roleplay, JobType.scene) else None,
        messages=messages,
        sampling={"seed": 21},
        scene={"mode": "character"} if job_type is JobType.scene else None,
    )
    handle = await chat.submit(submitted)
    result = await handle.result()
    assert result.content and result.attempts >= 1
    assert len(result.attempt_details) == result.attempts
    default_max_tokens = {JobType.roleplay: 300, JobType.enhance: 256, JobType.scene: 160, JobType.character: 700}.get(
        job_type, 500
    )
    assert all(a.completion_tokens <= default_max_tokens for a in result.attempt_details)
    history = await client.get_workflow_handle(handle.id).fetch_history()
    # prepare and one check per attempt: each a local activity marker in the history (the metrics record is the
    # workflow's own; the other markers are workflow.patched's); prepare once more after each rejected reply that
    # called for a new reminder after the history; a summary job's prompt is prepare_summary's, a scene job's
    # prepare_scene's, a card job's prepare_card's.
    roleplay = job_type is JobType.roleplay
    called_for: set[str] = set()
    prepared_again = 0
    for rejected in result.attempt_details[:-1]:
        wanted = set(reminders_after(rejected.reasons, roleplay))
        prepared_again += bool(wanted - called_for)
        called_for |= wanted
    own_prompt = int(job_type in (JobType.summarize, JobType.scene, JobType.character))
    assert local_activity_markers(history) == 1 + result.attempts + prepared_again + own_prompt
    # One patch for every change released in it: one marker and one TemporalChangeVersion upsert per job.
    assert patch_ids(history) == [RELEASE_2026_12]
    assert change_versions(history) == [[RELEASE_2026_12]]
    # JobType and CharacterName came with ChatClient's start: the job's only upserts are the patch's and its end's.
    assert upserted_keys(history) == [["TemporalChangeVersion"], ["Attempts", "Outcome"]]
    attributes = (await client.get_workflow_handle(handle.id).describe()).typed_search_attributes
    assert attributes.get(JOB_TYPE) == job_type.value
    assert attributes.get(CHARACTER_NAME) == ("Mira" if job_type in (JobType.roleplay, JobType.scene) else None)


async def test_a_rejected_reply_is_regenerated_and_the_result_says_why(
    settings: Settings, isolated_namespace: str
) -> None:
    # FAKE engine: the real model cannot be made to write a bad reply on demand (even the same seed gives a
    # different reply once llama.cpp reuses its prompt cache), so a scripted out-of-character reply comes first.
    bad = "As an AI language model, I cannot pretend to be a tavern keeper, but I can describe one."
    good = "The rain hammers the shutters while I pour you a drink. Sit down and warm up, love."
    async with FakeEngine([reply_stream(bad), reply_stream(good)]) as engine:
        async with worker_against(settings, isolated_namespace, engine.base_url) as wired:
            handle = await wired.submit(job(sampling={"temperature": 0.8, "seed": 5}))
            result = await handle.result()
            scheduled, _ = await generate_events(wired.temporal, handle.id)
    assert result.content == good and result.outcome == "ok"
    assert result.attempts == 2 and result.reasons == ["out_of_character"]
    assert [(a.attempt, a.valid, a.reasons) for a in result.attempt_details] == [
        (1, False, ["out_of_character"]),
        (2, True, []),
    ]
    # The second try went out with a new seed, a little more temperature (no penalty: it did not repeat itself),
    # and the character reminded last, after the history.
    first, second = engine.requests
    assert second["seed"] != first["seed"] == 5
    assert second["temperature"] > first["temperature"] and "frequency_penalty" not in second
    assert second["messages"][:-1] == first["messages"]
    assert second["messages"][-1]["role"] == "system"
    assert second["messages"][-1]["content"].startswith("[Stay in character as Mira, in the scene with Tam")
    assert len(scheduled) == 2


async def test_every_attempt_rejected_by_policy_on_the_real_model_returns_nothing(
    settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    # Forbids any text but the user's own "?", so every reply breaks it.
    policy.write_text(yaml.safe_dump({"patterns": [{"pattern": r"^(?!\?$)[\s\S]", "why": "forbid every reply"}]}))
    async with worker_against(settings, isolated_namespace, settings.inference_base_url, policy_file=policy) as wired:
        handle = await wired.submit(job(messages=[{"role": "user", "content": "?"}], sampling={"max_tokens": 12}))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        scheduled, _ = await generate_events(wired.temporal, handle.id)
    assert failure.value.cause.type == "NoValidReply"  # type: ignore[union-attr]
    assert "policy" in str(failure.value.cause)
    assert len(scheduled) == 3  # regenerated up to the cap; a reply the policy forbids is never returned


async def test_the_deadline_ends_the_job_failed(chat: ChatClient) -> None:
    slow = job(
        sampling={"max_tokens": 1500, "seed": 1},
        deadline_seconds=0.3,
        messages=[{"role": "user", "content": "Tell me the whole history of Saltmere, slowly."}],
    )
    handle = await chat.submit(slow)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=60)
    assert isinstance(failure.value.cause, ApplicationError) and failure.value.cause.type == "Deadline"


async def test_a_forbidden_user_message_is_rejected_before_generation(
    settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("patterns:\n  - pattern: 'forbidden\\s+topic'\n")
    async with worker_against(settings, isolated_namespace, settings.inference_base_url, policy_file=policy) as wired:
        handle = await wired.submit(job(messages=[{"role": "user", "content": "Let's discuss the Forbidden Topic."}]))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        scheduled, _ = await generate_events(wired.temporal, handle.id)
    assert failure.value.cause.type == "InvalidJob"  # type: ignore[union-attr]
    assert "job.messages.0.content" in str(failure.value.cause)
    assert scheduled == []


async def test_a_context_that_cannot_fit_fails_clearly(chat: ChatClient) -> None:
    huge = job(messages=[{"role": "user", "content": "word " * 4000}])
    with pytest.raises(WorkflowFailureError) as failure:
        await (await chat.submit(huge)).result()
    assert failure.value.cause.type == "ContextTooLarge"  # type: ignore[union-attr]
    assert "context_too_large" in str(failure.value.cause)


async def test_input_too_long_at_the_engine_shrinks_the_context_and_tries_once_more(
    settings: Settings, isolated_namespace: str
) -> None:
    # FAKE engine: llama.cpp answers a streamed over-long input with an empty 200, never TGI's 422.
    too_long = Scripted(
        status=422, body={"error": "`inputs` tokens + `max_new_tokens` must be <= 2048", "error_type": "validation"}
    )
    reply = "The rain hammers the shutters while I pour you a drink. Sit down and warm up."
    history = [
        {"role": r, "content": f"{r} line {i} " + "salt and rope " * 10}
        for i in range(20)
        for r in ("user", "assistant")
    ] + [{"role": "user", "content": "And now?"}]
    async with FakeEngine([too_long, reply_stream(reply)]) as engine:
        async with worker_against(settings, isolated_namespace, engine.base_url) as wired:
            result = await (await wired.submit(job(messages=history))).result()
    assert result.content == reply
    first, second = (len(r["messages"]) for r in engine.requests)
    assert second < first  # the second try was built with a smaller budget
