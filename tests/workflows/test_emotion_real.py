"""Emotion labels end to end: through a real worker on the real Temporal dev server against the real model
(SmolLM2, whose labels are whatever llama.cpp's grammar lets it pick: the tests check the pipeline, not the
choice), submitted with ChatClient and as raw JSON with the `temporal` CLI; the `chat` and `context` commands."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from characters.macros import fill_macros
from orchestrator.client import ChatClient
from orchestrator.settings import Settings
from tests.helpers import (
    arun,
    job,
    one_error_line,
    one_json_object,
    run,
    stack_env,
    start_and_wait_with_the_temporal_cli,
)
from workflows.emotion import EMOTION_SCHEMA, EMOTIONS, emotion_messages
from workflows.models import GenerateRequest, GenerateResult, Message
from workflows.prompts import REMINDERS

USER_TEXT = "*slumps onto a stool, eyes red* My brother never came home from the sea."
NOTE = "[Tam feels {emotion}; Mira notices it and responds to it.]"


async def generations(client: Client, workflow_id: str) -> list[tuple[GenerateRequest, GenerateResult]]:
    """Each generation the job ran, its request and its result, from its history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    requests: dict[int, GenerateRequest] = {}
    done = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            [value] = await client.data_converter.decode(
                list(event.activity_task_scheduled_event_attributes.input.payloads)
            )
            requests[event.event_id] = GenerateRequest.model_validate(value)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            [value] = await client.data_converter.decode(list(attributes.result.payloads))
            done.append((requests[attributes.scheduled_event_id], GenerateResult.model_validate(value)))
    return done


async def test_both_labels_come_from_constrained_generations_on_the_real_model(
    chat: ChatClient, client: Client
) -> None:
    submitted = job(
        messages=[{"role": "user", "content": USER_TEXT}],
        emotion={"of_user": True, "of_reply": True},
        sampling={"max_tokens": 16, "seed": 7},
        deadline_seconds=300,
    )
    handle = await chat.submit(submitted)
    result = await handle.result()

    assert result.content and result.emotion is not None
    assert result.emotion.user in EMOTIONS and result.emotion.reply in EMOTIONS
    ran = await generations(client, handle.id)
    purposes = [request.purpose for request, _ in ran]
    assert purposes == ["emotion", *["reply"] * result.attempts, "emotion"]
    (user_request, user_output), *replies, (reply_request, reply_output) = ran
    assert user_request.messages == emotion_messages(USER_TEXT)
    assert reply_request.messages == emotion_messages(result.content)
    for request, output in (ran[0], ran[-1]):
        assert request.json_schema == EMOTION_SCHEMA
        # The grammar held: the engine wrote the object, whose label is the result's.
        assert json.loads(output.content)["emotion"] in EMOTIONS
    assert json.loads(user_output.content)["emotion"] == result.emotion.user
    assert json.loads(reply_output.content)["emotion"] == result.emotion.reply
    # The user's label follows the user's message (none for neutral); after it, only a regeneration's reminders.
    note = (
        []
        if result.emotion.user == "neutral"
        else [Message(role="system", content=NOTE.format(emotion=result.emotion.user))]
    )
    reminders = {fill_macros(text, char="Mira", user="Tam") for text in REMINDERS.values()}
    for number, (request, _) in enumerate(replies, start=1):
        after_user = request.messages[[m.content for m in request.messages].index(USER_TEXT) + 1 :]
        assert after_user[: len(note)] == note
        added = after_user[len(note) :]
        assert all(m.role == "system" and m.content in reminders for m in added), added
        assert number > 1 or not added


async def test_raw_json_with_the_reply_label_from_the_temporal_cli(
    chat: ChatClient, client: Client, settings: Settings
) -> None:
    workflow_id = f"cli-emo-{uuid.uuid4().hex[:8]}"
    raw_job = {
        "job_id": workflow_id,
        "job_type": "chat_conversation",
        "messages": [{"role": "user", "content": "I finally passed my exam!"}],
        "emotion": {"of_reply": True},
        "sampling": {"max_tokens": 24, "seed": 3},
    }
    outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw_job))
    assert outcome["status"] == "COMPLETED", outcome
    emotion = outcome["result"]["emotion"]
    assert emotion["reply"] in EMOTIONS and emotion["user"] is None
    assert [request.purpose for request, _ in await generations(client, workflow_id)][-1] == "emotion"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"emotion": {"of_user": True}, "job_type": "chat_enhance"}, "job.emotion"),
        ({"emotion": {"of_reply": "yes"}}, "job.emotion.of_reply"),
        ({"emotion": {"of_user": True}, "characters": ["Mira", {"name": "Bram"}], "character": None}, "job.emotion"),
    ],
)
async def test_a_bad_raw_emotion_fails_at_once_naming_the_field(
    chat: ChatClient, settings: Settings, change: dict, field: str
) -> None:
    workflow_id = f"cli-bad-emo-{uuid.uuid4().hex[:8]}"
    raw_job = {"job_id": workflow_id, "messages": [{"role": "user", "content": USER_TEXT}], "character": "Mira"}
    outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw_job | change))
    assert outcome["status"] == "FAILED"
    printed = json.dumps(outcome)
    assert "InvalidJob" in printed and f"{field}:" in printed, printed


async def test_chat_with_emotion_shows_both_labels(chat: object, settings: Settings) -> None:
    flags = ["--character", "Mira", "--user-name", "Tam", "--max-tokens", "16", "--seed", "5", "--emotion"]
    done = await arun("chat", "--message", USER_TEXT, *flags, env=stack_env(settings))
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "emotion: " in line]
    labels = line.split("emotion: ")[1].rstrip("]").split(", ")
    assert [label.split(" ")[0] for label in labels] == ["user", "reply"]
    assert all(label.split(" ")[1] in EMOTIONS for label in labels)


def test_chat_with_emotion_in_a_group_is_refused_naming_the_field() -> None:
    done = run("chat", "--character", "Mira", "--character", "Theo Marlowe", "--message", "hi", "--emotion")
    one_error_line(done, "job.emotion")


def test_the_context_command_shows_the_users_emotion_note(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    raw = {"job_id": "ctx", "messages": [{"role": "user", "content": USER_TEXT}], "character": "Mira"}
    path.write_text(json.dumps(raw | {"user_name": "Tam", "emotion": {"of_user": True}}))
    built = one_json_object(run("context", "--job-file", str(path), "--user-emotion", "grief"))
    assert built["insertions"][-1] == {"kind": "user_emotion", "label": "user_emotion", "message": 2, "depth": 0}
    assert built["messages"][-1] == {"role": "system", "content": NOTE.format(emotion="grief"), "name": None}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(raw))
    one_error_line(run("context", "--job-file", str(plain), "--user-emotion", "grief"), "--user-emotion")
