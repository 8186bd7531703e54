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


def first_sampling(job_type: JobType, requested: Sampling, seed: int) -> ResolvedSampling:
    max_tokens, temperature, top_p = DEFAULTS[job_type]
    return ResolvedSampling(
        temperature=requested.temperature if requested.temperature is not None else temperature,
        top_p=requested.top_p if requested.top_p is not None else top_p,
        max_tokens=requested.max_tokens if requested.max_tokens is not None else max_tokens,
        seed=requested.seed if requested.seed is not None else seed,
    )


def escalated_sampling(previous: ResolvedSampling, reasons: list[str], seed: int) -> ResolvedSampling:
    """The next attempt's sampling: always a new seed; hotter and penalised against repeats when the
    reply repeated itself, cooler when it left its character."""
    temperature, penalty = previous.temperature, previous.frequency_penalty
    if "repetitive" in reasons:
        temperature, penalty = temperature + 0.1, penalty + 0.3
    if "out_of_character" in reasons:
        temperature -= 0.1
    return previous.model_copy(
        update={
            "seed": seed,
            "temperature": round(min(1.0, max(0.1, temperature)), 3),
            "frequency_penalty": round(min(1.0, penalty), 3),
        }
    )
