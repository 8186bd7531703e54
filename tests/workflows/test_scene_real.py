"""chat_scene end to end: through a real worker on the real Temporal dev server against the real model (SmolLM2),
submitted with ChatClient, as raw JSON with the `temporal` CLI and with the `chat` command. The model's writing is
weak; what is checked is the pipeline's guarantee: a typed scene, cleaned as promised, checked, retried."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from orchestrator.client import ChatClient
from orchestrator.settings import Settings
from tests.helpers import (
    arun,
    generate_requests,
    job,
    stack_env,
    start_and_wait_with_the_temporal_cli,
    temporal_cli,
    verdicts,
)
from workflows.models import ChatResult, ScenePrompt, SceneVerdict, Storyboard
from workflows.scenes import (
    CAPTION_CHARS,
    MAX_KEYWORDS,
    MAX_PROMPT_CHARS,
    PANEL_PROMPT_CHARS,
    SCENE_REASONS,
    STORYBOARD_TOKENS_PER_PANEL,
    SUBJECTS,
    rendered,
    storyboard_schema,
)

PREFIX = "watercolor, <lora:mira:0.7>"
MIRA = {
    "name": "Mira Vale",
    "nickname": "Mira",
    "description": "A tavern keeper in the harbour town of Saltmere.",
    "appearance": "Dark hair tied back with a strip of sailcloth, a scar across her left eyebrow, rolled sleeves.",
    "image_prompt_prefix": PREFIX,
}
CHAT = [
    {"role": "user", "content": "*shakes the rain off and walks to the bar* Evening, Mira. One ale, please."},
    {
        "role": "assistant",
        "content": '*Mira fills a mug and slides it across.* "Sit, Tam. You are soaked."',
    },
]
NAMES = re.compile(r"\b(?:mira|vale|tam)\b", re.IGNORECASE)


def assert_keywords(prompt: str, prefix: str = "") -> None:
    """A cleaned prompt: the prefix first, then keywords with no names, quotes or line breaks, bounded."""
    assert prompt.startswith(prefix)
    own = prompt.removeprefix(prefix).removeprefix(", ")
    keywords = own.split(", ")
    assert own and all(k.strip() == k and k for k in keywords), prompt
    assert len(keywords) <= MAX_KEYWORDS and len(own) <= MAX_PROMPT_CHARS
    assert len({k.casefold() for k in keywords}) == len(keywords)
    assert not NAMES.search(own) and not re.search('["“”\n*]', own), prompt


async def test_a_scene_prompt_of_the_character_on_the_real_model(chat: ChatClient, client: Client) -> None:
    submitted = job(
        job_type="chat_scene",
        scene={"mode": "character"},
        character=MIRA,
        messages=CHAT,  # the assistant's message last
        sampling={"max_tokens": 40, "seed": 3},
        deadline_seconds=300,
    )
    handle = await chat.submit(submitted)
    result = await handle.result()

    assert result.outcome in ("ok", "flagged") and 1 <= result.attempts <= 3
    assert isinstance(result.scene, ScenePrompt) and result.content == result.scene.prompt
    assert_keywords(result.scene.prompt, PREFIX)
    requests = await generate_requests(client, handle.id)
    assert len(requests) == result.attempts
    for request in requests:
        assert request.purpose == "scene" and request.json_schema is None
        assert "\nMira:" in request.stop and "\nTam:" in request.stop
        assert request.messages[-1].content.endswith("Only the comma-separated keywords.")
        assert "full-body portrait" in request.messages[-1].content
    checked = await verdicts(client, handle.id, "check_scene", SceneVerdict)
    assert len(checked) == result.attempts
    assert all(set(v.reasons) <= set(SCENE_REASONS) for v in checked)
    assert checked[result.returned_attempt - 1].scene == result.scene
    assert (result.outcome == "ok") == checked[result.returned_attempt - 1].valid
    # A rejected attempt is retried with a new seed.
    assert len({r.sampling.seed for r in requests}) == len(requests)


@pytest.mark.parametrize("mode", ["face", "last_message", "story", "background"])
async def test_each_other_scene_mode_on_the_real_model(chat: ChatClient, client: Client, mode: str) -> None:
    # The modes the tests above and below leave out (character, storyboard, user): each asks for its own subject
    # and comes back a cleaned prompt, the character's prefix first where the picture shows the character.
    submitted = job(
        job_type="chat_scene",
        scene={"mode": mode},
        character=MIRA,
        messages=CHAT,
        sampling={"max_tokens": 24, "seed": 5},
        deadline_seconds=300,
    )
    handle = await chat.submit(submitted)
    result = await handle.result()

    assert result.outcome in ("ok", "flagged") and isinstance(result.scene, ScenePrompt)
    assert result.content == result.scene.prompt
    assert_keywords(result.scene.prompt, "" if mode == "background" else PREFIX)
    subject = SUBJECTS[mode].replace("{{char}}", "Mira")  # the nickname, as the macros give it
    for request in await generate_requests(client, handle.id):
        assert request.purpose == "scene" and request.json_schema is None
        assert subject in request.messages[-1].content


async def test_a_raw_json_storyboard_from_the_temporal_cli(
    chat: ChatClient, client: Client, settings: Settings
) -> None:
    workflow_id = f"cli-scene-{uuid.uuid4().hex[:8]}"
    raw_job = {
        "job_id": workflow_id,
        "job_type": "chat_scene",
        "scene": {"mode": "storyboard", "panels": 2},
        "messages": [*CHAT, {"role": "user", "content": "*drinks and tells her about the shipwreck on the rocks*"}],
        "character": "Mira",
        "user_name": "Tam",
        "sampling": {"seed": 4},
        "deadline_seconds": 600,
    }
    start = ["workflow", "start", "--type", "ChatWorkflow", "--task-queue", settings.task_queue]
    code, _, err = await temporal_cli(settings, *start, "--workflow-id", workflow_id, "--input", json.dumps(raw_job))
    assert code == 0, err
    # Awaited by the client: a storyboard's generation outlasts the CLI helper's 60 s on a loaded machine.
    result = await asyncio.wait_for(client.get_workflow_handle(workflow_id, result_type=ChatResult).result(), 600)
    assert isinstance(result.scene, Storyboard) and len(result.scene.panels) == 2
    assert result.content == rendered(result.scene)
    for panel in result.scene.panels:
        assert_keywords(panel.prompt)
        assert len(panel.prompt) <= PANEL_PROMPT_CHARS and "\n" not in panel.caption
        assert 0 < len(panel.caption) <= CAPTION_CHARS + 1
    requests = await generate_requests(client, workflow_id)
    # The engine's grammar held SmolLM2 to the schema: exactly the panels asked for.
    assert all(r.json_schema == storyboard_schema(2) and r.purpose == "scene" and r.stop == [] for r in requests)
    assert requests[0].sampling.max_tokens == 2 * STORYBOARD_TOKENS_PER_PANEL


@pytest.mark.parametrize(
    ("scene", "field"),
    [
        ({"mode": "storyboard", "panels": 9}, "job.scene.panels"),
        ({"mode": "face", "panels": 2}, "job.scene.panels"),
        (None, "job.scene"),
    ],
)
async def test_a_bad_raw_scene_job_fails_at_once_naming_the_field(
    chat: ChatClient, settings: Settings, scene: dict, field: str
) -> None:
    workflow_id = f"cli-bad-scene-{uuid.uuid4().hex[:8]}"
    raw_job = {"job_id": workflow_id, "job_type": "chat_scene", "messages": CHAT, "scene": scene}
    outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw_job))
    assert outcome["status"] == "FAILED"
    printed = json.dumps(outcome)
    assert "InvalidJob" in printed and f"{field}:" in printed, printed


async def test_the_chat_command_prints_a_scene_prompt_of_the_user(
    chat: ChatClient, settings: Settings, tmp_path: Path
) -> None:
    history = tmp_path / "chat.json"
    history.write_text(json.dumps(CHAT))
    # arun: the session's worker shares this event loop, which a blocking subprocess.run would stall.
    done = await arun(
        "chat",
        "--character",
        "Mira",
        "--user-name",
        "Tam",
        "--scene-mode",
        "user",
        "--history-file",
        str(history),
        "--max-tokens",
        "48",
        "--seed",
        "2",
        # A generous deadline (the default is 120 s): a guard against a loaded machine, not a timing check.
        env=stack_env(settings) | {"CHAT_WORKER_JOB_DEADLINE_SECONDS": "600"},
        within_seconds=700,
    )
    assert done.returncode == 0, done.stderr
    [prompt] = done.stdout.splitlines()
    assert_keywords(prompt)  # the user's persona: no prefix of the character's
    assert re.search(r"\[(?:ok|flagged) · \d attempt", done.stderr)
