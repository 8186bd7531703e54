"""`python -m orchestrator health`, the worker image's health probe, against the real Temporal dev server
and the session's real worker (which runs in this process, so on this host)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from orchestrator.devstack import free_port, settings_on_free_ports
from orchestrator.health import queues_without_local_poller
from orchestrator.settings import Settings
from tests.helpers import arun, run, stack_env, worker_against


def test_a_queue_is_healthy_only_with_a_poller_from_this_host() -> None:
    pollers = {"chat": ["7@worker-a", "1@worker-b"], "chat-generate": ["7@worker-a"], "other": []}
    assert queues_without_local_poller(pollers, "worker-a") == ["other"]
    assert queues_without_local_poller(pollers, "worker-b") == ["chat-generate", "other"]
    assert queues_without_local_poller(pollers, "worker") == ["chat", "chat-generate", "other"]


async def test_healthy_while_this_hosts_worker_polls_both_queues(chat: object, settings: Settings) -> None:
    for _ in range(50):  # a worker shows as a poller once its first poll reaches Temporal
        done = await arun("health", env=stack_env(settings))
        if done.returncode == 0:
            break
        await asyncio.sleep(0.2)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == (
        f"healthy: a worker on {socket.gethostname()} polls chat and chat-generate (engine: llama.cpp)"
    )


async def test_unhealthy_when_no_worker_polls_the_queues(chat: object, settings: Settings) -> None:
    done = await arun("health", env=stack_env(settings) | {"CHAT_WORKER_TASK_QUEUE": "nobody-polls"})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"unhealthy: no worker on {socket.gethostname()} polls nobody-polls and nobody-polls-generate"
    )


def test_unhealthy_when_temporal_does_not_answer(tmp_path: Path) -> None:
    settings = settings_on_free_ports(tmp_path)  # free ports: nothing listens there
    done = run("health", env=stack_env(settings))
    assert done.returncode == 1
    assert done.stderr.startswith(f"unhealthy: Temporal at {settings.temporal_address}: ")
    assert len(done.stderr.strip().splitlines()) == 1


async def test_degraded_but_healthy_while_the_engine_is_down(settings: Settings, isolated_namespace: str) -> None:
    # A worker of its own whose engine is down: nothing listens on its port (connections are refused).
    down = f"http://127.0.0.1:{free_port()}"
    env = stack_env(settings) | {
        "CHAT_WORKER_TEMPORAL_NAMESPACE": isolated_namespace,
        "CHAT_WORKER_INFERENCE_BASE_URL": down,
    }
    async with worker_against(settings, isolated_namespace, down):
        for _ in range(50):  # a worker shows as a poller once its first poll reaches Temporal
            done = await arun("health", env=env)
            if done.returncode == 0:
                break
            await asyncio.sleep(0.2)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"degraded: engine down at {down}"
