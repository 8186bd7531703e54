"""Speech-ready text end to end: jobs with `speech` through a real worker on the real Temporal dev server against
the real model (SmolLM2-135M), submitted with ChatClient and as raw JSON with the `temporal` CLI. The tests check
the pipeline (the returned reply's segments, speakers, voices, sizes, the markers gone), not the model's writing."""

from __future__ import annotations

import asyncio
import json
import uuid

import jsonschema
import pytest
from temporalio.client import Client

from characters import Character
from orchestrator.client import ChatClient
from orchestrator.settings import Settings
from tests.helpers import job, start_and_wait_with_the_temporal_cli, stored_result
from workflows.models import SPEECH_SEGMENT_CHARS, ChatResult, SpeechSegment
from workflows.speech import speech_segments, voice_of

MIRA = Character(
    name="Mira",
    description="A sharp-tongued tavern keeper in a harbour town.",
    first_mes='*Mira looks up from the bar.* "Shut that door, you let the rain in."',
    voice="alto-2",
)
BRAM = {"name": "Bram Holt", "nickname": "Bram", "description": "A gruff blacksmith.", "voice": "bass-1"}
MARKERS = set('*"“”«»„「」『』')


def alnum(text: str) -> str:
    return "".join(char for char in text if char.isalnum())


def a_subsequence(part: str, whole: str) -> bool:
    rest = iter(whole)
    return all(char in rest for char in part)


def assert_segments_of(content: str, segments: list[SpeechSegment], speaker: str, voice: str | None) -> None:
    """The segments are the reply's words, in order, in the speaker's voice, marker-free and short enough."""
    for segment in segments:
        assert (segment.speaker, segment.voice) == (speaker, voice)
        assert segment.kind in ("dialogue", "narration") and segment.text == segment.text.strip() and segment.text
        assert len(segment.text) <= SPEECH_SEGMENT_CHARS and not MARKERS & set(segment.text)
    assert a_subsequence(alnum(" ".join(s.text for s in segments)), alnum(content))
    assert bool(segments) == bool(alnum(content))  # SmolLM2's replies carry no emoji-only or code-only text


async def test_a_roleplay_reply_comes_with_its_speech_segments_on_the_real_model(chat: ChatClient) -> None:
    submitted = job(character=MIRA, speech=True, sampling={"max_tokens": 48, "seed": 11}, deadline_seconds=300)
    result: ChatResult = await (await chat.submit(submitted)).result()

    assert result.content and result.speech is not None
    assert_segments_of(result.content, result.speech, "Mira", "alto-2")
    # The workflow split the reply it returned, in the profile's voice.
    assert result.speech == speech_segments(result.content, voice_of(MIRA))


async def test_a_raw_json_group_round_with_speech_from_the_temporal_cli(
    chat: ChatClient, client: Client, settings: Settings, schemas: dict
) -> None:
    workflow_id = f"cli-speech-{uuid.uuid4().hex[:8]}"
    raw = {
        "job_id": workflow_id,
        "messages": [{"role": "user", "content": "*shakes off the rain* Evening, Mira. Evening, Bram."}],
        "user_name": "Tam",
        "characters": [MIRA.model_dump(include={"name", "description", "voice"}), BRAM],
        "group": {"strategy": "list"},
        "speech": True,
        "sampling": {"max_tokens": 32, "seed": 4},
        "deadline_seconds": 300,
    }
    jsonschema.validate(raw, schemas["ChatJob"])
    outcome = await start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw))
    assert outcome["status"] == "COMPLETED", json.dumps(outcome)[:1500]
    payload = await stored_result(client, workflow_id)
    jsonschema.validate(payload, schemas["ChatResult"])
    result = ChatResult.model_validate(payload)
    assert (outcome["result"]["speech"] or []) == payload["speech"]
    assert result.replies and result.speech is not None
    members = {"Mira": MIRA, "Bram Holt": Character.model_validate(BRAM)}
    # Every reply's segments, in the round's order, each in its member's voice.
    remaining = list(result.speech)
    for reply in result.replies:
        count = next((i for i, s in enumerate(remaining) if s.speaker != reply.speaker), len(remaining))
        mine, remaining = remaining[:count], remaining[count:]
        member = members[reply.speaker]
        assert_segments_of(reply.content, mine, reply.speaker, member.voice)
        assert mine == speech_segments(reply.content, voice_of(member))
    assert remaining == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"job_type": "chat_enhance"}, "needs a job type whose reply is spoken"),
        (
            {
                "mode": "impersonate",
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hm."}],
            },
            "an impersonation is the user's message",
        ),
    ],
)
async def test_a_raw_job_asking_speech_where_nothing_is_spoken_fails_naming_the_field(
    chat: ChatClient, settings: Settings, change: dict, why: str
) -> None:
    workflow_id = f"cli-bad-speech-{uuid.uuid4().hex[:8]}"
    raw = {"job_id": workflow_id, "messages": [{"role": "user", "content": "hi"}], "speech": True, **change}
    outcome = await asyncio.wait_for(start_and_wait_with_the_temporal_cli(settings, workflow_id, json.dumps(raw)), 60)
    assert outcome["status"] == "FAILED"
    printed = json.dumps(outcome)
    assert "InvalidJob" in printed and f"job.speech: {why}" in printed, printed
