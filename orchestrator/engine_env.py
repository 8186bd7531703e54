"""The engine's limits from its own env file: one source of truth for the worker and TGI.

With `CHAT_WORKER_ENGINE_ENV_FILE=tgi.env` the worker takes the model, API key, token limits and
concurrency cap from the same file the TGI launcher reads (Settings applies `merged_with_engine_env`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import SecretStr

# TGI launcher variable → the worker setting it determines.
ENGINE_ENV_SETTINGS: dict[str, str] = {
    "MODEL_ID": "model_name",
    "API_KEY": "api_key",
    "MAX_INPUT_TOKENS": "max_input_tokens",
    "MAX_TOTAL_TOKENS": "max_total_tokens",
    "MAX_CONCURRENT_REQUESTS": "engine_max_concurrent_requests",
}
# TGI's defaults for these depend on the model and the GPU: the file must say them.
REQUIRED_ENGINE_ENV = ("MODEL_ID", "MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS", "MAX_CONCURRENT_REQUESTS")
WHOLE_NUMBERS = ("MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS", "MAX_CONCURRENT_REQUESTS")


def read_engine_env(path: Path) -> dict[str, str]:
    """The file's variables; empty values count as unset, as they do for the launcher."""
    if not path.is_file():
        raise ValueError(f"CHAT_WORKER_ENGINE_ENV_FILE: no such file: {path}")
    return {name: value for name, value in dotenv_values(path).items() if value}


def _given(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def merged_with_engine_env(data: Mapping[str, Any], engine_env: Mapping[str, str], source: Path) -> dict[str, Any]:
    """Settings values with the engine's limits filled in from its env file. A value also set for the worker
    (CHAT_WORKER_…) must agree with the file: two sources that disagree stop the worker at start."""
    missing = [name for name in REQUIRED_ENGINE_ENV if name not in engine_env]
    if missing:
        raise ValueError(f"{source} (CHAT_WORKER_ENGINE_ENV_FILE) does not set {', '.join(missing)}")
    for name in WHOLE_NUMBERS:
        if not engine_env[name].isdigit():
            raise ValueError(f"{name} in {source} must be a whole number (got {engine_env[name]!r})")
    merged = dict(data)
    for name, field in ENGINE_ENV_SETTINGS.items():
        if name not in engine_env:
            continue
        given = data.get(field)
        if given is not None and _given(given) != engine_env[name]:
            ours, theirs = f"CHAT_WORKER_{field.upper()}", name
            if field != "api_key":  # never echo a key
                ours, theirs = f"{ours}={_given(given)}", f"{theirs}={engine_env[name]}"
            raise ValueError(
                f"{ours} disagrees with {theirs} in {source}: unset CHAT_WORKER_{field.upper()}, "
                "the engine's file is the one source"
            )
        merged[field] = engine_env[name]
    return merged


def slots_over_cap(slots: int, workers: int, cap: int) -> str | None:
    """Why `slots` generations in each of `workers` workers overrun an engine that takes `cap` at once."""
    if slots * workers <= cap:
        return None
    return (
        f"CHAT_WORKER_GENERATION_SLOTS ({slots}) × CHAT_WORKER_WORKERS_PER_ENGINE ({workers}) = {slots * workers} "
        f"exceeds the engine's MAX_CONCURRENT_REQUESTS ({cap}), which answers the excess with 429: "
        "lower the slots or raise the engine's cap"
    )
