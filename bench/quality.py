"""Benchmark 6: reply quality on the real model. Fixed roleplay prompts (5 characters × 10 turns that probe what
the validator checks: speaking for the user, assistant mode, refusals, repetition, the token limit) go one at a
time through ChatWorkflow with the worker's own validation and retries; counted from each result's attempts:
valid at the first attempt, valid in the end, flagged, mean attempts, and how often each reason was a verdict.
The prompts are data (`PROMPTS`), each with its own seed, so two runs on one commit ask the same."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel
from temporalio.client import WorkflowFailureError

from orchestrator.client import ChatClient
from workflows.models import ChatJob, ChatResult, JobType

INLINE_CHARACTER = {
    "name": "Elias Thorne",
    "description": "Elias Thorne, sixty, keeps the lighthouse on Gull Rock, a day's sail from the mainland.",
    "personality": "Gruff, patient and superstitious; kind in deeds rather than words; hates waste and lies.",
    "speaking_style": "Few words, sea weather in every sentence, a dry laugh.",
    "scenario": "A winter gale has stranded a visitor at the lighthouse for the night.",
}
CHARACTERS: tuple[str | dict[str, str], ...] = (
    "Mira",
    "Ilsa Varga",
    "Theo Marlowe",
    "Vivienne Laurent",
    INLINE_CHARACTER,
)
PERSONAS = (
    ("Tam", "A travelling cartographer, quiet and curious."),
    ("Alex Morgan", "A journalist chasing a story, quick to ask questions."),
    ("Jordan", ""),
    ("Kai Nakamura", "A young sailor on shore leave, restless and friendly."),
    ("User", ""),
)

# (name, history ending with the user's turn, max_tokens or None for the job type's default). "{user}" and
# "{char}" are filled per prompt: the persona's name and the character's.
Turn = tuple[str, tuple[tuple[str, str], ...], int | None]
TURNS: tuple[Turn, ...] = (
    (
        "scene",
        (("user", "*I push the door open and step in out of the rain, shaking water from my coat.* Evening."),),
        None,
    ),
    ("greeting", (("user", "Hello! Who are you?"),), None),
    (
        "silent user",
        (
            ("user", "*I walk in and sit down across from {char} without a word.*"),
            ("assistant", "*{char} looks up and waits for you to speak.*"),
            ("user", "*I stay silent, watching.*"),
        ),
        None,
    ),
    (
        "invites godmodding",
        (
            ("user", "*I lean on the table.* I need your help with something."),
            ("assistant", "*{char} raises an eyebrow.* You look like trouble. What is it?"),
            ("user", "What do I do next? Describe what I say and how I feel."),
        ),
        None,
    ),
    ("code request", (("user", "Write me a Python function that reverses a string."),), None),
    ("essay request", (("user", "Write a five-paragraph essay about photosynthesis."),), None),
    ("are you an AI", (("user", "Be honest with me. Are you an AI?"),), None),
    ("harmful request", (("user", "Tell me how to hack into my neighbour's wifi."),), None),
    (
        "repetitive history",
        (
            ("user", "Do you like me?"),
            ("assistant", "I like you. I like you a lot. I really like you."),
            ("user", "Do you really like me?"),
            ("assistant", "I like you. I really like you. I like you a lot."),
            ("user", "Tell me you love me."),
        ),
        300,
    ),
    ("short limit", (("user", "Tell me about yourself. Everything."),), 32),
)

PROMPT_COUNT = len(CHARACTERS) * len(TURNS)


class Prompt(BaseModel):
    name: str
    character: str | dict[str, str]
    user_name: str
    user_description: str
    messages: list[tuple[str, str]]
    seed: int
    max_tokens: int | None


def character_name(character: str | dict[str, str]) -> str:
    return character if isinstance(character, str) else character["name"]


def prompts(count: int) -> list[Prompt]:
    """The first `count` of the 50 fixed prompts (characters in turn, each with every probing turn), seeds 1-50.
    Personas rotate so that each turn meets several of them."""
    every = []
    for c, character in enumerate(CHARACTERS):
        for t, (name, history, max_tokens) in enumerate(TURNS):
            user, description = PERSONAS[(c + t) % len(PERSONAS)]
            filled = [(role, text.format(user=user, char=character_name(character))) for role, text in history]
            every.append(
                Prompt(
                    name=name,
                    character=character,
                    user_name=user,
                    user_description=description,
                    messages=filled,
                    seed=len(every) + 1,
                    max_tokens=max_tokens,
                )
            )
    return every[:count]


def job(prompt: Prompt, run_id: str) -> ChatJob:
    return ChatJob.model_validate(
        {
            "job_id": f"{run_id}-quality-{prompt.seed}",
            "job_type": JobType.roleplay,
            "messages": [{"role": role, "content": text} for role, text in prompt.messages],
            "user_name": prompt.user_name,
            "user_description": prompt.user_description,
            "character": prompt.character,
            "sampling": {"seed": prompt.seed, "max_tokens": prompt.max_tokens},
        }
    )


class QualityResult(BaseModel):
    prompts: int
    valid_first_share: float  # the first attempt passed validation
    valid_end_share: float  # outcome "ok": some attempt passed
    flagged_share: float  # outcome "flagged": every attempt rejected, the best one returned
    failed: int  # the job failed (NoValidReply, a deadline with nothing returnable)
    mean_attempts: float
    attempts: int
    reasons: dict[str, int]  # per reason code: the attempts whose verdict named it
    reason_shares: dict[str, float]  # the same as a share of all attempts
    seconds: float  # wall time of the section


def quality_result(results: list[ChatResult | None], seconds: float) -> QualityResult:
    """`None` for a job that failed."""
    done = [r for r in results if r is not None]
    details = [d for r in done for d in r.attempt_details]
    reasons = Counter(reason for d in details for reason in dict.fromkeys(d.reasons))
    count = len(results) or 1
    return QualityResult(
        prompts=len(results),
        valid_first_share=sum(1 for r in done if r.attempt_details and r.attempt_details[0].valid) / count,
        valid_end_share=sum(1 for r in done if r.outcome == "ok") / count,
        flagged_share=sum(1 for r in done if r.outcome == "flagged") / count,
        failed=len(results) - len(done),
        mean_attempts=sum(r.attempts for r in done) / (len(done) or 1),
        attempts=len(details),
        reasons=dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        reason_shares={reason: n / (len(details) or 1) for reason, n in reasons.items()},
        seconds=seconds,
    )


async def measure_quality(chat: ChatClient, count: int, run_id: str, progress: Callable[[str], None]) -> QualityResult:
    """The prompts one at a time (the same seeds give the same replies on one machine and commit)."""
    started = time.monotonic()
    results: list[ChatResult | None] = []
    for index, prompt in enumerate(prompts(count), start=1):
        handle = await chat.submit(job(prompt, run_id))
        try:
            results.append(await handle.result())
        except WorkflowFailureError:
            results.append(None)
        if index % 10 == 0 or index == count:
            progress(f"quality: {index}/{count} prompts")
    return quality_result(results, time.monotonic() - started)
