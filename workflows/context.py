"""Context building: the messages the engine sees for a job. Pure: no I/O, deterministic.

The system message always comes first (Qwen's template otherwise inserts its own "You are Qwen…")."""

from __future__ import annotations

from characters import Character, fill_macros, scenario_text
from workflows.models import ChatJob, JobType, Message
from workflows.prompts import system_prompt


def character_block(character: Character, scenario: str | None) -> str:
    lines = [f"Character: {character.name}"]
    for label, text in (
        ("Description", character.description),
        ("Personality", character.personality),
        ("Appearance", character.appearance),
        ("Background", character.background),
        ("Speaking style", character.speaking_style),
        ("Scenario", scenario_text(character, scenario)),
    ):
        if text:
            lines.append(f"{label}: {text}")
    return "\n".join(lines)


def system_message(job: ChatJob, character: Character | None) -> Message:
    parts = [system_prompt(job.job_type)]
    if job.job_type is JobType.roleplay and character is not None:
        parts.append(character_block(character, job.scenario))
    elif job.scenario:
        parts.append(f"Scenario: {job.scenario}")
    parts.extend(m.content for m in job.messages if m.role == "system")
    char = character or "Assistant"
    text = "\n\n".join(fill_macros(part, char=char, user=job.user_name) for part in parts)
    return Message(role="system", content=text)


def build_context(job: ChatJob, character: Character | None) -> list[Message]:
    return [system_message(job, character), *(m for m in job.messages if m.role != "system")]
