"""System prompts per job type, kept as data files in `workflows/prompts/` and read once at import; and the
reminders that a later attempt puts after the history (macros filled where the context is built)."""

from __future__ import annotations

from importlib.resources import files

from workflows.models import JobType, Reminder

_SYSTEM_PROMPTS = {
    job_type: files("workflows").joinpath("prompts", f"{job_type.value}.txt").read_text(encoding="utf-8").strip()
    for job_type in JobType
}

REMINDERS = {
    Reminder.own_reply: "[Write only {{char}}'s reply; do not write {{user}}'s words or actions.]",
    Reminder.in_character: (
        "[Stay in character as {{char}}, in the scene with {{user}}: reply as {{char}} would, inside the story, "
        "with no assistant talk and no remarks about being an AI or a character.]"
    ),
}


def system_prompt(job_type: JobType) -> str:
    return _SYSTEM_PROMPTS[job_type]
