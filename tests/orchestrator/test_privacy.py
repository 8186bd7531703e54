"""Private at rest, on the real dev server and the real model: with a keys file, a job's text is nowhere in
Temporal's history, its SQLite file, the `temporal` CLI's output or the logs, yet the backend reads the result,
the stream and the status, and ops read the job through the codec server. Keys rotate."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from orchestrator.client import ChatClient, connect
from orchestrator.codec import UnknownKeyId, new_key_line, read_keys
from orchestrator.codec_server import codec_server_running
from orchestrator.devstack import temporal_binary
from orchestrator.settings import Settings
from tests.helpers import job, worker_against
from workflows.models import ChatJob


def phrase() -> str:
    return f"velvet-lantern-{uuid.uuid4().hex[:10]}"


def keys_file(tmp_path: Path, *key_ids: str, lines: dict[str, str] | None = None) -> Path:
    path = tmp_path / f"keys-{'-'.join(key_ids)}"
    known = lines if lines is not None else {}
    path.write_text("".join(known.get(key_id) or new_key_line(key_id) + "\n" for key_id in key_ids))
    return path


def private_job(secret: str, **overrides: object) -> ChatJob:
    return job(
        messages=[{"role": "user", "content": f"*whispers* the password is {secret}. Remember it?"}], **overrides
    )


async def show(settings: Settings, namespace: str, job_id: str, codec_endpoint: str | None = None) -> str:
    """`temporal workflow show` as ops run it; async, so that an in-process codec server can answer it."""
    command = ["workflow", "show", "--address", settings.temporal_address, "--namespace", namespace]
    command += ["--workflow-id", f"chat-{job_id}", "--output", "json"]
    if codec_endpoint:
        command += ["--codec-endpoint", codec_endpoint]
    process = await asyncio.create_subprocess_exec(
        str(temporal_binary()), *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode()


def readable(node: object) -> bytes:
    """All of a `temporal … --output json` document as bytes, each payload's base64 `data` decoded, so that
    text inside a payload is found as it is."""
    if isinstance(node, dict) and isinstance(node.get("metadata"), dict):  # a payload: all of it base64
        parts = [node.get("data", ""), *node["metadata"].values()]
        return b" ".join(base64.b64decode(part) for part in parts if isinstance(part, str))
    if isinstance(node, dict):
        return b"".join(readable(value) for value in node.values())
    if isinstance(node, list):
        return b"".join(readable(item) for item in node)
    return str(node).encode()


def stored_bytes(settings: Settings) -> bytes:
    """Everything the dev server wrote to its SQLite database, write-ahead log included."""
    return b"".join(path.read_bytes() for path in settings.state_dir.glob("temporal.db*"))


def windows_new_to(stored: bytes, text: str, width: int = 24) -> list[bytes]:
    """`text`'s windows of `width` characters as a JSON payload holds it (a quote, a backslash or a control
    character escaped), as UTF-8, that `stored` does not hold. The session's database holds other jobs' text in
    plain, and a reply may open with words of its prompt (SmolLM2 echoes "Mira, in the scene with"), which every
    such job stores: only what was not there before a job can show that job's text. A text shorter than `width` is
    its own one window."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    width = min(width, len(escaped))
    windows = {escaped[i : i + width] for i in range(len(escaped) - width + 1)}
    return sorted(w.encode() for w in windows if w.encode() not in stored)


@pytest.fixture
async def encrypted(
    settings: Settings, isolated_namespace: str, tmp_path: Path
) -> AsyncIterator[tuple[ChatClient, Path]]:
    keys = keys_file(tmp_path, "key-a")
    async with worker_against(
        settings, isolated_namespace, settings.inference_base_url, payload_keys_file=keys
    ) as chat:
        yield chat, keys


