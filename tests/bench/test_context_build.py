"""The benchmark's context-building section at a small size: it builds the long chat's context with both counters
(the local GGUF's tokenizer and the estimate), within the budget, keeping the newest turns."""

from __future__ import annotations

from bench.context_build import measure_context
from orchestrator.settings import Settings
from orchestrator.tokens import smollm2_gguf


async def test_the_context_section_builds_a_long_chats_context_with_both_counters() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    result = await measure_context(
        turns=30,
        repeats=1,
        gguf=smollm2_gguf(settings),
        max_input_tokens=settings.max_input_tokens,
        max_total_tokens=settings.max_total_tokens,
        margin=settings.context_margin_tokens,
        progress=lambda line: None,
    )
    assert set(result.counters) == {"gguf", "estimate"}
    for timings in result.counters.values():
        assert 0 < timings.prompt_tokens <= result.budget
        assert 1 < timings.kept_messages <= result.messages + 1  # the system message and the newest turns
        assert timings.tokens_counted > timings.prompt_tokens  # the whole chat was counted, not all of it sent
