"""The engine description (orchestrator/engines.py): detection from the engines' answers, the capability table
as the rest of the worker reads it, and the prober and the tokenize route against the session's real llama.cpp
server (llama-cpp-python, SmolLM2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest

from orchestrator.devstack import DevStack, free_port
from orchestrator.engines import ENGINES, GENERIC, EngineKind, detected_engine, engine_from_answers, probed_engine
from orchestrator.health import engine_is_down
from orchestrator.inference import request_parameters
from orchestrator.settings import Settings, SettingsError, load_settings
from orchestrator.tokens import EngineCounter, GgufCounter, TokenizerUnavailable, smollm2_gguf, token_counter
from tests.orchestrator.engine_answers import TGI_INFO  # GET /info for the settings in tgi.env
from workflows.models import EngineError, ErrorType, ResolvedSampling

# TGI's GET /v1/models (router/src/server.rs, openai_get_model_info): the model id as its owner.
TGI_MODELS = {
    "object": "list",
    "data": [{"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "created": 1732000000, "owned_by": "Qwen"}],
}
# vLLM: GET /version ({"version": VLLM_VERSION}, vllm/entrypoints/openai/api_server.py show_version) and
# GET /v1/models (vllm/entrypoints/openai/protocol.py ModelList of ModelCard, `owned_by: str = "vllm"`).
VLLM_VERSION = {"version": "0.6.3.post1"}
VLLM_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "Qwen/Qwen2.5-7B-Instruct",
            "object": "model",
            "created": 1732000000,
            "owned_by": "vllm",
            "root": "Qwen/Qwen2.5-7B-Instruct",
            "parent": None,
            "max_model_len": 8192,
            "permission": [],
        }
    ],
}
# llama-cpp-python's server: GET /v1/models (llama_cpp/server/app.py get_models), `owned_by: "me"`.
LLAMA_CPP_PYTHON_MODELS = {
    "object": "list",
    "data": [{"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}],
}
# llama.cpp's llama-server: GET /v1/models (tools/server/server.cpp, handle_models), `owned_by: "llamacpp"`.
LLAMA_SERVER_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "SmolLM2-135M-Instruct-Q8_0.gguf",
            "object": "model",
            "created": 1732000000,
            "owned_by": "llamacpp",
            "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx_train": 8192, "n_embd": 576, "n_params": 134515008},
        }
    ],
}
# OpenAI's own listing: neither of the engines.
OPENAI_MODELS = {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "system"}]}


@pytest.mark.parametrize(
    ("info", "version", "models", "kind"),
    [
        (TGI_INFO, None, TGI_MODELS, EngineKind.tgi),
        (TGI_INFO, None, None, EngineKind.tgi),
        (None, VLLM_VERSION, VLLM_MODELS, EngineKind.vllm),
        (None, None, VLLM_MODELS, EngineKind.vllm),
        (None, VLLM_VERSION, None, EngineKind.vllm),
        (None, None, LLAMA_CPP_PYTHON_MODELS, EngineKind.llamacpp),
        (None, None, LLAMA_SERVER_MODELS, EngineKind.llamacpp),
        (None, None, OPENAI_MODELS, None),
        (None, None, None, None),
        # Bodies of the wrong shape are no answer: a TGI-less /info, a version that is not a string, lists.
        ({"model_id": "x"}, {"version": 3}, {"data": "nope"}, None),
        ([1, 2], ["version"], [], None),
    ],
)
def test_the_engine_is_told_by_its_answers(info: Any, version: Any, models: Any, kind: EngineKind | None) -> None:
    assert engine_from_answers(info, version, models) == kind


def test_every_engine_kind_has_a_description_of_its_own() -> None:
    assert set(ENGINES) == set(EngineKind)
    assert all(engine.kind == kind for kind, engine in ENGINES.items())
    assert GENERIC.kind is None and GENERIC.tokenize is None


def test_the_tokenize_bodies_and_answers_are_each_engines_own() -> None:
    tgi, vllm, llamacpp = (ENGINES[kind].tokenize for kind in (EngineKind.tgi, EngineKind.vllm, EngineKind.llamacpp))
    assert tgi is not None and vllm is not None and llamacpp is not None
    assert (tgi.path, tgi.body("hi", "m")) == ("/tokenize", {"inputs": "hi", "add_special_tokens": False})
    assert (vllm.path, vllm.body("hi", "m")) == (
        "/tokenize",
        {"prompt": "hi", "model": "m", "add_special_tokens": False},
    )
    assert (llamacpp.path, llamacpp.body("hi", "m")) == ("/extras/tokenize/count", {"input": "hi"})
    tgi_tokens = [{"id": 1, "text": "h", "start": 0, "stop": 1}, {"id": 2, "text": "i", "start": 1, "stop": 2}]
    assert tgi.tokens_in(tgi_tokens) == 2
    assert vllm.tokens_in({"count": 5, "max_model_len": 8192, "tokens": [1, 2, 3, 4, 5]}) == 5
    assert llamacpp.tokens_in({"count": 7}) == 7
    assert (
        tgi.tokens_in({"count": 5}) is None
        and vllm.tokens_in([1]) is None
        and llamacpp.tokens_in({"count": True}) is None
    )
    # Only the routers answer beside generation; llama-cpp-python's route waits behind it.
    assert (tgi.beside_generation, vllm.beside_generation, llamacpp.beside_generation) == (True, True, False)


def test_structured_output_takes_each_engines_form() -> None:
    schema = {"type": "object", "properties": {"mood": {"type": "string"}}}
    assert ENGINES[EngineKind.tgi].response_format(schema) == {"type": "json_object", "value": schema}
    assert ENGINES[EngineKind.vllm].response_format(schema) == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema},
    }
    assert ENGINES[EngineKind.llamacpp].response_format(schema) == {"type": "json_object", "schema": schema}


def test_tgis_traps_are_avoided_only_where_they_are() -> None:
    sampling = ResolvedSampling(temperature=0.7, top_p=1.0, max_tokens=24, seed=1, frequency_penalty=0.3)
    tgi = request_parameters(sampling, ENGINES[EngineKind.tgi])
    llamacpp = request_parameters(sampling, ENGINES[EngineKind.llamacpp])
    assert "top_p" not in tgi and "top_p" not in request_parameters(sampling, GENERIC)
    assert llamacpp["top_p"] == 1.0
    assert tgi["frequency_penalty"] == llamacpp["frequency_penalty"] == 0.3
    assert not any("presence_penalty" in params for params in (tgi, llamacpp))
    stops = ["\nA:", "\nB:", "\nC:", "\nD:", "\nE:"]
    assert ENGINES[EngineKind.tgi].stops(stops) == stops[:4] == GENERIC.stops(stops)
    assert ENGINES[EngineKind.vllm].stops(stops) == stops == ENGINES[EngineKind.llamacpp].stops(stops)


def test_a_repetition_penalty_goes_in_each_engines_own_form() -> None:
    raised = ResolvedSampling(temperature=0.9, top_p=0.9, max_tokens=24, seed=1, repetition_penalty=1.15)
    # TGI's chat API: presence_penalty p becomes repetition_penalty p + 2.0 (router/src/lib.rs).
    tgi = request_parameters(raised, ENGINES[EngineKind.tgi])
    assert tgi["presence_penalty"] == -0.85 and "extra_body" not in tgi
    vllm = request_parameters(raised, ENGINES[EngineKind.vllm])
    assert vllm["extra_body"] == {"repetition_penalty": 1.15} and "presence_penalty" not in vllm
    llamacpp = request_parameters(raised, ENGINES[EngineKind.llamacpp])
    assert llamacpp["extra_body"] == {"repeat_penalty": 1.15} and "presence_penalty" not in llamacpp
    # An engine not known: no field means CTRL's penalty everywhere, so none is sent.
    assert request_parameters(raised, GENERIC).keys() == {"max_tokens", "temperature", "seed", "top_p"}
    unraised = raised.model_copy(update={"repetition_penalty": 1.0})
    for engine in [*ENGINES.values(), GENERIC]:
        params = request_parameters(unraised, engine)
        assert not {"presence_penalty", "extra_body"} & params.keys(), engine.label


def test_the_engine_setting_is_chat_worker_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().engine == "auto"
    monkeypatch.setenv("CHAT_WORKER_ENGINE", "vllm")
    assert load_settings().engine == "vllm"
    monkeypatch.setenv("CHAT_WORKER_ENGINE", "ollama")
    with pytest.raises(SettingsError, match="CHAT_WORKER_ENGINE"):
        load_settings()


async def test_the_real_llama_cpp_server_is_detected(stack: DevStack, settings: Settings) -> None:
    assert await probed_engine(settings.inference_base_url) == EngineKind.llamacpp
    assert await detected_engine("auto", settings.inference_base_url) == ENGINES[EngineKind.llamacpp]


async def test_a_named_engine_is_not_asked() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    assert await detected_engine("tgi", nobody) == ENGINES[EngineKind.tgi]


async def test_an_engine_that_cannot_be_reached_is_described_generically() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(httpx2.TransportError):
        await probed_engine(nobody)
    assert await detected_engine("auto", nobody) == GENERIC


async def test_health_reads_the_table(stack: DevStack, settings: Settings) -> None:
    llamacpp = ENGINES[EngineKind.llamacpp]
    assert not await engine_is_down(settings.inference_base_url, llamacpp)
    assert not await engine_is_down(settings.inference_base_url)  # the old call: /health is 404, /v1/models 200
    assert await engine_is_down(f"http://127.0.0.1:{free_port()}", llamacpp)


async def test_the_llama_cpp_route_counts_as_the_gguf_does(stack: DevStack, settings: Settings) -> None:
    route = ENGINES[EngineKind.llamacpp].tokenize
    assert route is not None
    counter = EngineCounter(settings.inference_base_url, settings.model_name, route)
    texts = ["*pushes the door open* Evening, Mira.", "Any rooms left tonight?"]
    try:
        counts = await counter.count_many(texts)
    finally:
        await counter.aclose()
    local = await GgufCounter(smollm2_gguf(settings)).count_many(texts)
    # llama-cpp-python counts with BOS (and special tokens): at most one more than the GGUF without them.
    assert all(local[text] <= counts[text] <= local[text] + 1 for text in texts), (counts, local)


async def test_a_down_engine_is_an_engine_unavailable_error_while_counting() -> None:
    route = ENGINES[EngineKind.llamacpp].tokenize
    assert route is not None
    counter = EngineCounter(f"http://127.0.0.1:{free_port()}", "smollm2", route)
    try:
        with pytest.raises(EngineError) as raised:
            await counter.count_many(["hello there"])
    finally:
        await counter.aclose()
    assert raised.value.type is ErrorType.engine_unavailable


async def test_engine_counting_needs_a_tokenize_route(settings: Settings) -> None:
    with pytest.raises(TokenizerUnavailable, match="has no tokenize route"):
        await token_counter(settings.model_copy(update={"tokenizer": "engine"}), GENERIC)


async def test_auto_counts_with_the_gguf_on_llama_cpp_and_engine_asks_its_route(
    stack: DevStack, settings: Settings
) -> None:
    llamacpp = ENGINES[EngineKind.llamacpp]
    assert (await token_counter(settings, llamacpp)).name == "gguf"
    engine = await token_counter(settings.model_copy(update={"tokenizer": "engine"}), llamacpp)
    assert engine.name == "engine"
    assert isinstance(engine, EngineCounter)
    await engine.aclose()
