"""Faults the real engine cannot be made to produce, injected by tests/fake_engine.py (a FAKE server)."""

import pytest

from orchestrator.inference import InferenceClient
from tests.fake_engine import FakeEngine, Scripted, delta, reply_stream
from workflows.models import EngineError, ErrorType, Message, ResolvedSampling

MESSAGES = [Message(role="user", content="hi")]
SAMPLING = ResolvedSampling(temperature=0.7, top_p=0.9, max_tokens=20, seed=1)


async def failure(script: list[Scripted]) -> EngineError:
    async with FakeEngine(script) as engine:
        with pytest.raises(EngineError) as error:
            await InferenceClient(engine.base_url, "fake").complete(MESSAGES, SAMPLING)
    return error.value


async def test_429_over_max_concurrent_requests_is_overloaded_and_retryable() -> None:
    error = await failure([Scripted(status=429, body={"error": "Model is overloaded", "error_type": "overloaded"})])
    assert error.type is ErrorType.engine_overloaded and error.retryable


async def test_401_is_an_auth_error_that_names_the_setting() -> None:
    error = await failure([Scripted(status=401, body={"error": "Authorization header is incorrect"})])
    assert error.type is ErrorType.engine_auth and not error.retryable
    assert "CHAT_WORKER_API_KEY" in error.message


async def test_error_inside_a_200_stream_is_read_from_the_body() -> None:
    overloaded = {"error": "Model is overloaded", "error_type": "overloaded"}
    error = await failure([Scripted(events=[delta("Once"), delta(" upon"), overloaded])])
    assert error.type is ErrorType.engine_overloaded


async def test_generation_error_mid_stream_is_retryable() -> None:
    error = await failure([Scripted(events=[delta("Once"), {"error": "CUDA OOM", "error_type": "generation"}])])
    assert error.type is ErrorType.generation_failed and error.retryable


async def test_too_long_inside_the_stream_is_input_too_long() -> None:
    too_long = {"error": "`inputs` tokens + `max_new_tokens` must be <= 8192. Given: 9000", "error_type": "validation"}
    error = await failure([Scripted(events=[too_long])])
    assert error.type is ErrorType.input_too_long and not error.retryable


async def test_the_client_never_retries_by_itself() -> None:
    async with FakeEngine([Scripted(status=503, body={"error": "loading"}), reply_stream("late reply")]) as engine:
        with pytest.raises(EngineError):
            await InferenceClient(engine.base_url, "fake").complete(MESSAGES, SAMPLING)
        assert len(engine.requests) == 1


async def test_sampling_goes_out_without_nulls() -> None:
    async with FakeEngine([reply_stream("Hello there friend.")]) as engine:
        result = await InferenceClient(engine.base_url, "fake").complete(MESSAGES, SAMPLING)
        sent = engine.requests[0]
    assert result.content == "Hello there friend." and result.finish_reason == "stop"
    assert None not in sent.values()
    assert sent["stream"] is True and sent["seed"] == 1 and sent["top_p"] == 0.9 and sent["model"] == "fake"
