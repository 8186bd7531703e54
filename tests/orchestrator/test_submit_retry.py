"""ChatClient.submit through start errors after which the workflow may or may not have started (a 1,000-job
burst on a heavily loaded machine once lost 648 jobs at submit to the dev server's CANCELLED, "operation was
canceled"). The real dev server, in a namespace with no worker (the jobs only need to exist). The errors are
FAKE, raised by a client interceptor: the real server answers so only under a load no test can make on demand.
Each is raised either before the start reaches the server, or after it went through (its answer lost)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from orchestrator.client import ChatClient
from orchestrator.rpc import TRIES as START_TRIES
from orchestrator.settings import Settings
from tests.helpers import job

When = Literal["before", "after"]


def rpc_error(status: RPCStatusCode) -> RPCError:
    return RPCError(f"injected {status.name}", status, b"")


@dataclass
class FlakyStarts(Interceptor):
    """Fails start calls as scripted, one fault per call in order (then none): (when, status)."""

    faults: list[tuple[When, RPCStatusCode]]
    calls: int = field(default=0)

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return FlakyStartCalls(next, self)


class FlakyStartCalls(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, script: FlakyStarts) -> None:
        super().__init__(next)
        self.script = script

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        self.script.calls += 1
        fault = self.script.faults.pop(0) if self.script.faults else None
        if fault is not None and fault[0] == "before":
            raise rpc_error(fault[1])
        handle = await self.next.start_workflow(input)
        if fault is not None:
            raise rpc_error(fault[1])
        return handle


def flaky_chat(client: Client, settings: Settings, namespace: str, script: FlakyStarts) -> ChatClient:
    config = client.config()
    config.update(namespace=namespace, interceptors=[script])
    return ChatClient(Client(**config), settings.model_copy(update={"temporal_namespace": namespace}))


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("status", [RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED])
async def test_a_start_the_server_gave_up_on_is_tried_again_and_the_job_is_started_once(
    client: Client, settings: Settings, isolated_namespace: str, when: When, status: RPCStatusCode
) -> None:
    script = FlakyStarts([(when, status)])
    chat = flaky_chat(client, settings, isolated_namespace, script)
    submitted = job()
    handle = await chat.submit(submitted)
    try:
        assert script.calls == 2
        described = await handle.describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        # After a try that went through, the next ones found the same job started: no JobConflict, one run.
        assert await chat.submitted_job(submitted.job_id) == chat.prepared(submitted)
    finally:
        await handle.terminate()


async def test_a_start_that_keeps_failing_raises_after_the_last_try_and_starts_nothing(
    client: Client, settings: Settings, isolated_namespace: str
) -> None:
    script = FlakyStarts([("before", RPCStatusCode.CANCELLED)] * START_TRIES)
    chat = flaky_chat(client, settings, isolated_namespace, script)
    submitted = job()
    with pytest.raises(RPCError) as failed:
        await chat.submit(submitted)
    assert failed.value.status == RPCStatusCode.CANCELLED and script.calls == START_TRIES
    with pytest.raises(RPCError) as missing:
        await chat.handle(submitted.job_id).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


async def test_any_other_start_error_is_not_tried_again(
    client: Client, settings: Settings, isolated_namespace: str
) -> None:
    script = FlakyStarts([("before", RPCStatusCode.INVALID_ARGUMENT)])
    chat = flaky_chat(client, settings, isolated_namespace, script)
    with pytest.raises(RPCError) as failed:
        await chat.submit(job())
    assert failed.value.status == RPCStatusCode.INVALID_ARGUMENT and script.calls == 1
