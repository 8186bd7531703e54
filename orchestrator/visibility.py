"""What ops see: the custom search attributes (checked at worker start, registered for the dev stack and
test namespaces) and recent jobs from Temporal's visibility API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecution

from orchestrator.errors import StartupError
from orchestrator.rpc import given_up_retried
from workflows.models import WORKFLOW_TYPE
from workflows.search_attributes import ATTEMPTS, CHARACTER_NAME, JOB_TYPE, OUTCOME, SEARCH_ATTRIBUTES, cli_type


class SearchAttributesMissing(StartupError):
    pass


async def missing_search_attributes(client: Client, namespace: str) -> list[str]:
    listed = await given_up_retried(
        lambda: client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    )
    return [key.name for key in SEARCH_ATTRIBUTES if key.name not in listed.custom_attributes]


async def check_search_attributes(client: Client, namespace: str) -> None:
    """A workflow that sets an unregistered search attribute retries its task forever: refuse to start."""
    missing = await missing_search_attributes(client, namespace)
    if missing:
        create = " ".join(
            f"--name {key.name} --type {cli_type(key)}" for key in SEARCH_ATTRIBUTES if key.name in missing
        )
        raise SearchAttributesMissing(
            f"namespace {namespace!r} lacks the search attributes {', '.join(missing)}; register them first, "
            f"e.g. temporal operator search-attribute create --namespace {namespace} {create}"
        )


async def register_search_attributes(client: Client, namespace: str) -> None:
    missing = await missing_search_attributes(client, namespace)
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
                    for key in SEARCH_ATTRIBUTES
                    if key.name in missing
                },
            )
        )


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Type` for `temporal server start-dev`."""
    return [flag for key in SEARCH_ATTRIBUTES for flag in ("--search-attribute", f"{key.name}={cli_type(key)}")]


class JobRow(BaseModel):
    workflow_id: str
    job_type: str
    character: str
    outcome: str
    attempts: int | None
    status: str
    started: datetime
    duration_s: float | None


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def jobs_query(job_type: str | None, character: str | None, since: timedelta | None, now: datetime) -> str:
    clauses = [f"WorkflowType = {_quoted(WORKFLOW_TYPE)}"]
    if job_type:
        clauses.append(f"{JOB_TYPE.name} = {_quoted(job_type)}")
    if character:
        clauses.append(f"{CHARACTER_NAME.name} = {_quoted(character)}")
    if since is not None:
        clauses.append(f"StartTime > {_quoted((now - since).astimezone(UTC).isoformat())}")
    return " AND ".join(clauses)


def job_row(execution: WorkflowExecution) -> JobRow:
    attributes = execution.typed_search_attributes
    ended = execution.close_time
    return JobRow(
        workflow_id=execution.id,
        job_type=attributes.get(JOB_TYPE) or "",
        character=attributes.get(CHARACTER_NAME) or "",
        outcome=attributes.get(OUTCOME) or "",
        attempts=attributes.get(ATTEMPTS),
        status=execution.status.name.lower() if execution.status else "",
        started=execution.start_time,
        duration_s=(ended - execution.start_time).total_seconds() if ended else None,
    )


async def recent_jobs(
    client: Client,
    *,
    job_type: str | None = None,
    character: str | None = None,
    since: timedelta | None = None,
    limit: int = 50,
) -> list[JobRow]:
    query = jobs_query(job_type, character, since, datetime.now(UTC))
    rows = []
    async for execution in client.list_workflows(query, limit=limit):
        rows.append(job_row(execution))
    return rows
