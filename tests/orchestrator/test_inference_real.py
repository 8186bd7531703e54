"""The inference client against the real llama.cpp server and the real SmolLM2 model."""

import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpcore2
import httpx2
import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import _detect_agent

from orchestrator.devstack import DevStack, free_port
from orchestrator.engines import ENGINES, EngineKind
from orchestrator.inference import InferenceClient
from orchestrator.settings import Settings
from workflows.models import EngineError, ErrorType, Message, ResolvedSampling

MESSAGES = [
    Message(role="system", content="You are Mira, a tavern keeper in a harbour town."),
    Message(role="user", content="Good evening! What do you serve here?"),
]


def sampling(**overrides: object) -> ResolvedSampling:
    return ResolvedSampling(**{"temperature": 0.7, "top_p": 0.9, "max_tokens": 24, "seed": 42, **overrides})


@pytest.fixture
def engine(stack: DevStack, settings: Settings) -> InferenceClient:
    return InferenceClient(settings.inference_base_url, settings.model_name)


async def test_streams_a_real_reply_with_finish_reason_and_token_count(engine: InferenceClient) -> None:
    result = await engine.complete(MESSAGES, sampling())
    assert len(result.content.split()) >= 3
    assert result.finish_reason in ("stop", "length")
    assert 1 <= result.completion_tokens <= 24
    assert result.engine_ms > 0 and result.first_token_ms is not None


async def test_the_token_limit_cuts_the_reply(engine: InferenceClient) -> None:
    result = await engine.complete(MESSAGES, sampling(max_tokens=5))
    assert result.finish_reason == "length" and result.completion_tokens == 5


async def test_same_seed_same_reply_other_seed_other_reply(engine: InferenceClient) -> None:
    first = await engine.complete(MESSAGES, sampling(temperature=1.0))
    again = await engine.complete(MESSAGES, sampling(temperature=1.0))
    other = await engine.complete(MESSAGES, sampling(temperature=1.0, seed=7))
    assert first.content == again.content
    assert other.content != first.content


async def test_top_p_one_is_accepted(engine: InferenceClient) -> None:
    assert (await engine.complete(MESSAGES, sampling(top_p=1.0))).content


async def test_an_escalated_repetition_penalty_reaches_llama_cpp(stack: DevStack, settings: Settings) -> None:
    # Sent as llama.cpp's `repeat_penalty` in huggingface_hub's extra_body: the server takes it (no error), and
    # it is not dropped on the way, since with the same seed it changes the draw.
    engine = InferenceClient(settings.inference_base_url, settings.model_name, engine=ENGINES[EngineKind.llamacpp])
    asked = [
        *MESSAGES[:1],
        Message(role="user", content="Say the word ale, again and again, as many times as you can."),
    ]
    plain = await engine.complete(asked, sampling(temperature=1.0, max_tokens=40))
    again = await engine.complete(asked, sampling(temperature=1.0, max_tokens=40))
    penalised = await engine.complete(asked, sampling(temperature=1.0, max_tokens=40, repetition_penalty=1.3))
    assert plain.content == again.content
    assert penalised.content and penalised.content != plain.content


async def test_wrong_path_is_misconfigured(settings: Settings, stack: DevStack) -> None:
    with pytest.raises(EngineError) as error:
        await InferenceClient(f"{settings.inference_base_url}/nope", "smollm2").complete(MESSAGES, sampling())
    assert error.value.type is ErrorType.engine_misconfigured and not error.value.retryable


async def test_nothing_listening_is_unavailable_and_retryable() -> None:
    with pytest.raises(EngineError) as error:
        await InferenceClient(f"http://127.0.0.1:{free_port()}", "smollm2").complete(MESSAGES, sampling())
    assert error.value.type is ErrorType.engine_unavailable and error.value.retryable


