"""chat_scene from the command line without a server: `chat --scene-mode` refuses bad options naming the field
before connecting, `validate --job-type chat_scene` checks a scene offline, `schema` shows the scene fields."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import one_error_line, one_json_object, run


def test_chat_help_explains_the_scene_options() -> None:
    done = run("chat", "--help")
    text = " ".join(done.stdout.split())
    for phrase in ("--scene-mode", "last_message", "storyboard", "--panels", "2-8 (default: 4)", "--history-file"):
        assert phrase in text


def test_chat_refuses_bad_scene_options_naming_the_field(tmp_path: Path) -> None:
    flags = ["chat", "--character", "Mira", "--message", "hi"]
    one_error_line(run(*flags, "--scene-mode", "storyboard", "--panels", "9"), "job.scene.panels")
    one_error_line(run(*flags, "--scene-mode", "face", "--panels", "3"), "job.scene.panels", "storyboard")
    one_error_line(run(*flags, "--panels", "3"), "--scene-mode")
    one_error_line(run("chat", "--scene-mode", "face"), "--message or --history-file")
    history = tmp_path / "chat.json"
    history.write_text(json.dumps([{"role": "narrator", "content": "x"}]))
    one_error_line(run("chat", "--scene-mode", "face", "--history-file", str(history)), "history.0.role")


def test_validate_checks_and_cleans_a_scene_offline(tmp_path: Path) -> None:
    reply = tmp_path / "scene.txt"
    reply.write_text('Prompt: "Mira", 1woman, dark hair, Dark hair, scar over left eyebrow, tavern')
    args = ["validate", "--job-type", "chat_scene", "--reply-file", str(reply), "--char-name", "Mira"]
    verdict = one_json_object(run(*args, "--scene-mode", "face"))
    assert verdict == {
        "valid": True,
        "reasons": [],
        "cleaned": "1woman, dark hair, scar over left eyebrow, tavern",
        "scene": {"prompt": "1woman, dark hair, scar over left eyebrow, tavern"},
    }
    reply.write_text(json.dumps({"panels": [{"prompt": "tavern, rain, night", "caption": "In."}]}))
    board = one_json_object(run(*args, "--scene-mode", "storyboard", "--panels", "2"))
    assert board["valid"] is False and board["reasons"] == ["not_json"] and board["scene"] is None
    one_error_line(run(*args), "--scene-mode")
    one_error_line(run(*args, "--scene-mode", "face", "--panels", "2"), "scene.panels")


def test_schema_shows_the_scene_of_the_job_and_of_the_result() -> None:
    schemas = one_json_object(run("schema"))
    job, result = schemas["ChatJob"], schemas["ChatResult"]
    assert "chat_scene" in job["$defs"]["JobType"]["enum"]
    settings = job["$defs"]["SceneSettings"]["properties"]
    assert settings["mode"]["enum"] == [
        "character",
        "face",
        "user",
        "last_message",
        "story",
        "background",
        "storyboard",
    ]
    assert "scene" in job["properties"] and "scene" in result["properties"]
    assert {"ScenePrompt", "Storyboard", "Panel"} <= set(result["$defs"])
