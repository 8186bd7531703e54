"""Sampling per attempt: the job type's defaults, then escalation after a rejected reply."""

from __future__ import annotations

from workflows.models import JobType, ResolvedSampling, Sampling

# (max_tokens, temperature, top_p) per job type, as the original worker used them.
DEFAULTS: dict[JobType, tuple[int, float, float]] = {
    JobType.conversation: (500, 0.7, 0.9),
    JobType.roleplay: (300, 0.8, 0.9),
    JobType.enhance: (256, 0.7, 0.9),
    JobType.unrestricted: (500, 0.8, 0.9),
}
MAX_TEMPERATURE = 1.0
MAX_FREQUENCY_PENALTY = 1.0
REPEATING = frozenset({"repetitive", "echoes_history"})


def max_tokens_for(job_type: JobType, requested: Sampling) -> int:
    return requested.max_tokens if requested.max_tokens is not None else DEFAULTS[job_type][0]


def first_sampling(job_type: JobType, requested: Sampling, seed: int) -> ResolvedSampling:
    _, temperature, top_p = DEFAULTS[job_type]
    return ResolvedSampling(
        temperature=requested.temperature if requested.temperature is not None else temperature,
        top_p=requested.top_p if requested.top_p is not None else top_p,
        max_tokens=max_tokens_for(job_type, requested),
        seed=requested.seed if requested.seed is not None else seed,
    )


def escalated_sampling(previous: ResolvedSampling, reasons: list[str], seed: int) -> ResolvedSampling:
    """The next attempt's sampling after a rejected reply: always a new seed, a slightly higher temperature
    and frequency penalty, and more of both when the reply repeated itself or the conversation."""
    repeating = bool(REPEATING.intersection(reasons))
    temperature = previous.temperature + (0.1 if repeating else 0.05)
    penalty = previous.frequency_penalty + (0.3 if repeating else 0.1)
    return previous.model_copy(
        update={
            "seed": seed,
            "temperature": round(min(MAX_TEMPERATURE, temperature), 3),
            "frequency_penalty": round(min(MAX_FREQUENCY_PENALTY, penalty), 3),
        }
    )
