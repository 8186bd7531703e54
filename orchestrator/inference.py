"""Engine-agnostic streaming chat client (TGI, vLLM, llama.cpp: the OpenAI-compatible chat API) over
huggingface_hub's AsyncInferenceClient, and the one place where engine failures become `EngineError`s.

It never retries: Temporal owns retries, so every attempt shows in the workflow's history."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient, set_async_client_factory
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    GenerationError,
    HfHubHTTPError,
    IncompleteGenerationError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
)
from pydantic import BaseModel

from orchestrator.engines import GENERIC, Engine, tls_context
from workflows.models import EngineError, ErrorType, GenerateResult, Message, ResolvedSampling

_TOO_LONG_MARKERS = (
    "context_length_exceeded",  # llama.cpp (OpenAI style code)
    "exceeds the available context",  # llama.cpp server message
    "maximum context length",  # vLLM / OpenAI
    "must have less than",  # TGI: `inputs` must have less than N tokens
    "must be <=",  # TGI: `inputs` tokens + `max_new_tokens` must be <= N
    "exceed context window",  # llama-cpp-python
)
_MAX_SERVER_MESSAGE = 500
_MAX_ERROR_BODY = 1_000_000


async def _read_error_body(response: httpx2.Response) -> None:
    # So that the error's body is there to classify (as huggingface_hub's own client does).
    length = response.headers.get("content-length", "")
    if response.status_code >= 400 and length.isdigit() and int(length) < _MAX_ERROR_BODY:
        await response.aread()


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = weakref.WeakKeyDictionary()


def shared_http_client() -> httpx2.AsyncClient:
    """The running loop's one HTTP client to engines, where building one per generation cost each about 1 ms of the
    worker's CPU. It lives as long as its loop: every worker and client in the process shares it, so none closes it.
    Connections are not kept: huggingface_hub stops reading a stream at its `[DONE]`, before the body's end, so only
    an error's answer could leave one open, and an engine that then closes it would fail the next generation."""
    loop = asyncio.get_running_loop()
    client = _shared.get(loop)
    if client is None or client.is_closed:
        client = _shared[loop] = httpx2.AsyncClient(
            verify=tls_context(),
            follow_redirects=True,
            timeout=None,
            event_hooks={"response": [_read_error_body]},
            limits=httpx2.Limits(max_keepalive_connections=0),
        )
    return client


class SharedSession(AbstractAsyncContextManager[httpx2.AsyncClient]):
    """What each AsyncInferenceClient enters as its HTTP client: the shared one, left open when it closes. Closing
    it still closes its streamed response and with it the connection, which stops a cancelled generation at the
    engine."""

    async def __aenter__(self) -> httpx2.AsyncClient:
        return shared_http_client()

    async def __aexit__(self, *exc_info: object) -> None:
        return None


# huggingface_hub's documented hook for its async clients' configuration; only InferenceClient uses them here.
set_async_client_factory(SharedSession)  # type: ignore[arg-type]
# huggingface_hub builds each request's User-Agent with its telemetry, which fetches a list of "agent harnesses" from
# the Hub (blocking, up to 3 s, on the worker's event loop; again in every process while the Hub is unreachable). The
# worker talks to its engine only: telemetry off, as HF_HUB_DISABLE_TELEMETRY=1 sets it.
hf_constants.HF_HUB_DISABLE_TELEMETRY = True


class ChatChunk(BaseModel):
    """One piece of a streamed reply. Usage and finish reason arrive on the last chunks."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def server_message(body: Any) -> tuple[str, str | None]:
    """(message, error type) from an error body in TGI's or OpenAI's/llama.cpp's shape."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            kind = error.get("type") or error.get("code")
            return str(error.get("message") or json.dumps(error)), str(kind) if kind else None
        return str(error), body.get("error_type")
    return str(body or ""), None


def classify(status: int | None, message: str, error_type: str | None = None) -> ErrorType:
    """The taxonomy, by HTTP status and by the error body. `status` is None inside a 200 stream, where TGI
    labels every error 422, so only the body's type and message count there."""
    text = f"{error_type or ''} {message}".lower()
    if any(marker in text for marker in _TOO_LONG_MARKERS):
        return ErrorType.input_too_long
    if status == 429 or error_type == "overloaded":
        return ErrorType.engine_overloaded
    if status in (401, 403):
        return ErrorType.engine_auth
    if status == 404:
        return ErrorType.engine_misconfigured
    if status in (502, 503, 504) or "loading" in text:
        return ErrorType.engine_unavailable
    if "validation error" in text:  # llama-cpp-python answers 500 to a request that fails its schema
        return ErrorType.invalid_request
    if error_type in ("generation", "incomplete_generation") or (status is not None and status >= 500):
        return ErrorType.generation_failed
    if status in (400, 422) or error_type == "validation":
        return ErrorType.invalid_request
    if status is None:
        return ErrorType.generation_failed
    return ErrorType.invalid_request


_ADVICE = {
    ErrorType.engine_auth: "check CHAT_WORKER_API_KEY",
    ErrorType.engine_misconfigured: "check CHAT_WORKER_INFERENCE_BASE_URL and CHAT_WORKER_MODEL_NAME",
    ErrorType.invalid_request: "the request is malformed for this engine; fix the sampling values or messages",
    ErrorType.input_too_long: "shorten the conversation or raise the engine's input limit",
}


