"""Whether this host's worker is healthy, for the worker container's probe (`python -m orchestrator health`,
in orchestrator/cli/health.py).

Healthy means Temporal answers and lists a worker of this host (identity `pid@hostname`, the SDK's
default) among the pollers of both task queues, `chat` and `chat-generate` (while the engine is down, of `chat`
only: the generation worker takes no task then, so does not poll). Temporal remembers a poller
for a few minutes, so a worker that lost Temporal turns unhealthy after that; a dead worker process ends
the container by itself.

An engine that is down (connections refused or reset, or it answers 502/503/504 — on TGI and vLLM `GET /health`
not 200) makes the worker degraded, not unhealthy: jobs wait for the engine, and restarting the worker's
container would not bring the engine back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx2

from orchestrator.engines import GENERIC, Engine, tls_context
from orchestrator.settings import Settings

ENGINE_CHECK_TIMEOUT_SECONDS = 5.0


def queues_without_local_poller(pollers: Mapping[str, Sequence[str]], hostname: str) -> list[str]:
    """The task queues (name → poller identities) that no worker on `hostname` polls."""
    return [queue for queue, identities in pollers.items() if not any(i.endswith(f"@{hostname}") for i in identities)]


async def poller_identities(settings: Settings) -> dict[str, list[str]]:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    from orchestrator.client import connect

    client = await connect(settings)
    identities = {}
    for queue, kind in (
        (settings.task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (settings.generate_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ):
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
            )
        )
        identities[queue] = [poller.identity for poller in described.pollers]
    return identities


async def engine_is_down(base_url: str, engine: Engine = GENERIC) -> bool:
    """Whether the engine is down: its health route (the table's, orchestrator/engines.py) is not 200; an engine
    without one (llama.cpp's server; or a 404 from an engine not detected) is down when `GET /v1/models`
    answers 5xx. Refused or reset is down; slow is not."""
    async with httpx2.AsyncClient(
        base_url=base_url, timeout=ENGINE_CHECK_TIMEOUT_SECONDS, verify=tls_context()
    ) as http:
        try:
            if engine.health_path is not None:
                health = await http.get(engine.health_path)
                if health.status_code != 404:
                    return health.status_code != 200
            return (await http.get("/v1/models")).status_code >= 500
        except httpx2.TimeoutException:
            return False
        except httpx2.TransportError:
            return True
