"""orchestrator/sandbox.py's runner answers the worker's per-payload serialization-context lookups without a trip
into the sandbox: on every recorded history it must give each payload the same context as the SDK's own sandboxed
runner (seen by a codec that records the contexts it is given), and replay."""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from temporalio import workflow
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
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

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
    ours = await contexts_on_replay(name, sandbox.WorkflowRunner.passing_through(ChatWorkflow))
    assert ours == await contexts_on_replay(name, SandboxedWorkflowRunner())
    activities = {(c.activity_type, c.is_local) for c in ours if isinstance(c, ActivitySerializationContext)}
    assert ("generate", False) in activities
    assert ("prepare", True) in activities


WORKFLOW_MODULE = """
from temporalio import workflow


@workflow.defn(name="Greeting")
class Greeting:
    @workflow.run
    async def run(self) -> str:
        return "hello"
"""


async def test_runs_use_the_workflow_module_imported_once_where_the_sdks_runner_imports_it_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Async: a sandboxed instance needs a running loop.)
    (tmp_path / "greeting_workflow.py").write_text(WORKFLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # so that every import of the module compiles it
    module = importlib.import_module("greeting_workflow")
    definition = workflow._Definition.must_from_class(module.Greeting)
    compiled: list[str] = []
    compile_ = builtins.compile
    monkeypatch.setattr(
        builtins,
        "compile",
        lambda source, filename, *a, **kw: compiled.append(str(filename)) or compile_(source, filename, *a, **kw),
    )

    # prepare_workflow creates an instance the way each workflow run does.
    SandboxedWorkflowRunner().prepare_workflow(definition)
    assert compiled.count(module.__file__) == 1
    compiled.clear()
    runner = sandbox.WorkflowRunner.passing_through(module.Greeting)
    for _ in range(3):
        runner.prepare_workflow(definition)
    assert module.__file__ not in compiled
    assert runner.restrictions.passthrough_modules - SandboxRestrictions.default.passthrough_modules == {
        "greeting_workflow"
    }
