"""What a finished job reports, from its attempts: pure functions, no workflow."""

from __future__ import annotations

from characters import bundled_character
from tests.helpers import job
from workflows.models import GenerateResult, ResolvedSampling, Timings, Verdict
from workflows.results import Attempt, chat_result, job_metrics
from workflows.sampling import escalated_sampling

FIRST = ResolvedSampling(temperature=0.8, top_p=0.9, max_tokens=48, seed=5)


def attempt(
    number: int, sampling: ResolvedSampling, reasons: list[str], valid: bool, prompt_tokens: int = 0
) -> Attempt:
    return Attempt(
        number=number,
        sampling=sampling,
        result=GenerateResult(
            content="raw", finish_reason="stop", prompt_tokens=prompt_tokens, completion_tokens=10, engine_ms=500.0
        ),
        verdict=Verdict(valid=valid, reasons=reasons, cleaned=f"reply {number}"),
    )


def test_the_result_sums_every_attempt_and_returns_the_chosen_one() -> None:
    second = escalated_sampling(FIRST, ["repetitive"], seed=6)
    attempts = [attempt(1, FIRST, ["repetitive", "short"], False), attempt(2, second, ["short"], True)]
    result = chat_result(job(), attempts, attempts[1], Timings(engine_ms=1000.0), counted_prompt=120)
    assert result.content == "reply 2" and result.returned_attempt == 2 and result.outcome == "ok"
    assert result.attempts == len(result.attempt_details) == 2
    assert result.reasons == ["repetitive", "short"]
    assert result.completion_tokens == 20
    # llama.cpp reports no usage: the context's own count, once per attempt
    assert result.prompt_tokens == 240


def test_the_engines_usage_wins_over_the_count_and_a_rejected_choice_is_flagged() -> None:
    attempts = [attempt(1, FIRST, ["repetitive"], False, prompt_tokens=130)]
    result = chat_result(job(), attempts, attempts[0], Timings(), counted_prompt=120)
    assert result.prompt_tokens == 130 and result.outcome == "flagged"


def test_metrics_keep_the_first_attempts_sampling_and_no_text() -> None:
    second = escalated_sampling(FIRST, ["repetitive"], seed=6)
    attempts = [attempt(1, FIRST, ["repetitive"], False), attempt(2, second, [], True)]
    submitted = job()
    result = chat_result(submitted, attempts, attempts[1], Timings(engine_ms=1000.0), counted_prompt=100)
    metrics = job_metrics(submitted, bundled_character("Mira"), attempts[0].sampling, result)
    assert (metrics.temperature, metrics.max_tokens) == (0.8, 48) != (second.temperature, 0)
    assert metrics.character == "Mira" and metrics.attempts == 2 and metrics.tokens_per_second == 20.0
    assert metrics.response_length == len("reply 2")
    assert "reply" not in metrics.model_dump_json() and submitted.messages[0].content not in metrics.model_dump_json()
