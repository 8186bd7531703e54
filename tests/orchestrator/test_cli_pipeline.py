"""The offline pipeline commands as scripts use them: ONE JSON object on stdout, or one `error:` line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from bench.prefix_reuse import bench_character, roleplay
from orchestrator.settings import Settings
from orchestrator.tokens import GgufCounter, smollm2_gguf
from tests.helpers import ROOT, SHARED, one_error_line, one_json_object, run
from workflows.activities import JobActivities
from workflows.context import REPLAYS
from workflows.models import ChatJob, EngineLimits, JobLimits, PrepareRequest
from workflows.policy import Policy

SERAPHINA = SHARED / "cards" / "default_Seraphina.png"


def test_validate_prints_the_verdict(tmp_path: Path) -> None:
    reply = tmp_path / "reply.txt"
    reply.write_text('*smiles* "Sit by the fire, the storm is bad tonight."\nTam: Thanks!')
    verdict = one_json_object(
        run(
            "validate",
            "--job-type",
            "chat_roleplay",
            "--reply-file",
            str(reply),
            "--char-name",
            "Mira",
            "--user-name",
            "Tam",
        )
    )
    assert verdict == {
        "valid": True,
        "reasons": ["speaks_for_user"],
        "cleaned": '*smiles* "Sit by the fire, the storm is bad tonight."',
    }


def test_validate_in_mode_impersonate_checks_the_users_message() -> None:
    message = 'Tam: *sets two coins down* "I\'ll take it."\nMira: "Welcome."'
    names = ["--char-name", "Mira", "--user-name", "Tam"]
    verdict = one_json_object(
        run(
            "validate",
            "--job-type",
            "chat_roleplay",
            "--reply-file",
            "-",
            *names,
            "--mode",
            "impersonate",
            stdin=message,
        )
    )
    assert verdict == {
        "valid": True,
        "reasons": ["speaks_for_character"],
        "cleaned": '*sets two coins down* "I\'ll take it."',
    }
    as_reply = one_json_object(
        run("validate", "--job-type", "chat_roleplay", "--reply-file", "-", *names, stdin=message)
    )
    assert "speaks_for_user" in as_reply["reasons"]


def test_validate_reads_stdin_history_and_finish_reason(tmp_path: Path) -> None:
    earlier = "The storm rolls in over the harbour while gulls scream above the masts of the fishing boats."
    history = tmp_path / "history.json"
    history.write_text(
        json.dumps(
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": earlier},
                {"role": "user", "content": "and?"},
            ]
        )
    )
    verdict = one_json_object(
        run(
            "validate",
            "--job-type",
            "chat_conversation",
            "--reply-file",
            "-",
            "--history-file",
            str(history),
            "--finish-reason",
            "length",
            stdin=earlier + " And then the",
        )
    )
    assert verdict["valid"] is False and "echoes_history" in verdict["reasons"] and "cut_off" in verdict["reasons"]
    assert verdict["cleaned"] == earlier


def test_an_invalid_verdict_still_exits_zero() -> None:
    verdict = one_json_object(run("validate", "--job-type", "chat_roleplay", "--reply-file", "-", stdin="ok"))
    assert verdict == {"valid": False, "reasons": ["too_short"], "cleaned": "ok"}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--job-type", "chat_poetry", "--reply-file", "-"], ["--job-type", "chat_poetry"]),
        (["--job-type", "chat_roleplay"], ["--reply-file"]),
        (["--job-type", "chat_roleplay", "--reply-file", "/no/such/file"], ["/no/such/file", "cannot read"]),
        (["--job-type", "chat_roleplay", "--reply-file", "-", "--finish-reason", "eos"], ["--finish-reason"]),
    ],
)
def test_validate_bad_arguments_are_one_error_line(args: list[str], fragments: list[str]) -> None:
    one_error_line(run("validate", *args, stdin="hello there"), *fragments)


@pytest.mark.parametrize(
    ("history", "named"), [('[{"role": "narrator", "content": "x"}]', "history.0.role"), ("[{", "not valid JSON")]
)
def test_validate_bad_history_file_names_the_problem(tmp_path: Path, history: str, named: str) -> None:
    path = tmp_path / "history.json"
    path.write_text(history)
    args = ["validate", "--job-type", "chat_roleplay", "--reply-file", "-", "--history-file", str(path)]
    one_error_line(run(*args, stdin="hello there"), named)


def job_file(tmp_path: Path, message: str, **fields: object) -> str:
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps({"job_id": "c1", "messages": [{"role": "user", "content": message}], "user_name": "Tam", **fields})
    )
    return str(path)


def test_context_with_seraphina_brings_in_the_lorebook_entry_her_key_names(tmp_path: Path) -> None:
    named = one_json_object(
        run("context", "--job-file", job_file(tmp_path, "Are there SHADOWFANGS near?"), "--card", str(SERAPHINA))
    )
    assert named["lorebook"] == ["1"]
    system = named["messages"][0]["content"]
    assert 'Tam: "What are Shadowfangs?"' in system and "Seraphina" in system and "{{" not in system
    assert set(named) >= {"messages", "prompt_tokens", "budget", "lorebook", "dropped"}
    assert named["dropped"] == {"history_messages": 0, "examples": 0, "lorebook_entries": 0}
    assert named["prompt_tokens"] <= named["budget"]
    assert named["insertions"] == [{"kind": "lorebook", "label": "1", "message": 0, "depth": None}]
    assert named["window"]["first_message"] == named["window"]["laid_at"] == 0

    unnamed = one_json_object(
        run("context", "--job-file", job_file(tmp_path, "Good morning."), "--card", str(SERAPHINA))
    )
    assert unnamed["lorebook"] == [] and "What are Shadowfangs?" not in unnamed["messages"][0]["content"]


def long_job_file(tmp_path: Path) -> str:
    """A conversation of 40 exchanges ending on "last"."""
    messages = []
    for i in range(40):
        messages += [
            {"role": "user", "content": f"question {i} " * 8},
            {"role": "assistant", "content": f"answer {i} " * 8},
        ]
    messages.append({"role": "user", "content": "last"})
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"job_id": "c2", "job_type": "chat_conversation", "messages": messages}))
    return str(path)


def test_context_trims_history_to_the_limits_given(tmp_path: Path) -> None:
    built = one_json_object(
        run("context", "--job-file", long_job_file(tmp_path), "--max-input-tokens", "400", "--max-total-tokens", "1000")
    )
    assert built["budget"] == 400 - 32 and built["prompt_tokens"] <= built["budget"]
    assert built["dropped"]["history_messages"] > 0 and built["messages"][-1]["content"] == "last"


def test_context_shows_each_insertion_with_its_depth(tmp_path: Path) -> None:
    book = {
        "scan_depth": 2,
        "entries": [{"keys": ["lighthouse"], "content": "@@depth 2\nThe lamp is dark.", "name": "lighthouse"}],
    }
    character = {
        "name": "Orrin",
        "character_book": book,
        "post_history_instructions": "Stay terse.",
        "extensions": {"depth_prompt": {"prompt": "Orrin hides the key.", "depth": 3, "role": "system"}},
    }
    said = ["Evening.", "Evening to you.", "Is the ferry running?", "Not tonight.", "And the lighthouse?"]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(said)]
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"job_id": "c3", "messages": messages, "character": character, "user_name": "Tam"}))
    built = one_json_object(run("context", "--job-file", str(path)))
    # The prompt's front was laid at the first message; the entry fired after it: it goes in at its depth.
    assert built["window"]["laid_at"] == 0 and built["window"]["first_message"] == 0
    contents = [m["content"] for m in built["messages"]]
    assert built["insertions"] == [
        {"kind": "character_note", "label": "character_note", "message": 3, "depth": 3},
        {"kind": "lorebook", "label": "lighthouse", "message": 5, "depth": 2},
        {"kind": "post_history_instructions", "label": "post_history_instructions", "message": 8, "depth": 0},
    ]
    assert contents[3] == "Orrin hides the key." and contents[5] == "The lamp is dark." and contents[8] == "Stay terse."
    assert contents[6:8] == ["Not tonight.", "And the lighthouse?"] and "lamp" not in contents[0]
    assert built["lorebook"] == ["lighthouse"]


def test_context_takes_the_low_water_mark_from_the_environment(tmp_path: Path) -> None:
    path = long_job_file(tmp_path)
    limits = ["--max-input-tokens", "400", "--max-total-tokens", "1000"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    for share in ("0.5", "0.8"):
        built = one_json_object(
            run("context", "--job-file", path, *limits, env=env | {"CHAT_WORKER_CONTEXT_LOW_WATER": share})
        )
        assert built["window"]["low_water"] == int(float(share) * built["window"]["high_water"])
    one_error_line(
        run("context", "--job-file", path, env=env | {"CHAT_WORKER_CONTEXT_LOW_WATER": "1.5"}),
        "CHAT_WORKER_CONTEXT_LOW_WATER",
    )


async def test_context_gives_the_prompt_the_prepare_activity_sends(tmp_path: Path) -> None:
    character = bench_character(None)  # Mira with a 42-entry lorebook
    job = ChatJob(job_id="c5", messages=roleplay(character, "Tam", turns=40), character=character, user_name="Tam")
    path = tmp_path / "job.json"
    path.write_text(job.model_dump_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    limits = ["--max-input-tokens", "1200", "--max-total-tokens", "2048"]
    printed = one_json_object(run("context", "--job-file", str(path), *limits, env=env))
    assert printed["tokenizer"] == "gguf" and printed["dropped"]["history_messages"] > 0

    engine = EngineLimits(max_input_tokens=1200, max_total_tokens=2048, margin_tokens=32)
    activities = JobActivities(JobLimits(), engine, GgufCounter(smollm2_gguf(Settings())), Policy())
    # As in a running worker: the chat's previous turn was prepared before, so this one replays from its window.
    previous_turn = job.model_copy(update={"messages": job.messages[:-2]})
    await ActivityEnvironment().run(activities.prepare, PrepareRequest(job=previous_turn))
    replayed = REPLAYS.replayed
    prepared = await ActivityEnvironment().run(activities.prepare, PrepareRequest(job=job))
    assert REPLAYS.replayed - replayed == 2
    assert printed["messages"] == [m.model_dump() for m in prepared.context.messages]
    assert printed["insertions"] == [i.model_dump() for i in prepared.context.insertions]
    assert prepared.context.window is not None and printed["window"] == prepared.context.window.model_dump()


def test_context_errors_are_one_line(tmp_path: Path) -> None:
    one_error_line(
        run("context", "--job-file", job_file(tmp_path, "hi", sampling={"temperature": 7})), "job.sampling.temperature"
    )
    one_error_line(run("context", "--job-file", job_file(tmp_path, "word " * 3000)), "context_too_large")
    one_error_line(run("context", "--job-file", job_file(tmp_path, "hi"), "--card", str(ROOT / "README.md")), "--card")


def test_schema_prints_both_models() -> None:
    schemas = one_json_object(run("schema"))
    assert set(schemas) == {"ChatJob", "ChatResult", "StreamEvent", "JobStatus"}
    assert {
        v["properties"]["type"]["const"]
        for v in schemas["StreamEvent"]["$defs"].values()
        if "type" in v.get("properties", {})
    } >= {"delta", "reset", "done", "failed", "cancelled"}
    assert schemas["ChatJob"]["properties"]["mode"]["enum"] == ["reply", "continue", "impersonate"]
    assert "content" in schemas["ChatResult"]["required"]


async def test_context_shows_the_memory_block_and_gives_the_prompt_prepare_sends(tmp_path: Path) -> None:
    character = bench_character(None)
    memory = {"summary": "Tam hid a brass compass under the third floorboard.", "facts": ["Tam fears bells."]}
    job = ChatJob(
        job_id="c6",
        messages=roleplay(character, "Tam", turns=40),
        character=character,
        user_name="Tam",
        memory=memory,
    )
    path = tmp_path / "job.json"
    path.write_text(job.model_dump_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    limits = ["--max-input-tokens", "1200", "--max-total-tokens", "2048"]
    printed = one_json_object(run("context", "--job-file", str(path), *limits, env=env))
    block = printed["memory"]
    assert block["message"] == 0 and block["covers"] == 0 and block["facts"] == 1
    assert memory["summary"] in block["text"] and "Tam fears bells." in block["text"]
    assert block["text"] in printed["messages"][0]["content"]
    assert block["tokens"] <= block["reserved"]
    assert block["summarize_until"] == printed["window"]["first_message"] > 0

    engine = EngineLimits(max_input_tokens=1200, max_total_tokens=2048, margin_tokens=32)
    activities = JobActivities(JobLimits(), engine, GgufCounter(smollm2_gguf(Settings())), Policy())
    prepared = await ActivityEnvironment().run(activities.prepare, PrepareRequest(job=job))
    assert printed["messages"] == [m.model_dump() for m in prepared.context.messages]
    assert prepared.context.memory is not None and printed["memory"] == prepared.context.memory.model_dump()


def test_context_of_a_job_without_memory_has_memory_null(tmp_path: Path) -> None:
    assert one_json_object(run("context", "--job-file", job_file(tmp_path, "hi")))["memory"] is None


def test_schema_has_memory_and_chat_summarize() -> None:
    schemas = one_json_object(run("schema"))
    assert "memory" in schemas["ChatJob"]["properties"] and "memory" in schemas["ChatResult"]["properties"]
    memory = schemas["ChatJob"]["$defs"]["Memory"]["properties"]
    assert set(memory) == {"summary", "facts", "covers"}
    assert "chat_summarize" in schemas["ChatJob"]["$defs"]["JobType"]["enum"]


def test_validate_checks_a_summary_with_job_type_chat_summarize(tmp_path: Path) -> None:
    path = tmp_path / "summary.txt"
    path.write_text("Mira: *wipes the bar* You look soaked, Tam.")
    args = ["validate", "--job-type", "chat_summarize", "--char-name", "Mira", "--user-name", "Tam"]
    verdict = one_json_object(run(*args, "--reply-file", str(path)))
    assert verdict["valid"] is False and "scene" in verdict["reasons"]
    path.write_text("Tam came in from the storm, and Mira gave him the last room.")
    assert one_json_object(run(*args, "--reply-file", str(path)))["valid"] is True
