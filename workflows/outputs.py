"""The spec of a structured output's attempts (chat_scene, chat_character), which `ChatWorkflow._output_attempts`
generates and checks. Kept out of workflows/chat.py when the worker's sandbox imported that module anew for every
run (building this dataclass was a fifth of the import); the worker now passes chat.py through (orchestrator/sandbox.py)
and only the SDK's default sandbox, as the replay tests run it, still imports it per run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from workflows.activities import JobActivities
from workflows.models import GenerateResult, Message, ResolvedSampling, Verdict


@dataclass(frozen=True)
class OutputSpec:
    """What a structured output's attempts generate (`ChatWorkflow._output_attempts`): the prompt, the first
    sampling, the most a later attempt may generate, the JSON schema for an attempt's max_tokens (None: free
    text), and the local activity that checks an output with its input for that output; `what` names the output
    in a NoValidReply's message."""

    purpose: Literal["scene", "card"]
    what: str
    messages: list[Message]
    sampling: ResolvedSampling
    ceiling: int
    schema: Callable[[int], dict[str, Any] | None]
    check: Callable[[JobActivities, Any], Awaitable[Verdict]]
    check_input: Callable[[GenerateResult], BaseModel]
    stop: list[str] = field(default_factory=list)
