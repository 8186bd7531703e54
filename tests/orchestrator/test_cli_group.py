"""The offline commands with group scenes: `context --speaker` gives the prompt the worker sends that member,
`validate --other` cuts another member's lines, `schema` has the group fields."""

from __future__ import annotations

import json
import os
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from orchestrator.settings import Settings
from orchestrator.tokens import GgufCounter, smollm2_gguf
from tests.helpers import one_error_line, one_json_object, run
from workflows.activities import JobActivities
from workflows.models import ChatJob, JobLimits, PrepareRequest
from workflows.policy import Policy

GROUP_JOB = {
    "job_id": "g1",
    "messages": [
        {"role": "user", "content": "Evening, Mira. Evening, Bram."},
        {"role": "assistant", "content": "*Mira waves.* Evening, Tam!", "name": "Mira"},
    ],
    "user_name": "Tam",
    "characters": ["Mira", {"name": "Bram Holt", "nickname": "Bram", "description": "A gruff blacksmith."}],
    "group": {"strategy": "list", "card_mode": "join"},
}


def group_job_file(tmp_path: Path, job: dict = GROUP_JOB) -> str:
    path = tmp_path / "group.json"
    path.write_text(json.dumps(job))
    return str(path)


async def test_context_of_a_group_job_is_the_speakers_prompt_prepare_sends(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    printed = one_json_object(run("context", "--job-file", group_job_file(tmp_path), "--speaker", "bram holt", env=env))
    system = printed["messages"][0]["content"]
    assert "Character: Mira" in system and "Character: Bram Holt" in system  # join
    assert printed["messages"][-1]["content"] == "[Write the next reply only as Bram.]"
    assert printed["stop"][0] == "\nTam:" and printed["stop"][-1] == "\nMira:"
    assert [i["kind"] for i in printed["insertions"]][-1] == "group_nudge"

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    engine = settings.engine_limits
    activities = JobActivities(JobLimits(), engine, GgufCounter(smollm2_gguf(settings)), Policy())
    job = ChatJob.model_validate(GROUP_JOB)
    prepared = await ActivityEnvironment().run(activities.prepare, PrepareRequest(job=job, speaker="Bram Holt"))
    assert printed["messages"] == [m.model_dump() for m in prepared.context.messages]
    assert printed["stop"] == prepared.context.stop
    assert prepared.character is not None and prepared.character.name == "Bram Holt"
    assert prepared.others == ["Mira"]
    # Without --speaker: the first member's.
    first = one_json_object(run("context", "--job-file", group_job_file(tmp_path), env=env))
    assert first["messages"][-1]["content"] == "[Write the next reply only as Mira.]"


def test_context_group_errors_are_one_line(tmp_path: Path) -> None:
    path = group_job_file(tmp_path)
    one_error_line(run("context", "--job-file", path, "--speaker", "Odo"), "--speaker", "not a member")
    unknown = {**GROUP_JOB, "characters": ["Mira", "Nobody"], "messages": GROUP_JOB["messages"][:1]}
    one_error_line(run("context", "--job-file", group_job_file(tmp_path, unknown)), "job.characters.1", "Nobody")
    one_error_line(
        run("context", "--job-file", group_job_file(tmp_path, {**GROUP_JOB, "group": {"strategy": "manual"}})),
        "job.group.speakers",
    )
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"job_id": "s", "character": "Mira", "messages": [{"role": "user", "content": "hi"}]}))
    one_error_line(run("context", "--job-file", str(single), "--speaker", "Mira"), "--speaker")


def test_validate_cuts_another_members_lines(tmp_path: Path) -> None:
    reply = "*Mira sets down a mug of cider for Tam.* On the house tonight.\nBram: And one for me!"
    base = ["validate", "--job-type", "chat_roleplay", "--reply-file", "-", "--char-name", "Mira", "--user-name", "Tam"]
    alone = one_json_object(run(*base, stdin=reply))
    assert "speaks_for_user" not in alone["reasons"]
    grouped = one_json_object(run(*base, "--other", "Bram Holt", stdin=reply))
    assert "speaks_for_user" in grouped["reasons"] and "Bram" not in grouped["cleaned"]


def test_schema_has_the_group_fields() -> None:
    schemas = one_json_object(run("schema"))
    job = schemas["ChatJob"]
    assert {"characters", "group"} <= set(job["properties"])
    group = job["$defs"]["GroupSettings"]["properties"]
    assert group["strategy"]["enum"] == ["natural", "list", "pooled", "manual"]
    assert group["card_mode"]["enum"] == ["swap", "join"] and "allow_self_responses" in group
    assert "talkativeness" in job["$defs"]["Character"]["properties"]
    assert "name" in job["$defs"]["Message"]["properties"]
    result = schemas["ChatResult"]
    assert set(result["$defs"]["GroupReply"]["properties"]) == {"speaker", "content", "reasons", "attempts"}
    assert "speaker" in schemas["StreamEvent"]["$defs"]["DeltaEvent"]["properties"]
