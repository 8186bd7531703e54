"""orchestrator/sandbox.py's runner answers the worker's per-payload serialization-context lookups without a trip
into the sandbox: on every recorded history it must give each payload the same context as the SDK's own sandboxed
runner (seen by a codec that records the contexts it is given), and replay."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.worker import Replayer, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from orchestrator import sandbox
from workflows.chat import ChatWorkflow

HISTORIES = {path.stem: path.read_text() for path in sorted((Path(__file__).parents[1] / "histories").glob("*.json"))}


class ContextRecorder(PayloadCodec, WithSerializationContext):
    """Leaves payloads as they are; notes each context the worker hands it."""

    def __init__(self, seen: list[SerializationContext]) -> None:
        self.seen = seen

    def with_context(self, context: SerializationContext) -> ContextRecorder:
        self.seen.append(context)
        return self

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


async def contexts_on_replay(name: str, runner: WorkflowRunner) -> list[SerializationContext]:
    seen: list[SerializationContext] = []
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=ContextRecorder(seen))
    replayer = Replayer(workflows=[ChatWorkflow], data_converter=converter, workflow_runner=runner)
    history = WorkflowHistory.from_json(f"replay-{name}", HISTORIES[name])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    return seen


@pytest.mark.parametrize("name", HISTORIES)
async def test_payload_contexts_are_the_sdk_runners(name: str) -> None:
    ours = await contexts_on_replay(name, sandbox.WorkflowRunner())
    assert ours == await contexts_on_replay(name, SandboxedWorkflowRunner())
    activities = {(c.activity_type, c.is_local) for c in ours if isinstance(c, ActivitySerializationContext)}
    assert ("generate", False) in activities
    assert ("prepare", True) in activities
