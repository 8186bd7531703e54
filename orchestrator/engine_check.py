"""The worker-start check against the engine it talks to: TGI's `GET /info` must grant the token limits
and the concurrency the worker assumes, or the worker refuses to run. Engines without `/info` in the table
(orchestrator/engines.py: vLLM, llama.cpp, one not detected) are not checked."""

from __future__ import annotations

import httpx2
from loguru import logger
from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.engine_env import slots_over_cap
from orchestrator.engines import Engine, tls_context
from orchestrator.settings import Settings

INFO_TIMEOUT_SECONDS = 10.0


class EngineInfo(BaseModel):
    """TGI's `GET /info`, the fields the worker depends on."""

    model_config = ConfigDict(extra="ignore")

    max_concurrent_requests: int
    max_input_tokens: int
    max_total_tokens: int


def engine_mismatches(settings: Settings, info: EngineInfo) -> list[str]:
    """What the worker assumes that the engine does not grant."""
    problems = [
        f"CHAT_WORKER_{name.upper()}={mine} but the engine's is {theirs}"
        for name, mine, theirs in (
            ("max_input_tokens", settings.max_input_tokens, info.max_input_tokens),
            ("max_total_tokens", settings.max_total_tokens, info.max_total_tokens),
        )
        if mine != theirs
    ]
    over = slots_over_cap(settings.generation_slots, settings.workers_per_engine, info.max_concurrent_requests)
    return problems + ([over] if over else [])


async def engine_info(base_url: str) -> EngineInfo | None:
    """TGI's /info; None when it answers anything but a TGI /info body."""
    async with httpx2.AsyncClient(timeout=INFO_TIMEOUT_SECONDS, verify=tls_context()) as http:
        response = await http.get(f"{base_url}/info")
    if response.status_code != 200:
        return None
    try:
        return EngineInfo.model_validate_json(response.content)
    except ValidationError:
        return None


async def engine_limit_problems(settings: Settings, engine: Engine) -> list[str]:
    """The worker-start check. An engine that cannot be reached yet is not a reason to refuse: generation
    retries until it is up, and the check only warns."""
    if not engine.has_info:
        logger.info("engine limits not checked: {} has no /info", engine.label)
        return []
    try:
        info = await engine_info(settings.inference_base_url)
    except httpx2.TransportError as error:
        logger.warning("engine limits not checked: {} does not answer ({!r})", settings.inference_base_url, error)
        return []
    if info is None:
        logger.warning("engine limits not checked: {} answers no TGI /info", settings.inference_base_url)
        return []
    return engine_mismatches(settings, info)
