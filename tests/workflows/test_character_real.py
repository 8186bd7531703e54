"""chat_character end to end: a real worker on the real Temporal dev server against the real model (SmolLM2,
constrained to the card's schema by llama.cpp's grammar), submitted with ChatClient and as raw JSON with the
`temporal` CLI; the card it returns read back with `characters import` and exported as a PNG card."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import jsonschema
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from characters import export_card, parse_card
from orchestrator.client import ChatClient
from orchestrator.settings import Settings
from tests.helpers import (
    generate_requests,
    job,
    one_json_object,
    run,
    start_and_wait_with_the_temporal_cli,
    start_with_the_temporal_cli,
    temporal_cli,
)
from workflows.card import TEXT_FIELDS, card_schema
from workflows.models import GenerateResult, JobType

# Ends on Mira's line: any role may come last in a chat_character job.
CONVERSATION = [
    {"role": "user", "content": "*shakes the rain off his coat* Evening. Is there a room free tonight?"},
    {
        "role": "assistant",
        "content": '"One room left, under the eaves. Two silver, and you mop your own puddles, love."',
    },
    {"role": "user", "content": "*sets two coins on the counter* I'll take it. Has anyone asked after me?"},
    {"role": "assistant", "content": '*leans in* "A tall man in a grey cloak, this morning. Too clean for a sailor."'},
]
CARD_FIELDS = (*TEXT_FIELDS, "mes_example")
# The starting profile, inline: its name and what the model does not write carry over.
MIRA = {
    "name": "Mira",
    "description": "A tavern keeper.",
    "speaking_style": "Plain and quick, salted with sailor's slang.",
    "tags": ["tavern", "harbour"],
}
JOB_TIMEOUT = 600  # a guard against hangs only


async def generate_results(client: Client, workflow_id: str) -> list[GenerateResult]:
    """What each generation of the job returned, from its history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            [value] = await client.data_converter.decode(
                list(event.activity_task_completed_event_attributes.result.payloads)
            )
            found.append(GenerateResult.model_validate(value))
    return found


def assert_whole_card(result: dict, name: str) -> dict:
    """`result`: a ChatResult as JSON (the `temporal` CLI prints an empty list as null)."""
    assert result["outcome"] in ("ok", "flagged") and 1 <= result["attempts"] <= 3
    card = result["card"]
    assert card is not None and card["spec"] == "chara_card_v3" and card["spec_version"] == "3.0"
    data = card["data"]
    assert data["name"] == name
    if result["outcome"] == "ok":
        assert result["attempt_details"][result["returned_attempt"] - 1]["reasons"] in ([], None)
        assert all(data[field].strip() for field in CARD_FIELDS)
        assert data["mes_example"].startswith("<START>\n{{user}}: ")
    else:
        assert result["reasons"] and any(a["reasons"] for a in result["attempt_details"])
    assert result["content"].startswith(f"Name: {name}\nDescription: {data['description']}")
    return card


async def test_a_card_from_a_chat_on_the_real_model_reads_back_and_exports_as_a_png(
    chat: ChatClient, client: Client, tmp_path: Path
) -> None:
    submitted = job(
        job_type=JobType.character,
        messages=CONVERSATION,
        character=MIRA,
        sampling={"max_tokens": 250, "seed": 3},
        deadline_seconds=500,
        memory={"summary": "Tam, a sailor, came to the Drowned Lantern looking for his brother.", "covers": 0},
    )
    handle = await chat.submit(submitted)
    result = await asyncio.wait_for(handle.result(), JOB_TIMEOUT)
    card = assert_whole_card(result.model_dump(mode="json"), "Mira")
    assert result.memory == submitted.memory  # a card job keeps the chat's memory as it came
    if result.outcome == "ok":  # the chat says more than the profile: nothing of it copied word for word
        assert card["data"]["description"] != MIRA["description"]
    # The starting profile's other fields carry over.
    assert card["data"]["tags"] == MIRA["tags"] and card["data"]["extensions"]["chat_worker"]["speaking_style"]

    # Each generation was constrained to the schema: what did not stop at its token limit is a card object.
    requests = await generate_requests(client, handle.id)
    outputs = await generate_results(client, handle.id)
    # (A generation the deadline cut short returned nothing; its job came back flagged `deadline`.)
    assert len(outputs) == result.attempts and len(requests) in (result.attempts, result.attempts + 1)
    schemas = [card_schema(r.sampling.max_tokens) for r in requests]
    assert all(
        r.purpose == "card" and r.json_schema == s and r.stop == [] for r, s in zip(requests, schemas, strict=True)
    )
    assert requests[0].messages[1].content.endswith("Write the character card of Mira as JSON.")
    assert "The story so far:\nTam, a sailor, came to the Drowned Lantern" in requests[0].messages[1].content
    for output, schema in zip(outputs, schemas, strict=False):
        if output.finish_reason == "stop":
            jsonschema.validate(json.loads(output.content, strict=False), schema)

    # The project's own import reads the card, and its PNG export carries it unchanged.
    path = tmp_path / "mira.json"
    path.write_text(json.dumps(card))
    imported = one_json_object(run("characters", "import", path, "--json"))
    assert imported["spec"] == "v3" and {f: imported[f] for f in CARD_FIELDS} == {
        f: card["data"][f] for f in CARD_FIELDS
    }
    character = parse_card(path.read_bytes()).character
    png = tmp_path / "mira.png"
    png.write_bytes(export_card(character, "v3-png"))
    from_png = one_json_object(run("characters", "import", png, "--json"))
    assert from_png == imported


async def test_raw_json_card_of_the_assistant_from_the_temporal_cli(
    chat: ChatClient, client: Client, settings: Settings
) -> None:
    workflow_id = f"cli-card-{uuid.uuid4().hex[:8]}"
    raw_job = {
        "job_id": workflow_id,
        "job_type": "chat_character",
        "messages": CONVERSATION[:2],
        "user_name": "Tam",
        "sampling": {"max_tokens": 150, "seed": 5},  # a small card: the pipeline, not the writing
        "deadline_seconds": 500,
    }
    await start_with_the_temporal_cli(settings, workflow_id, json.dumps(raw_job))
    # The card takes longer than the CLI's own wait allows on a loaded machine: the client waits, the CLI reads.
    await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), JOB_TIMEOUT)
    _, out, _ = await temporal_cli(settings, "workflow", "result", "--workflow-id", workflow_id, "--output", "json")
    outcome = json.loads(out)
    assert outcome["status"] == "COMPLETED", outcome
    # No `character`: the card is of the character the assistant plays, the assistant itself.
    assert_whole_card(outcome["result"], "Assistant")


async def test_a_bad_raw_card_job_fails_at_once_naming_the_field(chat: ChatClient, settings: Settings) -> None:
    for change, field in [
        ({"mode": "continue"}, "job.mode"),
        ({"character": "Nobody-At-All"}, "job.character"),
        ({"characters": ["Mira", "Theo"]}, "job.job_type"),
    ]:
        workflow_id = f"cli-bad-card-{uuid.uuid4().hex[:8]}"
        raw_job = {"job_id": workflow_id, "job_type": "chat_character", "messages": CONVERSATION, **change}
        outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw_job))
        printed = json.dumps(outcome)
        assert outcome["status"] == "FAILED" and "InvalidJob" in printed and f"{field}:" in printed, printed
