"""The inference client against the real llama.cpp server and the real SmolLM2 model."""

import json

import httpcore2
import pytest

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
