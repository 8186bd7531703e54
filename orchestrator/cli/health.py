"""`python -m orchestrator health`: the worker container's health probe (the Dockerfile's HEALTHCHECK)."""

from __future__ import annotations

import argparse
import socket
import sys

from orchestrator.cli.command import Command
from orchestrator.engines import detected_engine
from orchestrator.errors import StartupError
from orchestrator.health import engine_is_down, poller_identities, queues_without_local_poller
from orchestrator.settings import Settings


async def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.service import RPCError

    try:
        pollers = await poller_identities(settings)
    except StartupError as error:  # this process's own configuration, e.g. the keys file
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    except (RuntimeError, RPCError) as error:  # cannot connect, or the server refused the call
        print(f"unhealthy: Temporal at {settings.temporal_address}: {error}", file=sys.stderr)
        return 1
    hostname = socket.gethostname()
    missing = queues_without_local_poller(pollers, hostname)
    engine = await detected_engine(settings.engine, settings.inference_base_url, settings.engine_api_key, quiet=True)
    engine_down = await engine_is_down(settings.inference_base_url, engine)
    if engine_down:
        # The generation worker takes no task, so does not poll, while its engine is down (engine_watch.py).
        missing = [queue for queue in missing if queue != settings.generate_task_queue]
    if missing:
        print(f"unhealthy: no worker on {hostname} polls {' and '.join(missing)}", file=sys.stderr)
        return 1
    if engine_down:
        # Still 0: the jobs wait for the engine, and a restart of this container would not bring it back.
        print(f"degraded: engine down at {settings.inference_base_url}", file=sys.stderr)
        return 0
    print(f"healthy: a worker on {hostname} polls {' and '.join(pollers)} (engine: {engine.label})", file=sys.stderr)
    return 0


HEALTH = Command(
    "health",
    help="exit 0 when this host's worker polls both task queues, also while the engine is down (the container's "
    "health probe)",
    description="Ask Temporal (CHAT_WORKER_TEMPORAL_ADDRESS) for the pollers of the task queues 'chat' "
    "and 'chat-generate' and exit 0 when a worker on this host is among them (naming the engine, "
    "CHAT_WORKER_ENGINE or detected), else exit 1 with one line saying why. While the engine "
    "(CHAT_WORKER_INFERENCE_BASE_URL) is down it still exits 0, printing "
    "'degraded: engine down': jobs wait for the engine. The worker image's HEALTHCHECK runs it.",
    run=cmd_health,
)
