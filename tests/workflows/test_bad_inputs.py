"""Malformed jobs, generated (hypothesis, derandomized): through ChatClient.submit each is refused naming the
field before anything starts; started as raw JSON by a client without the job's types (as other programs
start it), each ends the workflow FAILED with `InvalidJob` naming the field or the position, and the worker
keeps running jobs. No error message and no log line quotes the malformed text."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from characters import describe_validation_error
from characters.base import MAX_LISTED_PROBLEMS
from orchestrator.client import ChatClient, InvalidJob
from orchestrator.settings import Settings
from tests.helpers import job
from workflows.models import AUTHOR_NOTE_CHARS, MAX_LOREBOOK_ENTRIES, MAX_MESSAGE_BYTES, ChatJob

# Every generated text carries it: a message or log line that quotes the malformed input is found by it.
MARK = "quokka-malformed"
CLIENT_CASES = 260
RAW_JOB_CASES = 50
RAW_SURROGATE_CASES = 12
RAW_BYTES_CASES = 30

Case = tuple[Any, str]  # the job as sent, what the error must name


def examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples of `strategy`, the same on every run."""
    found: list[Any] = []

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        found.append(example)

    collect()
    return found


def valid_job() -> dict[str, Any]:
    return {
        "job_id": f"bad-{uuid.uuid4().hex[:10]}",
        "messages": [{"role": "user", "content": f"{MARK} hello"}],
        "character": "Mira",
        "sampling": {"max_tokens": 16},
    }


def marked() -> st.SearchStrategy[str]:
    return st.text(max_size=12).map(lambda text: f"{MARK}{text}")


def not_in(*allowed: str) -> st.SearchStrategy[str]:
    return marked().filter(lambda text: text not in allowed)


def lone_surrogate() -> st.SearchStrategy[str]:
    return st.integers(0xD800, 0xDFFF).map(lambda code: f"{MARK}{chr(code)}")


