"""What a job's row says in the Temporal UI ("roleplay · Seraphina · 3 turns"). Names and counts only: with
payload encryption on, summaries are encrypted and shown through the codec server, but without keys they are
stored as they are."""

from __future__ import annotations

from characters import Character
from workflows.models import ChatJob


def row_summary(job: ChatJob, character: Character | None) -> str:
    parts = [job.job_type.value.removeprefix("chat_")]
    if character is not None:
        parts.append(character.name)
    turns = sum(1 for m in job.messages if m.role == "user")
    parts.append(f"{turns} turn" + ("" if turns == 1 else "s"))
    if job.mode != "reply":
        parts.append(job.mode)
    return " · ".join(parts)
