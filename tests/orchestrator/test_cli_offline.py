"""Commands that need no server read only the settings they use: an invalid CHAT_WORKER_* variable of another
setting does not stop them, an invalid one they read still does. Real subprocesses, as scripts run them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import run

# Invalid, and read by none of the offline commands.
UNRELATED = {
    "CHAT_WORKER_TEMPORAL_ADDRESS": "nonsense",
    "CHAT_WORKER_GENERATION_SLOTS": "zero",
    "CHAT_WORKER_LOG_LEVEL": "LOUD",
}
REPLY = '*wipes the bar* "Rooms are upstairs, the fire is free."'


def env_with(variables: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")} | variables


def job_file(tmp_path: Path) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"job_id": "o1", "character": "Mira", "messages": [{"role": "user", "content": "hi"}]}))
    return str(path)


def offline_commands(tmp_path: Path) -> dict[str, list[str]]:
    return {
        "schema": ["schema"],
        "characters list": ["characters", "list"],
        "characters show": ["characters", "show", "Mira"],
        "validate": ["validate", "--job-type", "chat_roleplay", "--reply-file", "-"],
        "context": ["context", "--job-file", job_file(tmp_path)],
    }


@pytest.mark.parametrize("command", ["schema", "characters list", "characters show", "validate", "context"])
def test_an_invalid_setting_the_command_does_not_read_does_not_stop_it(tmp_path: Path, command: str) -> None:
    done = run(*offline_commands(tmp_path)[command], env=env_with(UNRELATED), stdin=REPLY)
    assert done.returncode == 0, done.stderr
    assert done.stdout and "error" not in done.stderr


def test_a_command_that_reads_every_setting_is_still_stopped() -> None:
    done = run("jobs", "list", env=env_with(UNRELATED))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: invalid settings: CHAT_WORKER_TEMPORAL_ADDRESS")


def test_context_is_stopped_by_an_invalid_limit_it_reads_naming_only_that(tmp_path: Path) -> None:
    env = env_with(UNRELATED | {"CHAT_WORKER_MAX_INPUT_TOKENS": "many"})
    done = run("context", "--job-file", job_file(tmp_path), env=env)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: invalid settings: CHAT_WORKER_MAX_INPUT_TOKENS: ")
    assert not any(name in line for name in UNRELATED)


def test_a_missing_engine_file_stops_context_which_reads_it_but_not_validate(tmp_path: Path) -> None:
    env = env_with({"CHAT_WORKER_ENGINE_ENV_FILE": str(tmp_path / "tgi.env")})
    validated = run("validate", "--job-type", "chat_roleplay", "--reply-file", "-", env=env, stdin=REPLY)
    assert validated.returncode == 0, validated.stderr
    done = run("context", "--job-file", job_file(tmp_path), env=env)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: invalid settings: ") and "CHAT_WORKER_ENGINE_ENV_FILE: no such file" in line


def test_validate_is_stopped_by_a_policy_file_it_cannot_read(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    env = env_with(UNRELATED | {"CHAT_WORKER_POLICY_FILE": str(policy)})
    done = run("validate", "--job-type", "chat_roleplay", "--reply-file", "-", env=env, stdin=REPLY)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == f"error: policy file {policy}: cannot read: No such file or directory"


def test_context_refuses_a_job_over_the_caps_of_every_job_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    big = {"role": "user", "content": "x" * 40_000}
    path.write_text(
        json.dumps({"job_id": "o2", "character": "Mira", "messages": [{"role": "user", "content": "hi"}, big]})
    )
    done = run("context", "--job-file", str(path), env=env_with({}))
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line == "error: invalid job: job.messages.1.content: at most 32768 bytes as UTF-8 (got 40000)"
