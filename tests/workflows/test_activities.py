"""The activities outside a worker, in temporalio's ActivityEnvironment: what they leave behind when a step
fails. The engine is a stand-in object: these tests never reach generation."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from loguru import logger
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from workflows.activities import (
    GENERATION_FAILED_TRIES,
    HEARTBEAT_EVERY_SECONDS,
    ChatActivities,
    DeltaBatches,
    application_error,
)
from workflows.models import EngineError, ErrorType, GenerateRequest, GenerateResult, Message, ResolvedSampling

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


class FlushFails:
    """A stand-in for the job's stream whose final flush fails, as it did when Temporal was down for a minute
    (RPCError); the real stream cannot be made to fail on demand."""

    def topic(self, name: str) -> FlushFails:
        return self

    def publish(self, event: object, force_flush: bool = False) -> None:
        pass

    async def __aenter__(self) -> FlushFails:
        return self

    async def flush(self) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    async def __aexit__(self, *exc: object) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


class QuietStream(FlushFails):
    async def flush(self) -> None:
        pass

    async def __aexit__(self, *exc: object) -> None:
        pass


class Answers:
    async def complete(
        self, *args: object, on_text: Callable[[str], None] | None = None, **kwargs: object
    ) -> GenerateResult:
        if on_text is not None:
            on_text("Evening.")
        return GenerateResult(
            content="Evening.", finish_reason="stop", prompt_tokens=5, completion_tokens=2, engine_ms=9.0
        )


async def test_a_finished_reply_is_kept_when_the_streams_final_flush_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: FlushFails())
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING")
    request = GenerateRequest(job_id="j2", attempt=1, messages=[Message(role="user", content="hi")], sampling=SAMPLING)
    try:
        result = await ActivityEnvironment().run(ChatActivities(Answers()).generate, request)
    finally:
        logger.remove(sink)
    assert result.content == "Evening." and result.completion_tokens == 2
    assert len(warnings) == 1 and "final flush failed (RPCError)" in warnings[0] and "Evening" not in warnings[0]


def test_the_first_delta_goes_at_once_then_batches_grow_to_the_longest_gap() -> None:
    batches = DeltaBatches(timedelta(seconds=0.25), timedelta(seconds=1))
    ticks = [i / 64 for i in range(5 * 64)]  # a delta every 1/64 s for 5 s (exact in binary)
    assert [t for t in ticks if batches.due(t)] == [0.0, 0.25, 0.75, 1.75, 2.75, 3.75, 4.75]


class RecordedStream(QuietStream):
    def __init__(self) -> None:
        self.flushes: list[bool] = []
        self.texts: list[str] = []

    def publish(self, event: object, force_flush: bool = False) -> None:
        self.flushes.append(force_flush)
        self.texts.append(getattr(event, "text", ""))


class ManyDeltas:
    async def complete(
        self, *args: object, on_text: Callable[[str], None] | None = None, **kwargs: object
    ) -> GenerateResult:
        assert on_text is not None
        for _ in range(50):
            on_text(" word")
        return GenerateResult(
            content=" word" * 50, finish_reason="stop", prompt_tokens=5, completion_tokens=50, engine_ms=9.0
        )


async def test_the_first_delta_is_sent_at_once_and_the_last_batch_is_left_to_the_workflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = RecordedStream()
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: stream)
    request = GenerateRequest(job_id="j4", attempt=1, messages=[Message(role="user", content="hi")], sampling=SAMPLING)
    result = await ActivityEnvironment().run(ChatActivities(ManyDeltas()).generate, request)
    # The other 49 deltas came within the first batch's gap: the result says the workflow is to publish them.
    assert stream.flushes == [True] and stream.texts == [" word"]
    assert result.streamed_chars == len(" word") and result.content[result.streamed_chars :] == " word" * 49


class Stalls:
    """Two deltas at once, then none for longer than the heartbeat's interval, then a last one."""

    def __init__(self, stream: RecordedStream) -> None:
        self.stream = stream
        self.published_before_last: list[str] = []

    async def complete(
        self, *args: object, on_text: Callable[[str], None] | None = None, **kwargs: object
    ) -> GenerateResult:
        assert on_text is not None
        on_text("a")
        on_text("b")
        await asyncio.sleep(HEARTBEAT_EVERY_SECONDS * 1.5)
        self.published_before_last = list(self.stream.texts)
        on_text("c")
        return GenerateResult(content="abc", finish_reason="stop", prompt_tokens=5, completion_tokens=3, engine_ms=9.0)


async def test_a_delta_held_for_its_batch_goes_out_while_the_engine_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = RecordedStream()
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: stream)
    engine = Stalls(stream)
    request = GenerateRequest(job_id="j5", attempt=1, messages=[Message(role="user", content="hi")], sampling=SAMPLING)
    result = await ActivityEnvironment().run(ChatActivities(engine).generate, request)
    assert engine.published_before_last == ["a", "b"]  # "b" by a heartbeat, not behind the next delta
    assert "".join(stream.texts) + result.content[result.streamed_chars :] == "abc"


