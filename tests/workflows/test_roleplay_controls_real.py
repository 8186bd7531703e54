"""Impersonate and the author's note end to end: through a real worker on the real Temporal dev server against
the real model, submitted with ChatClient and as raw JSON with the `temporal` CLI; the `context` command."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from characters import bundled_character
from orchestrator.client import ChatClient
from orchestrator.settings import Settings
from tests.helpers import USER_TEXT, generate_requests, job, run, start_and_wait_with_the_temporal_cli, verdicts
from workflows.context import build_context, estimate_tokens, stop_sequences
from workflows.models import AUTHOR_NOTE_CHARS, Message
from workflows.validation import labelled_turn_start

GREETING = '*Mira looks up from the ledger.* "One room left, under the eaves. Two silver, paid up front."'
NOTE = "[Author's note: a storm is coming; {{char}} keeps glancing at the window.]"
FILLED_NOTE = "[Author's note: a storm is coming; Mira keeps glancing at the window.]"
CONVERSATION = [
    {"role": "user", "content": USER_TEXT},
    {"role": "assistant", "content": GREETING},
    {"role": "user", "content": "*sets two coins on the counter* I'll take it. Has anyone asked after me?"},
    {"role": "assistant", "content": '"A tall man in a grey cloak, this morning," Mira says, sliding the key across.'},
    {"role": "user", "content": "*frowns* Did he leave a name?"},
]


async def test_an_impersonation_writes_the_users_next_message_on_the_real_model(
    chat: ChatClient, client: Client
) -> None:
    submitted = job(
        mode="impersonate",
        messages=CONVERSATION[:2],
        user_description="Tam, a tired sailor looking for a bed and for news of his brother.",
        sampling={"max_tokens": 48, "seed": 5},
        deadline_seconds=300,
    )
    handle = await chat.submit(submitted)
    result = await handle.result()

    assert result.outcome in ("ok", "flagged") and result.content and 1 <= result.attempts <= 3
    # The character's lines are never in the user's message; the user's own are never "speaking for the user".
    assert labelled_turn_start(result.content, ("Mira", "{{char}}")) is None
    assert not {"speaks_for_user", "short"} & set(result.reasons)
    requests = await generate_requests(client, handle.id)
    assert len(requests) == result.attempts
    for request in requests:
        assert request.stop == stop_sequences("Mira", generic=())
        assert request.messages[-1].role == "system"
        assert request.messages[-1].content.startswith("[Write Tam's next message in this chat, as Tam would")
        assert request.messages[1:3] == submitted.messages
    checked = await verdicts(client, handle.id)
    assert [v.cleaned for v in checked][result.returned_attempt - 1] == result.content


async def test_the_author_notes_copies_go_where_the_prompt_assembly_puts_them_on_the_real_model(
    chat: ChatClient, client: Client
) -> None:
    submitted = job(
        messages=CONVERSATION,
        author_note={"text": NOTE, "depth": 4, "every": 2},
        sampling={"max_tokens": 48, "seed": 6},
        deadline_seconds=300,
    )
    handle = await chat.submit(submitted)
    result = await handle.result()
    assert result.outcome in ("ok", "flagged") and len(result.content) >= 10

    [first, *_] = await generate_requests(client, handle.id)
    mira = bundled_character("Mira")
    # The budget holds the whole chat either way: the history as the pure assembly lays it out (the system
    # message's example dialogue depends on the room left).
    assert first.messages[1:] == build_context(submitted, mira, budget=100_000, count=estimate_tokens).messages[1:]
    note = Message(role="system", content=FILLED_NOTE)
    # The second user message (every 2) put one copy in, before Mira's reply to the first (depth 4 goes no further
    # back than the message after the previous user message).
    assert [i for i, m in enumerate(first.messages) if m == note] == [2]
    assert first.messages[1:2] == [Message(**CONVERSATION[0])] and first.messages[3:] == submitted.messages[1:]
    assert FILLED_NOTE not in first.messages[0].content


async def test_raw_json_impersonation_with_an_author_note_from_the_temporal_cli(
    chat: ChatClient, client: Client, settings: Settings
) -> None:
    workflow_id = f"cli-imp-{uuid.uuid4().hex[:8]}"
    raw_job = {
        "job_id": workflow_id,
        "mode": "impersonate",
        "messages": CONVERSATION[:4],
        "character": "Mira",
        "user_name": "Tam",
        "author_note": {"text": NOTE, "depth": 0},
        "sampling": {"max_tokens": 40, "seed": 2},
    }
    outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw_job))
    assert outcome["status"] == "COMPLETED", outcome
    assert outcome["result"]["job_id"] == workflow_id and outcome["result"]["content"]
    [request, *_] = await generate_requests(client, workflow_id)
    note = Message(role="system", content=FILLED_NOTE)
    # Depth 0: a copy after each user message; the impersonate instruction last.
    assert [i for i, m in enumerate(request.messages) if m == note] == [2, 5]
    assert request.messages[-1].content.startswith("[Write Tam's next message")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"author_note": {"text": NOTE, "depth": -1}}, "job.author_note.depth"),
        ({"author_note": {"text": NOTE, "every": 0}}, "job.author_note.every"),
        ({"author_note": {"text": "x" * (AUTHOR_NOTE_CHARS + 1)}}, "job.author_note.text"),
        ({"author_note": {"text": NOTE, "where": "top"}}, "job.author_note.where"),
        ({"mode": "impersonate"}, "job.messages"),  # the last message is the user's
        ({"mode": "impersonate", "job_type": "chat_enhance", "messages": CONVERSATION[:2]}, "job.mode"),
    ],
)
async def test_a_bad_raw_impersonation_or_author_note_fails_at_once_naming_the_field(
    chat: ChatClient, settings: Settings, change: dict, field: str
) -> None:
    workflow_id = f"cli-bad-{uuid.uuid4().hex[:8]}"
    raw_job = {"job_id": workflow_id, "messages": CONVERSATION[:1], "character": "Mira", **change}
    outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw_job))
    assert outcome["status"] == "FAILED"
    printed = json.dumps(outcome)
    assert "InvalidJob" in printed and f"{field}:" in printed, printed


def test_the_context_command_shows_the_notes_copies_and_the_impersonate_instruction(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    raw = {"job_id": "ctx", "mode": "impersonate", "messages": CONVERSATION[:4], "character": "Mira"}
    path.write_text(json.dumps(raw | {"user_name": "Tam", "author_note": {"text": NOTE, "every": 1}}))
    done = run("context", "--job-file", str(path))
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    kinds = [(i["kind"], i["message"], i["depth"]) for i in built["insertions"]]
    # depth 4: the first copy at the chat's start, the second before Mira's reply to the first user message.
    assert kinds == [("author_note", 1, 4), ("author_note", 3, 3), ("impersonate_instruction", 7, 0)]
    assert built["messages"][1]["content"] == built["messages"][3]["content"] == FILLED_NOTE
    assert built["stop"] == ["\nMira:", "\n**Mira:**", "\n**Mira**:"]