def engine_error(status: int | None, body: Any) -> EngineError:
    message, error_type = server_message(body)
    message = message.strip()[:_MAX_SERVER_MESSAGE]
    kind = classify(status, message, error_type)
    where = f"HTTP {status}" if status is not None else "error inside the stream"
    advice = _ADVICE.get(kind)
    return EngineError(kind, f"{where}: {message}" + (f" ({advice})" if advice else ""))


def _response_body(error: HfHubHTTPError) -> Any:
    try:
        return error.response.json()
    except (json.JSONDecodeError, httpx2.ResponseNotRead, UnicodeDecodeError):
        try:
            return error.response.text
        except httpx2.ResponseNotRead:
            return str(error)


def translated(error: Exception) -> EngineError:
    """Any failure from the HTTP stack as an EngineError."""
    if isinstance(error, EngineError):
        return error
    if isinstance(error, HfHubHTTPError):
        return engine_error(error.response.status_code, _response_body(error))
    if isinstance(error, TextGenerationError):  # TGI's in-stream errors, already typed by error_type
        error_type = {
            OverloadedError: "overloaded",
            GenerationError: "generation",
            IncompleteGenerationError: "incomplete_generation",
        }.get(type(error), "validation" if type(error).__name__ == "ValidationError" else None)
        return engine_error(None, {"error": str(error), "error_type": error_type})
    if isinstance(error, InferenceTimeoutError | httpx2.TimeoutException):
        return EngineError(ErrorType.engine_unavailable, f"the engine did not answer in time: {error}")
    if isinstance(error, httpx2.TransportError | ConnectionError):
        return EngineError(ErrorType.engine_unavailable, f"cannot reach the engine: {error!r}")
    raise error


def request_parameters(sampling: ResolvedSampling, engine: Engine) -> dict[str, Any]:
    """Sampling as the engine wants it (its rules in the table, orchestrator/engines.py): no None anywhere
    (llama.cpp answers 500), no top_p of 1.0 where it must be below (TGI; leaving it out means the same), no
    zero penalty (some engines reject the field), the repetition penalty in the engine's own form and only
    when raised."""
    params: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "seed": sampling.seed,
    }
    if sampling.top_p < 1.0 or not engine.top_p_below_one:
        params["top_p"] = sampling.top_p
    if sampling.frequency_penalty:
        params["frequency_penalty"] = sampling.frequency_penalty
    if sampling.repetition_penalty > 1.0 and engine.repetition is not None:
        params.update(engine.repetition.request_fields(sampling.repetition_penalty))
    return params


def chunk_from(output: Any) -> ChatChunk:
    chunk = ChatChunk()
    if output.choices:
        choice = output.choices[0]
        chunk.text = (choice.delta.content if choice.delta else None) or ""
        chunk.finish_reason = choice.finish_reason
    usage = getattr(output, "usage", None)
    if usage:
        chunk.prompt_tokens, chunk.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    return chunk


class InferenceClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        engine: Engine = GENERIC,
    ) -> None:
        self.base_url, self.model, self._api_key, self._timeout = base_url, model, api_key, timeout
        self.engine = engine

    async def stream_chat(
        self,
        messages: list[Message],
        sampling: ResolvedSampling,
        stop: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """The reply as it is generated, constrained to `json_schema` when given. Closing the iterator closes
        the connection, which stops the generation at the engine."""
        constrained = {} if json_schema is None else {"response_format": self.engine.response_format(json_schema)}
        # Closing `hf` closes the stream's response (see SharedSession).
        async with AsyncInferenceClient(base_url=self.base_url, api_key=self._api_key, timeout=self._timeout) as hf:
            try:
                stream = await hf.chat_completion(
                    [{"role": m.role, "content": m.content} for m in messages],
                    model=self.model,
                    stream=True,
                    stream_options={"include_usage": True},
                    stop=self.engine.stops(stop or []) or None,
                    **request_parameters(sampling, self.engine),
                    **constrained,
                )
                async for output in stream:
                    yield chunk_from(output)
            except (HfHubHTTPError, TextGenerationError, httpx2.TransportError, ConnectionError) as error:
                raise translated(error) from error

    async def complete(
        self,
        messages: list[Message],
        sampling: ResolvedSampling,
        stop: list[str] | None = None,
        on_text: Callable[[str], None] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> GenerateResult:
        """The whole reply, streamed and joined; usage from the engine, or counted from chunks if absent."""
        started = time.monotonic()
        first_token_ms: float | None = None
        parts: list[str] = []
        finish_reason, prompt_tokens, completion_tokens, chunks = "stop", 0, None, 0
        seen_any = False
        async for chunk in self.stream_chat(messages, sampling, stop, json_schema):
            if chunk.text:
                chunks += 1
                parts.append(chunk.text)
                if on_text is not None:
                    on_text(chunk.text)
                if first_token_ms is None:
                    first_token_ms = (time.monotonic() - started) * 1000
            finish_reason = chunk.finish_reason or finish_reason
            seen_any = True
            if chunk.completion_tokens is not None:
                prompt_tokens, completion_tokens = chunk.prompt_tokens or 0, chunk.completion_tokens
        if not seen_any:
            # HTTP 200 and not one chunk: llama.cpp does this when a streamed input overflows its context,
            # and to concurrent streams when run with interrupt_requests on.
            raise EngineError(ErrorType.generation_failed, "the engine closed the stream without any output")
        return GenerateResult(
            content="".join(parts),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens if completion_tokens is not None else chunks,
            engine_ms=(time.monotonic() - started) * 1000,
            first_token_ms=first_token_ms,
        )