def test_an_engine_outage_is_retried_on_every_try_but_a_failing_generation_only_so_many_times() -> None:
    down = EngineError(ErrorType.engine_unavailable, "cannot reach the engine")
    failing = EngineError(ErrorType.generation_failed, "HTTP 500: boom")
    assert not application_error(down, 1).non_retryable
    assert not application_error(down, 1000).non_retryable
    assert not application_error(failing, GENERATION_FAILED_TRIES - 1).non_retryable
    assert application_error(failing, GENERATION_FAILED_TRIES).non_retryable
    assert application_error(failing, GENERATION_FAILED_TRIES).type == ErrorType.generation_failed.value


class Fails:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def complete(self, *args: object, **kwargs: object) -> GenerateResult:
        raise self.error


async def generate_on_try(
    engine: object, try_number: int, failed_before: int | None = None, heartbeats: list[object] | None = None
) -> GenerateResult:
    """Temporal's `try_number`th try, after `failed_before` GenerationFailed tries (default: every earlier one),
    as the last heartbeat of the tries before it says."""
    failed = try_number - 1 if failed_before is None else failed_before
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=try_number, heartbeat_details=[0, failed])
    if heartbeats is not None:
        environment.on_heartbeat = lambda *details: heartbeats.append(details)
    request = GenerateRequest(job_id="j3", attempt=1, messages=[Message(role="user", content="hi")], sampling=SAMPLING)
    return await environment.run(ChatActivities(engine).generate, request)  # type: ignore[arg-type]


async def test_an_engine_error_keeps_its_type_when_the_flush_after_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: FlushFails())
    with pytest.raises(ApplicationError) as error:
        await generate_on_try(Fails(EngineError(ErrorType.input_too_long, "too long")), 1)
    assert error.value.type == ErrorType.input_too_long.value and error.value.non_retryable


async def test_an_unexpected_error_is_retried_like_a_failed_generation_then_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: QuietStream())
    with pytest.raises(KeyError):  # retried by Temporal as it is
        await generate_on_try(Fails(KeyError("a bug")), GENERATION_FAILED_TRIES - 1)
    with pytest.raises(ApplicationError) as error:
        await generate_on_try(Fails(KeyError("a bug")), GENERATION_FAILED_TRIES)
    assert error.value.type == ErrorType.generation_failed.value and error.value.non_retryable
    assert error.value.message == "generation failed: KeyError"


async def test_only_generation_failed_tries_count_towards_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many tries that found the engine down, then GenerationFailed ones: the cap counts the latter only.
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: QuietStream())
    failing = Fails(EngineError(ErrorType.generation_failed, "HTTP 500: boom"))
    heartbeats: list[object] = []
    with pytest.raises(ApplicationError) as error:
        await generate_on_try(failing, 20, failed_before=GENERATION_FAILED_TRIES - 2, heartbeats=heartbeats)
    assert error.value.type == ErrorType.generation_failed.value and not error.value.non_retryable
    assert heartbeats[-1] == (0, GENERATION_FAILED_TRIES - 1)  # what the next try counts on
    with pytest.raises(ApplicationError) as error:
        await generate_on_try(failing, 21, failed_before=GENERATION_FAILED_TRIES - 1)
    assert error.value.non_retryable


async def test_a_try_that_finds_the_engine_down_keeps_the_count_and_closes_the_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: QuietStream())
    closed: list[bool] = []
    heartbeats: list[object] = []
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=9, heartbeat_details=[0, 2])
    environment.on_heartbeat = lambda *details: heartbeats.append(details)
    down = Fails(EngineError(ErrorType.engine_unavailable, "cannot reach the engine"))
    request = GenerateRequest(job_id="j4", attempt=1, messages=[Message(role="user", content="hi")], sampling=SAMPLING)
    with pytest.raises(ApplicationError) as error:
        await environment.run(ChatActivities(down, on_engine_unavailable=lambda: closed.append(True)).generate, request)
    assert error.value.type == ErrorType.engine_unavailable.value and not error.value.non_retryable
    assert closed == [True]
    assert heartbeats[-1] == (0, 2)


class CountedAnswers(Answers):
    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, *args: object, **kwargs: object) -> GenerateResult:
        self.calls += 1
        return await super().complete(*args, **kwargs)


async def test_a_retry_of_a_finished_generation_gets_its_reply_back_and_a_regeneration_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Temporal refuses a finished try's completion when the try timed out meanwhile (the server was unreachable
    # longer than the heartbeat timeout) and retries the same activity: the engine is not asked again.
    monkeypatch.setattr(WorkflowStreamClient, "from_within_activity", lambda **kwargs: QuietStream())
    engine = CountedAnswers()
    activities = ChatActivities(engine)
    request = GenerateRequest(job_id="j5", attempt=1, messages=[Message(role="user", content="hi")], sampling=SAMPLING)
    environment = ActivityEnvironment()
    first = await environment.run(activities.generate, request)
    environment.info = dataclasses.replace(environment.info, attempt=2)
    retried = await environment.run(activities.generate, request)
    assert engine.calls == 1 and retried == first
    environment.info = dataclasses.replace(environment.info, activity_id="another", attempt=1)
    await environment.run(activities.generate, request.model_copy(update={"attempt": 2}))
    assert engine.calls == 2
