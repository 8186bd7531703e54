"""`python -m orchestrator health`: the worker container's health probe (the Dockerfile's HEALTHCHECK).

Healthy means Temporal answers and lists a worker of this host (identity `pid@hostname`, the SDK's
default) among the pollers of both task queues, `chat` and `chat-generate`. Temporal remembers a poller
for a few minutes, so a worker that lost Temporal turns unhealthy after that; a dead worker process ends
the container by itself."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.settings import Settings


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


async def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.service import RPCError

    try:
        pollers = await poller_identities(settings)
    except (RuntimeError, RPCError) as error:  # cannot connect, or the server refused the call
        print(f"unhealthy: Temporal at {settings.temporal_address}: {error}", file=sys.stderr)
        return 1
    hostname = socket.gethostname()
    missing = queues_without_local_poller(pollers, hostname)
    if missing:
        print(f"unhealthy: no worker on {hostname} polls {' and '.join(missing)}", file=sys.stderr)
        return 1
    print(f"healthy: a worker on {hostname} polls {' and '.join(pollers)}", file=sys.stderr)
    return 0


def add_command(commands: Any) -> None:
    """`health`, registered by orchestrator.__main__.parser()."""
    health = commands.add_parser(
        "health",
        help="exit 0 when this host's worker polls both task queues (the container's health probe)",
        description="Ask Temporal (CHAT_WORKER_TEMPORAL_ADDRESS) for the pollers of the task queues 'chat' "
        "and 'chat-generate' and exit 0 when a worker on this host is among them, else exit 1 with one "
        "line saying why. The worker image's HEALTHCHECK runs it.",
    )
    health.set_defaults(run=cmd_health)
