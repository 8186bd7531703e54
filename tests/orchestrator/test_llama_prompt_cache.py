"""The local llama.cpp server's prompt cache, on the real server with the dev stack's command line: a
conversation's next turn evaluates only its new tokens, also after another conversation used the server in
between. The counts are the server's own (its log: the tokens a prompt shares with the restored state, the
tokens left to evaluate)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx2

from orchestrator.settings import Settings
from tests.engine_process import EngineProcess

REPLY = "*Mira sets down the mug and leans on the bar.* The storm will pass by morning, love."


def system(name: str) -> dict[str, str]:
    return {"role": "system", "content": f"You are {name}. " + f"{name} keeps the inn by the harbour wall. " * 30}


def evaluated(engine: EngineProcess, log: Path, messages: list[dict[str, str]]) -> tuple[int, int, str]:
    """(prompt tokens, tokens the server evaluated, its log lines) for one chat completion."""
    before = log.stat().st_size
    body = {"model": "smollm2", "messages": messages, "max_tokens": 4, "seed": 3}
    response = httpx2.post(f"{engine.base_url}/v1/chat/completions", json=body, timeout=300)
    response.raise_for_status()
    prompt_tokens = response.json()["usage"]["prompt_tokens"]
    with log.open("rb") as file:
        file.seek(before)
        lines = file.read().decode(errors="replace")
    left = re.findall(r"prefix-match hit, remaining (\d+) prompt tokens to eval", lines)
    return prompt_tokens, int(left[-1]) if left else prompt_tokens, lines


def test_the_next_turn_evaluates_only_its_new_tokens_after_another_conversation(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, max_input_tokens=1536, max_total_tokens=2048)  # type: ignore[call-arg]
    mira = [system("Mira"), {"role": "user", "content": "Evening! Is there a room free tonight?"}]
    orrin = [system("Orrin"), {"role": "user", "content": "Take me across the river, ferryman."}]
    next_turn = [*mira, {"role": "assistant", "content": REPLY}, {"role": "user", "content": "I will take it."}]
    with EngineProcess(settings, tmp_path) as engine:
        log = next(tmp_path.glob("llama-*.log"))
        first, _, _ = evaluated(engine, log, mira)
        other, other_evaluated, _ = evaluated(engine, log, orrin)
        total, after_other, lines = evaluated(engine, log, next_turn)
    assert first > 250
    assert other_evaluated > 250  # the other conversation shares only a few tokens with the first
    assert "cache hit" in lines  # the first conversation's state came back from the cache
    # Only the reply and the new message were evaluated (a token or two more where they join the prompt).
    assert after_other <= total - first + 4 and after_other < total / 3