def set_at(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(raw: dict[str, Any]) -> dict[str, Any]:
        node: Any = raw
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return raw

    return change


def mutation(path: tuple[str | int, ...], values: st.SearchStrategy[Any], field: str) -> st.SearchStrategy[Case]:
    return values.map(lambda value: (set_at(path, value)(valid_job()), field))


def book(entries: int, **entry: Any) -> dict[str, Any]:
    return {"name": "Orrin", "character_book": {"entries": [{"keys": ["k"], "content": MARK, **entry}] * entries}}


def malformed_jobs() -> st.SearchStrategy[Case]:
    """A valid job with one thing wrong in it: a wrong type, a value out of range, a limit passed, an unknown
    field."""
    wrong_types = st.one_of(st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
    return st.one_of(
        mutation(("job_id",), st.one_of(wrong_types, marked().map(lambda t: f"has space {t}")), "job.job_id"),
        mutation(("job_type",), not_in("chat_conversation", "chat_roleplay", "chat_enhance"), "job.job_type"),
        mutation(("mode",), not_in("reply", "continue", "impersonate"), "job.mode"),
        mutation(("author_note",), st.integers(max_value=-1).map(lambda d: {"text": MARK, "depth": d}), "depth"),
        mutation(("author_note",), st.integers(max_value=0).map(lambda n: {"text": MARK, "every": n}), "every"),
        mutation(
            ("author_note",),
            st.just({"text": ""})
            | st.integers(AUTHOR_NOTE_CHARS, 3 * AUTHOR_NOTE_CHARS).map(lambda n: {"text": MARK * n}),
            "job.author_note.text",
        ),
        mutation(("messages",), st.one_of(st.just([]), marked(), wrong_types), "job.messages"),
        mutation(("messages", 0, "role"), not_in("system", "user", "assistant"), "job.messages.0.role"),
        mutation(("messages", 0, "role"), st.just("assistant"), "job.messages"),  # the reply mode's last turn
        mutation(("messages", 0, "content"), st.one_of(st.just(""), wrong_types), "job.messages.0.content"),
        mutation(
            ("messages", 0, "content"),
            st.integers(MAX_MESSAGE_BYTES + 1, 3 * MAX_MESSAGE_BYTES).map(lambda n: MARK * (n // len(MARK) + 1)),
            "job.messages.0.content: at most 32768 bytes",
        ),
        mutation(("messages", 0, "tone"), marked(), "job.messages.0.tone"),
        mutation(("sampling", "temperature"), st.floats(1.01, 1e6) | st.floats(-1e6, 0.09) | marked(), "temperature"),
        mutation(("sampling", "top_p"), st.floats(1.01, 1e6) | st.floats(-1e6, 0.09), "job.sampling.top_p"),
        mutation(("sampling", "max_tokens"), st.integers(max_value=0) | st.integers(2049, 10**9), "max_tokens"),
        mutation(("sampling", "seed"), st.integers(max_value=-1) | st.integers(min_value=2**31), "job.sampling.seed"),
        mutation(("deadline_seconds",), st.floats(max_value=0) | st.floats(600.5, 1e9), "job.deadline_seconds"),
        mutation(("user_name",), st.just("") | st.integers(101, 300).map(lambda n: MARK * n), "job.user_name"),
        mutation(
            ("user_id",),
            st.one_of(marked().map(lambda t: f"has space {t}"), st.integers(65, 300).map(lambda n: "u" * n)),
            "job.user_id",
        ),
        mutation(
            ("priority",), st.one_of(st.integers(max_value=0), st.integers(min_value=6), marked()), "job.priority"
        ),
        # A character's name is no chat text: the error quotes it, as it does a bundled one's.
        mutation(("character",), st.integers(0, 10**6).map(lambda n: f"Nobody {n}"), "job.character: unknown"),
        mutation(("character",), st.integers() | st.lists(st.integers(), max_size=2), "job.character"),
        mutation(
            ("character",),
            st.integers(MAX_LOREBOOK_ENTRIES + 1, 3 * MAX_LOREBOOK_ENTRIES).map(book),
            "job.character.character_book.entries: at most 1000 entries",
        ),
        mutation(("colour",), marked(), "job.colour"),
    )


def lone_surrogate_jobs() -> st.SearchStrategy[Case]:
    """A valid job with a lone surrogate in a text: Python's JSON decoder lets it through, UTF-8 has no bytes
    for it, pydantic's JSON parser refuses it."""
    return st.one_of(
        mutation(("messages", 0, "content"), lone_surrogate(), "job.messages.0.content"),
        mutation(("scenario",), lone_surrogate(), "job.scenario"),
        mutation(
            ("character",),
            lone_surrogate().map(lambda text: {"name": "Orrin", "extensions": {text: 1}}),
            "job.character.extensions",
        ),
        mutation(
            ("character",), lone_surrogate().map(lambda text: book(2, extensions={"k": [text]})), "entries.0.extensions"
        ),
    )


def undecodable_payloads() -> st.SearchStrategy[Case]:
    """Bytes sent as JSON that do not decode as a job at all: not UTF-8, cut short, nested too deep, not an
    object."""
    sent = json.dumps(valid_job()).encode()
    cut = st.integers(1, len(sent) - 1).map(lambda at: (sent[:at], "not JSON"))
    not_utf8 = st.integers(0, len(sent)).map(lambda at: (sent[:at] + b"\xff\xfe" + sent[at:], "not JSON"))
    nested = st.integers(1000, 5000).map(lambda depth: (b"[" * depth + b"]" * depth, "not JSON"))
    nested_in = st.integers(1000, 5000).map(
        lambda depth: (sent[:-1] + b', "messages": ' + b"[" * depth + b"]" * depth + b"}", "not JSON")
    )
    not_an_object = st.sampled_from([b"[]", b"3", b'"quokka-malformed"', b"null", b"true", b"[1, 2]"]).map(
        lambda data: (data, "job: Input should be")
    )
    return st.one_of(cut, not_utf8, nested, nested_in, not_an_object)


async def refused_by_the_client(chat: ChatClient, raw: dict[str, Any]) -> tuple[str, ChatJob | None]:
    """The error's message, and the job when it got as far as submit."""
    try:
        submitted = ChatJob.model_validate(raw)
    except ValidationError as error:
        return describe_validation_error(error, "job"), None
    try:
        await chat.submit(submitted)
    except InvalidJob as error:
        return str(error), submitted
    raise AssertionError(f"submitted: {describe(raw)}")


def describe(raw: object) -> str:
    return json.dumps(raw, default=str)[:200]


async def never_started(client: Client, job_id: str) -> bool:
    try:
        await client.get_workflow_handle(f"chat-{job_id}").describe()
    except RPCError:
        return True
    return False


async def test_the_client_refuses_each_malformed_job_naming_the_field(
    chat: ChatClient, client: Client, all_logs: list[str]
) -> None:
    cases = examples(malformed_jobs() | lone_surrogate_jobs(), CLIENT_CASES)
    assert len(cases) >= 250
    for raw, field in cases:
        message, submitted = await refused_by_the_client(chat, raw)
        assert field in message, (describe(raw), message)
        assert MARK not in message
        if submitted is not None:
            assert await never_started(client, submitted.job_id)
    assert not [line for line in all_logs if MARK in line]


async def test_a_3_mb_message_is_refused_by_the_client_naming_the_field_and_its_size(
    chat: ChatClient, client: Client
) -> None:
    huge = job(messages=[{"role": "user", "content": MARK * (3 * 1024 * 1024 // len(MARK))}])
    with pytest.raises(InvalidJob) as refused:
        await chat.submit(huge)
    message = str(refused.value)
    assert f"job.messages.0.content: at most {MAX_MESSAGE_BYTES} bytes as UTF-8 (got 314" in message
    assert "job: at most 1572864 bytes as JSON (got 314" in message
    assert MARK not in message
    assert await never_started(client, huge.job_id)


def raw_payload(data: bytes) -> RawValue:
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


async def failure_of(
    client: Client, settings: Settings, data: bytes
) -> tuple[ApplicationError, WorkflowExecutionStatus]:
    handle = await client.start_workflow(
        "ChatWorkflow", raw_payload(data), id=f"raw-{uuid.uuid4().hex[:10]}", task_queue=settings.task_queue
    )
    try:
        await asyncio.wait_for(handle.result(), timeout=60)
    except WorkflowFailureError as error:
        assert isinstance(error.cause, ApplicationError)
        description = await handle.describe()
        assert description.status is not None
        return error.cause, description.status
    raise AssertionError(f"completed: {data[:200]!r}")


async def test_raw_malformed_input_fails_each_workflow_at_once_naming_the_field_and_the_worker_runs_on(
    chat: ChatClient, client: Client, settings: Settings, all_logs: list[str]
) -> None:
    jobs = examples(malformed_jobs(), RAW_JOB_CASES) + examples(lone_surrogate_jobs(), RAW_SURROGATE_CASES)
    cases = [(json.dumps(raw).encode(), field) for raw, field in jobs]
    cases += examples(undecodable_payloads(), RAW_BYTES_CASES)
    assert len(cases) >= 75

    failures = await asyncio.gather(*(failure_of(client, settings, data) for data, _ in cases))

    for (data, field), (cause, status) in zip(cases, failures, strict=True):
        assert status == WorkflowExecutionStatus.FAILED
        assert cause.type == "InvalidJob" and cause.non_retryable, (data[:200], cause.message)
        assert field in cause.message, (data[:200], cause.message)
        assert MARK not in cause.message
    assert not [line for line in all_logs if MARK in line]
    assert (await (await chat.submit(job(sampling={"max_tokens": 8, "seed": 1}))).result()).content


async def test_a_raw_job_with_thousands_of_problems_fails_with_a_short_failure_naming_the_first(
    client: Client, settings: Settings
) -> None:
    raw = valid_job() | {"messages": [{"role": "narrator", "content": MARK}] * 5000}
    cause, status = await failure_of(client, settings, json.dumps(raw).encode())
    assert status == WorkflowExecutionStatus.FAILED and cause.type == "InvalidJob"
    assert cause.message.startswith("invalid job: job.messages.0.role: Input should be")
    assert cause.message.endswith(f"; and {5000 - MAX_LISTED_PROBLEMS} more")
    assert len(cause.message) < 4000 and MARK not in cause.message
