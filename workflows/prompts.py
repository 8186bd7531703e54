"""System prompts per job type, kept as data files in `workflows/prompts/` and read once at import."""

from __future__ import annotations

from importlib.resources import files

from workflows.models import JobType

_SYSTEM_PROMPTS = {
    job_type: files("workflows").joinpath("prompts", f"{job_type.value}.txt").read_text(encoding="utf-8").strip()
    for job_type in JobType
}


def system_prompt(job_type: JobType) -> str:
    return _SYSTEM_PROMPTS[job_type]
