"""The error taxonomy as a pure mapping: HTTP status and body, as TGI and llama.cpp send them."""

import pytest

from orchestrator.engines import ENGINES, EngineKind
from orchestrator.inference import classify, engine_error, request_parameters
from workflows.models import ErrorType, ResolvedSampling

TGI_TOO_LONG = (
    "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8192. Given: 8000 `inputs` tokens "
    "and 500 `max_new_tokens`"
)
LLAMA_TOO_LONG = {
    "error": {
        "message": "This model's maximum context length is 2048 tokens. However, you requested 3051 tokens",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"error": "Model is overloaded", "error_type": "overloaded"}, ErrorType.engine_overloaded),
        (None, {"error": "Model is overloaded", "error_type": "overloaded"}, ErrorType.engine_overloaded),
        (422, {"error": TGI_TOO_LONG, "error_type": "validation"}, ErrorType.input_too_long),
        (None, {"error": TGI_TOO_LONG, "error_type": "validation"}, ErrorType.input_too_long),
        (
            422,
            {"error": "`inputs` must have less than 6144 tokens. Given: 7000", "error_type": "validation"},
            ErrorType.input_too_long,
        ),
        (400, LLAMA_TOO_LONG, ErrorType.input_too_long),
        (422, {"error": "`top_p` must be > 0.0 and < 1.0", "error_type": "validation"}, ErrorType.invalid_request),
        (None, {"error": "`top_p` must be > 0.0 and < 1.0", "error_type": "validation"}, ErrorType.invalid_request),
        (400, {"error": {"message": "bad template", "type": "invalid_request_error"}}, ErrorType.invalid_request),
        (500, "1 validation error: {'loc': ('body', 'frequency_penalty')}", ErrorType.invalid_request),
        (424, {"error": "Request failed during generation", "error_type": "generation"}, ErrorType.generation_failed),
        (None, {"error": "CUDA out of memory", "error_type": "generation"}, ErrorType.generation_failed),
        (None, {"error": "stream ended", "error_type": "incomplete_generation"}, ErrorType.generation_failed),
        (None, {"error": "something odd"}, ErrorType.generation_failed),
        (500, {"error": "internal"}, ErrorType.generation_failed),
        (502, "Bad Gateway", ErrorType.engine_unavailable),
        (503, {"error": "Model is loading"}, ErrorType.engine_unavailable),
        (504, "", ErrorType.engine_unavailable),
        (401, {"error": "Unauthorized"}, ErrorType.engine_auth),
        (403, "", ErrorType.engine_auth),
        (404, {"detail": "Not Found"}, ErrorType.engine_misconfigured),
    ],
)
def test_classification(status: int | None, body: object, expected: ErrorType) -> None:
    assert engine_error(status, body).type is expected


def test_only_transient_failures_are_retryable() -> None:
    assert engine_error(429, "").retryable
    assert engine_error(503, "").retryable
    assert engine_error(None, {"error": "x", "error_type": "generation"}).retryable
    for status in (400, 401, 404):
        assert not engine_error(status, "").retryable
    assert not engine_error(400, LLAMA_TOO_LONG).retryable


def test_messages_say_what_to_fix() -> None:
    assert "CHAT_WORKER_API_KEY" in engine_error(401, "").message
    assert "CHAT_WORKER_INFERENCE_BASE_URL" in engine_error(404, "").message
    assert "HTTP 422" in engine_error(422, {"error": "bad", "error_type": "validation"}).message
    assert "inside the stream" in engine_error(None, {"error": "x", "error_type": "overloaded"}).message


def test_status_alone_decides_when_the_body_says_nothing() -> None:
    assert classify(429, "") is ErrorType.engine_overloaded
    assert classify(418, "") is ErrorType.invalid_request


def test_request_never_carries_nulls_or_top_p_one_to_tgi() -> None:
    tgi = ENGINES[EngineKind.tgi]
    params = request_parameters(ResolvedSampling(temperature=0.7, top_p=1.0, max_tokens=50, seed=3), tgi)
    assert params == {"max_tokens": 50, "temperature": 0.7, "seed": 3}
    params = request_parameters(
        ResolvedSampling(temperature=0.7, top_p=0.9, max_tokens=50, seed=3, frequency_penalty=0.3), tgi
    )
    assert params["top_p"] == 0.9 and params["frequency_penalty"] == 0.3
    assert None not in params.values()
