"""The job's data: what the backend sends (ChatJob), what it gets back (ChatResult), what crosses the
generation activity, and the error taxonomy shared by the inference client, the activity and the workflow.

Plain JSON on the wire: every model here round-trips through `pydantic_data_converter`."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from characters import Character

WORKFLOW_TYPE = "ChatWorkflow"


def generate_task_queue(workflow_task_queue: str) -> str:
    """Generation runs on its own queue beside the workflow's ("chat" → "chat-generate"), so that only
    generation is capped by the engine's slots."""
    return f"{workflow_task_queue}-generate"


JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class JobType(StrEnum):
    conversation = "chat_conversation"
    roleplay = "chat_roleplay"
    enhance = "chat_enhance"
    unrestricted = "chat_unrestricted"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class Sampling(_Strict):
    """What the job asks for; None means the job type's default (see `sampling_defaults`)."""

    temperature: float | None = Field(default=None, ge=0.1, le=1.0)
    top_p: float | None = Field(default=None, ge=0.1, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class ResolvedSampling(_Strict):
    """Concrete values for one attempt; never None, so nothing null reaches the engine."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    frequency_penalty: float = 0.0


class ChatJob(_Strict):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    job_type: JobType = JobType.roleplay
    messages: list[Message] = Field(min_length=1)
    user_name: str = Field(default="User", min_length=1, max_length=100)
    sampling: Sampling = Sampling()
    # A bundled character's name, or a whole profile inline.
    character: str | Character | None = None
    scenario: str | None = Field(default=None, max_length=4000)
    deadline_seconds: float | None = Field(default=None, gt=0, le=3600)


class Timings(_Strict):
    context_ms: float = 0.0
    generation_ms: float = 0.0  # wall time in generation activities, queue wait and retries included
    engine_ms: float = 0.0  # time the engine spent streaming, summed over attempts
    total_ms: float = 0.0


class ChatResult(_Strict):
    job_id: str
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    # Reason codes of every attempt that validation rejected, in order (e.g. ["too_short"]).
    reasons: list[str] = []
    # "ok" when the returned reply passed validation; "flagged" when attempts ran out and the best
    # rejected reply is returned with its reasons.
    outcome: Literal["ok", "flagged"] = "ok"
    timings: Timings = Timings()


class GenerateRequest(_Strict):
    job_id: str
    attempt: int
    messages: list[Message]
    sampling: ResolvedSampling


class GenerateResult(_Strict):
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    engine_ms: float
    first_token_ms: float | None = None


class JobMetrics(_Strict):
    """What `record_metrics` logs: numbers and codes, never chat text."""

    job_id: str
    job_type: JobType
    character: str | None
    messages: int
    attempts: int
    reasons: list[str]
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    timings: Timings


def describe_validation_error(error: ValidationError, root: str) -> str:
    """ "job.messages.0.role: Input should be 'system', 'user' or 'assistant'; …" for a client or a log."""
    return "; ".join(f"{'.'.join([root, *map(str, item['loc'])])}: {item['msg']}" for item in error.errors())


class ErrorType(StrEnum):
    """Temporal ApplicationError types. Retry policies name the non-retryable ones."""

    engine_unavailable = "EngineUnavailable"  # connection refused, timeout, 502/503/504, loading
    engine_overloaded = "EngineOverloaded"  # 429, overloaded (also in-stream)
    generation_failed = "GenerationFailed"  # 424, 500, in-stream generation error
    input_too_long = "InputTooLong"
    invalid_request = "InvalidRequest"  # other 400/422
    engine_auth = "EngineAuth"  # 401/403
    engine_misconfigured = "EngineMisconfigured"  # 404
    invalid_job = "InvalidJob"  # the job failed its own validation
    no_valid_reply = "NoValidReply"  # every attempt was empty after cleaning
    deadline = "Deadline"  # the job's deadline passed


RETRYABLE = frozenset({ErrorType.engine_unavailable, ErrorType.engine_overloaded, ErrorType.generation_failed})
NON_RETRYABLE = frozenset(ErrorType) - RETRYABLE


class EngineError(Exception):
    def __init__(self, type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.type = type
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.type in RETRYABLE

    def __repr__(self) -> str:
        return f"EngineError({self.type.value}: {self.message})"
