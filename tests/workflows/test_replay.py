"""Replay: today's ChatWorkflow must reproduce the commands of histories recorded from real runs, so a
change that would break running workflows fails here (version such changes with `workflow.patched`)."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from orchestrator.client import ChatClient
from tests.helpers import job
from workflows.chat import ChatWorkflow

HISTORIES = {path.stem: path.read_text() for path in sorted((Path(__file__).parents[1] / "histories").glob("*.json"))}


def replayer() -> Replayer:
    return Replayer(workflows=[ChatWorkflow], data_converter=pydantic_data_converter)


def test_there_are_saved_histories() -> None:
    assert HISTORIES, "record them with: python -m tests.histories.record"


@pytest.mark.parametrize("name", HISTORIES)
async def test_saved_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(f"replay-{name}", HISTORIES[name])
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None


async def test_a_fresh_history_replays(chat: ChatClient) -> None:
    handle = await chat.submit(job(sampling={"max_tokens": 24, "seed": 9}))
    await handle.result()
    result = await replayer().replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
    assert result.replay_failure is None
