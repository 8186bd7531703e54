"""The worker's task slots as its settings give them: the workflow worker's workflow tasks at once
(WORKFLOW_TASK_SLOTS), on workers built against the real dev server."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from orchestrator.engine_watch import EngineWatch
from orchestrator.engines import GENERIC
from orchestrator.settings import Settings
from orchestrator.worker import build_workers


async def never_down(base_url: str) -> bool:
    return False


async def test_the_workflow_worker_takes_its_task_slots_from_the_settings(client: Client, settings: Settings) -> None:
    # A task queue of its own: the SDK refuses a second worker for a queue another worker of this client polls.
    narrow = settings.model_copy(update={"workflow_task_slots": 3, "task_queue": f"slots-{uuid.uuid4().hex[:8]}"})
    watch = EngineWatch(narrow.inference_base_url, is_down=never_down)
    try:
        workflows, generation = await build_workers(client, narrow, GENERIC, watch)
    finally:
        await watch.aclose()
    assert workflows.config()["max_concurrent_workflow_tasks"] == 3
    assert workflows.config()["task_queue"] == narrow.task_queue
    assert generation.config()["task_queue"] == narrow.generate_task_queue