async def test_a_value_the_engine_rejects_is_an_invalid_request(engine: InferenceClient) -> None:
    with pytest.raises(EngineError) as error:
        await engine.complete(MESSAGES, sampling(frequency_penalty=5.0))
    assert error.value.type is ErrorType.invalid_request and not error.value.retryable


async def test_input_over_the_context_fails_instead_of_returning_nothing(engine: InferenceClient) -> None:
    # llama.cpp answers a streamed over-long input with HTTP 200 and an empty body.
    with pytest.raises(EngineError) as error:
        await engine.complete([Message(role="user", content="word " * 3000)], sampling())
    assert error.value.type is ErrorType.generation_failed


async def test_generations_share_one_tls_context(engine: InferenceClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading the CA bundle into a new TLS context costs ~20 ms of CPU; one per generation was a third of the
    # worker's CPU per job (bench/). At most the process's first generation builds one.
    built = []
    build = httpcore2.default_ssl_context
    monkeypatch.setattr(httpcore2, "default_ssl_context", lambda **kw: built.append(1) or build(**kw))
    for _ in range(3):
        assert (await engine.complete(MESSAGES, sampling(max_tokens=2))).content
    assert len(built) <= 1


async def test_a_json_schema_constrains_the_reply_on_llama_cpp(stack: DevStack, settings: Settings) -> None:
    # Without the schema SmolLM2 answers in prose; with it, llama.cpp's grammar allows only the object.
    engine = InferenceClient(settings.inference_base_url, settings.model_name, engine=ENGINES[EngineKind.llamacpp])
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["joy", "anger", "neutral"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    free = await engine.complete(MESSAGES, sampling(max_tokens=40))
    constrained = await engine.complete(MESSAGES, sampling(max_tokens=40), json_schema=schema)
    with pytest.raises(json.JSONDecodeError):
        json.loads(free.content)
    assert json.loads(constrained.content)["label"] in ("joy", "anger", "neutral")


def connections_to(base_url: str) -> set[int]:
    """The local ports of this process's established TCP connections to the engine at `base_url`."""
    port = urlsplit(base_url).port
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[len("socket:[") : -1])
    found = set()
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and inode in ours and int(remote.split(":")[1], 16) == port:
            found.add(int(local.split(":")[1], 16))
    return found


async def test_generations_share_one_http_client(engine: InferenceClient, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.complete(MESSAGES, sampling(max_tokens=2))
    built = []
    build = httpx2.AsyncClient.__init__
    monkeypatch.setattr(httpx2.AsyncClient, "__init__", lambda *a, **kw: built.append(1) or build(*a, **kw))
    for _ in range(3):
        assert (await engine.complete(MESSAGES, sampling(max_tokens=2))).content
    assert built == []


async def test_the_engine_client_never_contacts_the_hub(
    engine: InferenceClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # huggingface_hub's telemetry fetches an "agent harnesses" list from the Hub to build the User-Agent, unless off.
    hub = await asyncio.start_server(lambda reader, writer: contacted.append(1) or writer.close(), "127.0.0.1", 0)
    contacted: list[int] = []
    port = hub.sockets[0].getsockname()[1]
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
    monkeypatch.setattr(_detect_agent, "_registry", None)
    async with hub:
        assert (await engine.complete(MESSAGES, sampling(max_tokens=2))).content
        await asyncio.sleep(0.1)
    assert contacted == []


async def test_a_stream_left_early_closes_its_connection(engine: InferenceClient, settings: Settings) -> None:
    # What stops a cancelled generation at the engine: its connection goes, though the HTTP client stays.
    before = connections_to(settings.inference_base_url)
    stream = engine.stream_chat(MESSAGES, sampling(max_tokens=200))
    async for chunk in stream:
        if chunk.text:
            break
    during = connections_to(settings.inference_base_url)
    await stream.aclose()
    after = connections_to(settings.inference_base_url)
    assert len(during - after) == 1 and after <= before
    assert (await engine.complete(MESSAGES, sampling(max_tokens=4))).content
