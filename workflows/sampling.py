"""Sampling per attempt: the job type's defaults, then escalation after a rejected reply, by its reasons."""

from __future__ import annotations

import math
from collections.abc import Iterable

from workflows.models import CARD_MAX_TOKENS, SUMMARY_MAX_TOKENS, JobType, Reminder, ResolvedSampling, Sampling

# (max_tokens, temperature, top_p) per job type, as the original worker used them.
DEFAULTS: dict[JobType, tuple[int, float, float]] = {
    JobType.conversation: (500, 0.7, 0.9),
    JobType.roleplay: (300, 0.8, 0.9),
    JobType.enhance: (256, 0.7, 0.9),
    JobType.unrestricted: (500, 0.8, 0.9),
    JobType.summarize: (SUMMARY_MAX_TOKENS, 0.3, 0.9),
    # A storyboard's default is per panel (workflows/scenes.py, STORYBOARD_TOKENS_PER_PANEL).
    JobType.scene: (160, 0.6, 0.9),
    # Room for the card's JSON at its longest (workflows/card.py bounds each field); a cooler temperature, as the
    # card describes what the conversation shows.
    JobType.character: (CARD_MAX_TOKENS, 0.5, 0.9),
}
# An impersonated message (mode impersonate) is the user's: shorter than the character's reply.
IMPERSONATE_MAX_TOKENS = 150
MAX_TEMPERATURE = 1.0
MAX_FREQUENCY_PENALTY = 1.0
REPEATING = frozenset({"repetitive", "echoes_history"})

# Escalation per reason (runs begun before escalation-per-reason use `escalated_sampling`). Every later
# attempt has a new seed; besides it:
# - repeating: temperature, frequency penalty and repetition penalty up (the engine's own form of the last);
# - cut_off: more max_tokens, within the worker's cap and the room the context leaves;
# - speaks_for_user, policy: nothing more (the first gets the `own_reply` reminder, `reminders_after`);
# - any other (too_short, empty, out_of_character, refusal, a code added later): a little more temperature.
REPEATING_TEMPERATURE_STEP = 0.1
TEMPERATURE_STEP = 0.05
UNCHANGED_TEMPERATURE = frozenset({"speaks_for_user", "cut_off", "policy"})
REPEATING_FREQUENCY_STEP = 0.3
# CTRL's penalty divides the logit of every token already seen, in the prompt too on TGI and vLLM: common
# roleplay presets stay within 1.1-1.2; above 1.3 replies lose their names and common words.
REPETITION_PENALTY_STEP = 0.15
MAX_REPETITION_PENALTY = 1.3
CUT_OFF_MAX_TOKENS_FACTOR = 1.5
IN_CHARACTER = frozenset({"out_of_character", "refusal"})


def max_tokens_for(job_type: JobType, requested: Sampling, mode: str = "reply") -> int:
    if requested.max_tokens is not None:
        return requested.max_tokens
    default = DEFAULTS[job_type][0]
    return min(default, IMPERSONATE_MAX_TOKENS) if mode == "impersonate" else default


def first_sampling(job_type: JobType, requested: Sampling, seed: int, mode: str = "reply") -> ResolvedSampling:
    """The first attempt's sampling: the job's own values, else the job type's defaults (and the mode's)."""
    _, temperature, top_p = DEFAULTS[job_type]
    return ResolvedSampling(
        temperature=requested.temperature if requested.temperature is not None else temperature,
        top_p=requested.top_p if requested.top_p is not None else top_p,
        max_tokens=max_tokens_for(job_type, requested, mode),
        seed=requested.seed if requested.seed is not None else seed,
    )


def escalated_sampling(previous: ResolvedSampling, reasons: list[str], seed: int) -> ResolvedSampling:
    """Runs begun before escalation-per-reason: one rule for all, a new seed, a slightly higher temperature
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


def max_tokens_ceiling(
    requested: Sampling, base_max_tokens: int, cap: int | None, budget: int, prompt_tokens: int
) -> int:
    """The most a later attempt may generate. A job that set `max_tokens` gets never more than it asked for. Else
    the context was budgeted for `base_max_tokens` (the job type's default), so what it left of its budget may go
    to the reply too; never above the worker's cap (None: the default itself)."""
    if requested.max_tokens is not None:
        return requested.max_tokens
    room = base_max_tokens + max(0, budget - prompt_tokens)
    return min(room, cap if cap is not None else base_max_tokens)


def _temperature_step(reasons: Iterable[str]) -> float:
    steps = [
        REPEATING_TEMPERATURE_STEP if r in REPEATING else 0.0 if r in UNCHANGED_TEMPERATURE else TEMPERATURE_STEP
        for r in reasons
    ]
    return max(steps, default=TEMPERATURE_STEP)


def next_sampling(previous: ResolvedSampling, reasons: list[str], seed: int, max_tokens_limit: int) -> ResolvedSampling:
    """The next attempt's sampling after a reply rejected for `reasons`; `max_tokens_limit` from
    `max_tokens_ceiling`."""
    update: dict[str, float | int] = {
        "seed": seed,
        "temperature": round(min(MAX_TEMPERATURE, previous.temperature + _temperature_step(reasons)), 3),
    }
    if REPEATING.intersection(reasons):
        frequency = previous.frequency_penalty + REPEATING_FREQUENCY_STEP
        repetition = previous.repetition_penalty + REPETITION_PENALTY_STEP
        update["frequency_penalty"] = round(min(MAX_FREQUENCY_PENALTY, frequency), 3)
        update["repetition_penalty"] = round(min(MAX_REPETITION_PENALTY, repetition), 3)
    max_tokens = previous.max_tokens
    if "cut_off" in reasons:
        max_tokens = math.ceil(previous.max_tokens * CUT_OFF_MAX_TOKENS_FACTOR)
    update["max_tokens"] = max(1, min(max_tokens, max_tokens_limit))
    return previous.model_copy(update=update)


def reminders_after(reasons: list[str], roleplay: bool) -> list[Reminder]:
    """The reminders a reply rejected for `reasons` calls for in the attempts after it."""
    reminders = []
    if "speaks_for_user" in reasons:
        reminders.append(Reminder.own_reply)
    if roleplay and IN_CHARACTER.intersection(reasons):
        reminders.append(Reminder.in_character)
    return reminders
