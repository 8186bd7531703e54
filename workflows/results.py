"""What a finished job reports: the ChatResult the backend gets and the JobMetrics record that is logged.
Pure functions of the job, its attempts and its timings, so they are tested without a workflow."""

from __future__ import annotations

from dataclasses import dataclass

from characters import Character
from workflows.models import (
    AttemptSummary,
    ChatJob,
    ChatResult,
    GenerateResult,
    JobMetrics,
    Memory,
    ResolvedSampling,
    Timings,
    Verdict,
)


@dataclass(frozen=True)
class Attempt:
    """One generation that reached validation: the sampling it used, the engine's reply, the verdict."""

    number: int
    sampling: ResolvedSampling
    result: GenerateResult
    verdict: Verdict

    def summary(self) -> AttemptSummary:
        return AttemptSummary(
            attempt=self.number,
            valid=self.verdict.valid,
            reasons=self.verdict.reasons,
            finish_reason=self.result.finish_reason,
            completion_tokens=self.result.completion_tokens,
        )


def returnable(attempt: Attempt) -> bool:
    """A rejected reply may still be returned (flagged) unless it broke the policy or has no text."""
    return "policy" not in attempt.verdict.reasons and bool(attempt.verdict.cleaned)


def best_returnable(attempts: list[Attempt]) -> Attempt | None:
    """The reply to return when none was valid: a returnable one with the fewest problems, the first of equals."""
    candidates = [a for a in attempts if returnable(a)]
    return min(candidates, key=lambda a: len(a.verdict.reasons), default=None)


def chat_result(
    job: ChatJob,
    attempts: list[Attempt],
    chosen: Attempt,
    timings: Timings,
    counted_prompt: int,
    late: bool = False,
    memory: Memory | None = None,
) -> ChatResult:
    """The job's result: the chosen attempt's reply, totals over every attempt. `counted_prompt` is the
    context's own token count, used when the engine reports no usage (llama.cpp's stream does not). `late`: the
    deadline passed before a valid reply, so the reasons end with `deadline`. `memory`: the memory to return."""
    results = [a.result for a in attempts]
    return ChatResult(
        job_id=job.job_id,
        content=chosen.verdict.cleaned,
        finish_reason=chosen.result.finish_reason,
        prompt_tokens=sum(r.prompt_tokens for r in results) or counted_prompt * len(results),
        completion_tokens=sum(r.completion_tokens for r in results),
        attempts=len(attempts),
        returned_attempt=chosen.number,
        reasons=list(
            dict.fromkeys([*(r for a in attempts for r in a.verdict.reasons), *(["deadline"] if late else [])])
        ),
        attempt_details=[a.summary() for a in attempts],
        outcome="ok" if chosen.verdict.valid else "flagged",
        timings=timings,
        memory=memory,
    )


def job_metrics(job: ChatJob, character: Character | None, first: ResolvedSampling, result: ChatResult) -> JobMetrics:
    """The one structured record per job: numbers and codes, never chat text. Sampling is the first
    attempt's, as the job asked for it (later attempts escalate it)."""
    return JobMetrics(
        job_id=job.job_id,
        job_type=job.job_type,
        character=character.name if character else None,
        conversation_length=len(job.messages),
        response_length=len(result.content),
        temperature=first.temperature,
        max_tokens=first.max_tokens,
        attempts=result.attempts,
        reasons=result.reasons,
        finish_reason=result.finish_reason,
        outcome=result.outcome,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        tokens_per_second=tokens_per_second(result),
        timings=result.timings,
    )


def tokens_per_second(result: ChatResult) -> float:
    """Completion tokens per second of engine time over the job's attempts (0 when the engine took no time)."""
    engine_seconds = result.timings.engine_ms / 1000
    return result.completion_tokens / engine_seconds if engine_seconds else 0.0
