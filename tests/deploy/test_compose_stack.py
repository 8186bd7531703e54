"""The production stack for real: `docker compose up` of docker-compose.yml (Temporal on Postgres, TGI on
the GPU, the worker image), then one roleplay job from this host through Temporal. Run with
`make test-compose`; needs a Docker engine with Compose v2.20+, an NVIDIA GPU, and internet the first time
(the weights are pulled into the hf-cache volume, which `down` keeps). Elsewhere every test here skips with
the reason, and the default test run deselects them (pyproject addopts), so a skip never counts."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from pytest_docker.plugin import Services
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from orchestrator.client import ChatClient, connect
from orchestrator.codec import new_key_line
from orchestrator.settings import Settings
from tests.deploy.compose import COMPOSE_FILE
from tests.deploy.preflight import unavailable_reason
from workflows.models import ChatJob, JobType
from workflows.search_attributes import SEARCH_ATTRIBUTES

pytestmark = pytest.mark.compose

PROJECT = "chat-worker-test"
STACK_START_TIMEOUT = 1800.0  # first start: image pulls (TGI ~10 GB) and loading the weights onto the GPU


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return PROJECT


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh key for the stack's worker and codec server (a Docker secret) and for this test's client."""
    path = tmp_path_factory.mktemp("secrets") / "payload-keys"
    path.write_text(new_key_line("compose-test") + "\n")
    return path


@pytest.fixture(scope="session")
def stack_settings(keys_file: Path) -> Settings:
    return Settings(_env_file=None, temporal_address="127.0.0.1:7233", payload_keys_file=keys_file)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def docker_setup(keys_file: Path) -> list[str]:
    os.environ["PAYLOAD_KEYS_FILE"] = str(keys_file)  # docker compose reads it for the payload_keys secret
    # The weights first (a quick check when the volume has them), then the stack in the background.
    return ["--profile tools run --rm --build models-pull", "up --build --detach"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down"]  # volumes stay: the next run starts from the pulled weights


def worker_is_healthy() -> bool:
    probe = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, "exec", "-T", "worker"]
        + ["python", "-m", "orchestrator", "health"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def compose_stack(request: pytest.FixtureRequest) -> Services:
    """pytest-docker's `docker_services` (the fixtures above configure it), once the preflight passed and
    the worker container reports healthy (Temporal set up, the engine healthy, both queues polled)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"the compose suite cannot run here: {reason}")
    services: Services = request.getfixturevalue("docker_services")
    services.wait_until_responsive(check=worker_is_healthy, timeout=STACK_START_TIMEOUT, pause=10)
    return services


@pytest.fixture(scope="session")
async def compose_client(compose_stack: Services, stack_settings: Settings) -> Client:
    return await connect(stack_settings)


async def test_search_attributes_are_registered_in_the_default_namespace(compose_client: Client) -> None:
    listed = await compose_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    for key in SEARCH_ATTRIBUTES:
        assert listed.custom_attributes[key.name] == IndexedValueType.ValueType(key.indexed_value_type.value)


async def test_a_roleplay_job_runs_through_the_stack_on_qwen(compose_client: Client, stack_settings: Settings) -> None:
    settings = stack_settings
    job = ChatJob(
        job_id=f"compose-{uuid.uuid4().hex[:12]}",
        job_type=JobType.roleplay,
        character="Mira",
        messages=[{"role": "user", "content": "*shakes the rain off my coat* Evening, Mira. Quiet night?"}],
        sampling={"max_tokens": 120, "seed": 7},
    )
    result = await (await ChatClient(compose_client, settings).submit(job)).result()
    assert result.outcome in ("ok", "flagged") and len(result.content.split()) >= 5
    assert result.prompt_tokens > 0  # TGI reports usage; the local llama.cpp does not
    assert 1 <= result.completion_tokens <= 120
