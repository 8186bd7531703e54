"""The benchmark's inference STAND-IN (a fixed-delay server, not an engine) speaks the streaming chat API the
worker's InferenceClient uses, answers 404 elsewhere, and records what the benchmark counts."""

import asyncio
from pathlib import Path

from bench.standin import STANDIN_REPLY, StandIn, job_marker
from orchestrator.engines import ENGINES, EngineKind
from orchestrator.inference import InferenceClient
from orchestrator.settings import Settings
from orchestrator.tokens import token_counter
from workflows.models import Message, ResolvedSampling

SAMPLING = ResolvedSampling(temperature=0.7, top_p=0.9, max_tokens=100, seed=1)


def asking(job_id: str) -> list[Message]:
    return [
        Message(role="system", content="You are a writer."),
        Message(role="user", content=f"{job_marker(job_id)} Describe the harbour."),
    ]


async def test_the_worker_client_reads_its_stream() -> None:
    async with StandIn(0.01) as standin:
        result = await InferenceClient(standin.base_url, "stand-in").complete(asking("job-1"), SAMPLING)
    assert result.content == STANDIN_REPLY
    assert result.finish_reason == "stop"
    assert result.completion_tokens > 1 and result.first_token_ms is not None


async def test_tokenize_is_not_found_so_the_worker_falls_back() -> None:
    async with StandIn(0.01) as standin:
        no_gguf = Path("/nonexistent.gguf")
        settings = Settings(_env_file=None, inference_base_url=standin.base_url, local_model_path=no_gguf)  # type: ignore[call-arg]
        counter = await token_counter(settings, ENGINES[EngineKind.tgi])  # a TGI whose /tokenize is not found
    assert counter.name == "estimate"


async def test_it_records_each_jobs_requests_and_the_most_in_flight() -> None:
    async with StandIn(0.1) as standin:
        client = InferenceClient(standin.base_url, "stand-in")
        await asyncio.gather(*(client.complete(asking(job_id), SAMPLING) for job_id in ("a", "b", "b")))
        await client.complete([Message(role="user", content="no marker")], SAMPLING)
        stats = standin.stats()
        standin.reset()
        assert standin.stats().requests == [] and standin.stats().max_in_flight == 0
    assert sorted(str(r.marker) for r in stats.requests) == ["None", "a", "b", "b"]
    assert stats.max_in_flight == 3
    assert all(r.finished - r.arrived >= 0.1 for r in stats.requests)
