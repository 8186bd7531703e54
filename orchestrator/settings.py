"""One Settings object for every process: env vars `CHAT_WORKER_*`, an optional `.env`, defaults for the
embedded stack (llama.cpp on 127.0.0.1:8088, Temporal dev server on 127.0.0.1:7233), and in production the
engine's limits from TGI's own env file (`CHAT_WORKER_ENGINE_ENV_FILE=tgi.env`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from characters import describe_validation_error
from orchestrator.engine_env import ENGINE_ENV_SETTINGS, merged_with_engine_env, read_engine_env, slots_over_cap
from orchestrator.engines import EngineChoice
from workflows.models import DEFAULT_LOW_WATER, EngineLimits, JobLimits, generate_task_queue

ENV_PREFIX = "CHAT_WORKER_"

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "chat"

    # Inference engine (TGI in production, llama.cpp locally; any OpenAI-compatible chat API)
    inference_base_url: str = "http://127.0.0.1:8088"
    # Which engine that is (orchestrator/engines.py); auto asks it at worker start.
    engine: EngineChoice = "auto"
    model_name: str = "smollm2"
    api_key: SecretStr | None = None
    # The engine's own limits; locally llama.cpp's n_ctx is max_total_tokens.
    max_input_tokens: int = Field(default=1536, ge=16)
    max_total_tokens: int = Field(default=2048, ge=32)
    # Tokens kept free below the budget for what the count cannot see exactly (template details).
    context_margin_tokens: int = Field(default=32, ge=0)
    # A long chat's window: when the history outgrows its room, whole turns are dropped until it takes this
    # share of the room, and the prompt's front then stays put for the engine's prefix cache (1: drop as
    # little as possible, every turn).
    context_low_water: float = Field(default=DEFAULT_LOW_WATER, gt=0, le=1)
    # How prompts are counted: the engine's tokenize route (see orchestrator/engines.py), the local GGUF, the
    # estimate, or auto (the engine's when it answers beside generation: TGI, vLLM; else the GGUF, else estimate).
    tokenizer: Literal["auto", "engine", "gguf", "estimate"] = "auto"

    # What a job may ask for
    max_tokens_cap: int = Field(default=2048, ge=1)
    max_attempts: int = Field(default=3, ge=1, le=10)
    max_deadline_seconds: Seconds = 600.0
    # Forbidden patterns (YAML, see workflows/policy.yaml); none by default.
    policy_file: Path | None = None

    # TGI's launcher env file: model, API key, token limits and concurrency cap are read from it.
    engine_env_file: Path | None = None
    # TGI's MAX_CONCURRENT_REQUESTS (more in flight is answered 429); None: unknown, not checked.
    engine_max_concurrent_requests: int | None = Field(default=None, ge=1)

    # Privacy (README "Privacy"): with a keys file every payload Temporal stores is encrypted. Without one it is
    # plain JSON, which the worker image refuses unless allowed (its CHAT_WORKER_ALLOW_PLAINTEXT is 0).
    payload_keys_file: Path | None = None
    allow_plaintext: bool = True

    # Worker
    generation_slots: int = Field(default=8, ge=1, le=256)
    # Generation tasks the worker takes beyond its slots, each waiting in the worker (heartbeating) for a slot, so
    # the next generation starts the moment one ends instead of after a poll to Temporal; the engine still never
    # has more than generation_slots of this worker's. Kept small: a task taken has left Temporal's priority
    # queue, so a later higher-priority one (a regeneration) cannot go ahead of it. 0: take only what the slots
    # can run.
    generation_reserve: int = Field(default=1, ge=0)
    # Workflow tasks one worker runs at once (each on a thread of its own). An activation holds the GIL while it
    # runs, so more at once finish no sooner; the SDK's default, 100 (on up to 500 threads), let a burst's first
    # workflow tasks crowd out the hand-offs that keep the engine's slots full (README "Workflow task slots").
    # The SDK needs at least 2 (a cached workflow's task and a new one).
    workflow_task_slots: int = Field(default=8, ge=2, le=1000)
    # Worker processes sharing one engine (compose: WORKER_REPLICAS); their slots add up at the engine.
    workers_per_engine: int = Field(default=1, ge=1, le=256)
    inference_timeout_seconds: Seconds = 60.0
    job_deadline_seconds: Seconds = 120.0
    # Where the worker serves Prometheus metrics (host:port, /metrics): Temporal's SDK metrics and the jobs'
    # (orchestrator/metrics.py). None or empty: not served (`dev` serves them on DEV_METRICS_ADDRESS unless set).
    metrics_address: str | None = None

    # Embedded dev stack
    state_dir: Path = Path(".state")
    temporal_ui_port: Port = 8233
    temporal_http_port: Port = 7243
    temporal_metrics_port: Port = 7235
    # The dev stack's codec server, for the local Web UI to show encrypted jobs (only with a keys file).
    codec_port: Port = 8081
    local_model_path: Path | None = None
    local_threads: int = Field(default=2, ge=1)

    # Logging includes no chat text unless log_chat_text is set (then DEBUG lines carry messages and replies).
    # JSON lines carry each job's metrics record in `extra.metrics`.
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    log_chat_text: bool = False

    @field_validator("metrics_address", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("temporal_address", "metrics_address")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:7233")
        return value

    @field_validator("inference_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:8088")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _limits_from_engine_env_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("engine_env_file"):
            source = Path(data["engine_env_file"])
            return merged_with_engine_env(data, read_engine_env(source), source)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError("max_input_tokens must be smaller than max_total_tokens")
        if self.job_deadline_seconds > self.max_deadline_seconds:
            raise ValueError("job_deadline_seconds must not exceed max_deadline_seconds")
        return self

    @model_validator(mode="after")
    def _reserve_within_slots(self) -> Settings:
        # More would hold tasks that wait for more than one round of generations, away from other workers.
        if self.generation_reserve > self.generation_slots:
            raise ValueError(
                f"CHAT_WORKER_GENERATION_RESERVE ({self.generation_reserve}) must not exceed "
                f"CHAT_WORKER_GENERATION_SLOTS ({self.generation_slots})"
            )
        return self

    @model_validator(mode="after")
    def _slots_fit_engine(self) -> Settings:
        cap = self.engine_max_concurrent_requests
        problem = slots_over_cap(self.generation_slots, self.workers_per_engine, cap) if cap is not None else None
        if problem:
            raise ValueError(problem)
        return self

    @property
    def job_limits(self) -> JobLimits:
        return JobLimits(
            max_tokens_cap=self.max_tokens_cap,
            default_deadline_seconds=self.job_deadline_seconds,
            max_deadline_seconds=self.max_deadline_seconds,
            max_attempts=self.max_attempts,
        )

    @property
    def engine_limits(self) -> EngineLimits:
        return EngineLimits(
            max_input_tokens=self.max_input_tokens,
            max_total_tokens=self.max_total_tokens,
            margin_tokens=self.context_margin_tokens,
            low_water=self.context_low_water,
        )

    @property
    def engine_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    @property
    def generate_task_queue(self) -> str:
        return generate_task_queue(self.task_queue)

    @property
    def temporal_host(self) -> str:
        return self.temporal_address.rpartition(":")[0]

    @property
    def temporal_port(self) -> int:
        return int(self.temporal_address.rpartition(":")[2])

    @property
    def inference_host(self) -> str:
        return urlsplit(self.inference_base_url).hostname or "127.0.0.1"

    @property
    def inference_port(self) -> int:
        parts = urlsplit(self.inference_base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def ui_url(self) -> str:
        return f"http://{self.temporal_host}:{self.temporal_ui_port}"


class SettingsError(Exception):
    """A setting is invalid; the message names each bad env var and why."""


def env_var(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


# The engine's env file and the settings it sets, which it is checked against: who reads one reads them all.
ENGINE_LIMITS = frozenset({"engine_env_file", *ENGINE_ENV_SETTINGS.values()})


def load_settings(*, reads: Collection[str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment and .env. `reads` names the fields the caller uses (None: all): when a
    variable is invalid, every field outside `reads` takes its default instead, so only an invalid variable
    the caller reads stops it."""
    unknown = set(reads or ()) - Settings.model_fields.keys()
    if unknown:
        raise ValueError(f"not settings: {', '.join(sorted(unknown))}")
    try:
        return validated(overrides)
    except SettingsError:
        if reads is None:
            raise
    unread = {name: field.default for name, field in Settings.model_fields.items() if name not in reads}
    return validated(unread | overrides)


def validated(values: Mapping[str, object]) -> Settings:
    """Settings with these values over the environment's."""
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = describe_validation_error(error, name=env_var, shows_input=lambda field: field != "api_key")
        raise SettingsError(f"invalid settings: {problems}") from None