async def test_a_private_job_completes_and_its_text_is_stored_only_encrypted(
    encrypted: tuple[ChatClient, Path], settings: Settings, isolated_namespace: str, all_logs: list[str]
) -> None:
    chat, keys = encrypted
    secret = phrase()
    submitted = private_job(secret)
    stored_before = stored_bytes(settings)
    await chat.submit(submitted)
    events = [event async for event in chat.stream(submitted.job_id)]
    result = await chat.result(submitted.job_id)
    status = await chat.status(submitted.job_id)

    assert events[-1].type == "done" and events[-1].result == result
    assert len(result.content) >= 10 and status.stage == "done"
    reply = result.content[:24]
    # As a JSON payload holds it: a quote, a backslash or a newline escaped.
    stored_reply = json.dumps(reply, ensure_ascii=False)[1:-1].encode()
    history = readable(json.loads(await show(settings, isolated_namespace, submitted.job_id)))
    assert secret.encode() not in history and stored_reply not in history
    assert b"binary/encrypted" in history and b"key-a" in history
    stored = stored_bytes(settings)
    novel = windows_new_to(stored_before, result.content)
    assert novel, "every part of the reply was in the database before the job"
    assert secret.encode() not in stored and not [window for window in novel if window in stored]
    logged = "\n".join(all_logs)
    assert submitted.job_id in logged  # the worker did log this job
    assert secret not in logged and reply not in logged
    # What stays plain: ids and search attributes, free of chat text.
    description = await chat.handle(submitted.job_id).describe()
    attributes = json.dumps({k: list(v) for k, v in description.search_attributes.items()}, default=str)
    assert secret not in attributes and secret not in description.id
    assert "Mira" in attributes

    async with codec_server_running(read_keys(keys), port=0) as codec:
        decoded = readable(json.loads(await show(settings, isolated_namespace, submitted.job_id, codec)))
    assert secret.encode() in decoded and stored_reply in decoded


async def test_chat_text_is_logged_only_when_asked_for(
    settings: Settings, isolated_namespace: str, all_logs: list[str]
) -> None:
    secret = phrase()
    async with worker_against(settings, isolated_namespace, settings.inference_base_url, log_chat_text=True) as chat:
        submitted = private_job(secret)
        result = await (await chat.submit(submitted)).result()
    logged = "\n".join(all_logs)
    assert secret in logged and result.content in logged


async def test_rotation_keeps_old_jobs_readable_and_a_removed_key_is_named(
    settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    a_line, b_line = new_key_line("key-a") + "\n", new_key_line("key-b") + "\n"
    only_a, b_then_a, only_b = tmp_path / "a", tmp_path / "ba", tmp_path / "b"
    only_a.write_text(a_line)
    b_then_a.write_text(b_line + a_line)
    only_b.write_text(b_line)
    base = settings.inference_base_url
    old = private_job(phrase())
    async with worker_against(settings, isolated_namespace, base, payload_keys_file=only_a) as chat:
        await (await chat.submit(old)).result()

    new = private_job(phrase())
    async with worker_against(settings, isolated_namespace, base, payload_keys_file=b_then_a) as chat:
        new_result = await (await chat.submit(new)).result()
        assert (await chat.result(old.job_id)).job_id == old.job_id
        history = await chat.handle(new.job_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
        assert started.metadata["encryption-key-id"] == b"key-b"
    assert new_result.content

    async with worker_against(settings, isolated_namespace, base, payload_keys_file=only_b) as chat:
        assert (await chat.result(new.job_id)).job_id == new.job_id
        with pytest.raises(Exception, match="key-a"):
            await chat.result(old.job_id)


async def test_a_job_the_worker_cannot_decrypt_fails_at_once_naming_the_key_id(
    settings: Settings, isolated_namespace: str, tmp_path: Path
) -> None:
    only_a, only_b = keys_file(tmp_path, "key-a"), keys_file(tmp_path, "key-b")
    async with worker_against(
        settings, isolated_namespace, settings.inference_base_url, payload_keys_file=only_b
    ) as worker_side:
        backend_settings = worker_side.settings.model_copy(update={"payload_keys_file": only_a})
        backend = ChatClient(await connect(backend_settings), backend_settings)
        submitted = private_job(phrase())
        await backend.submit(submitted)
        # The backend holds only key A: it cannot read the worker's failure, encrypted under key B.
        with pytest.raises(UnknownKeyId, match="key-b"):
            await backend.result(submitted.job_id)
        with pytest.raises(WorkflowFailureError) as failure:
            await worker_side.result(submitted.job_id)
        cause = failure.value.cause
        assert getattr(cause, "type", None) == "InvalidJob"
        assert "key-a" in str(getattr(cause, "message", cause))
