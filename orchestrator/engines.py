"""One description of the inference engine the worker talks to: `CHAT_WORKER_ENGINE=auto|tgi|vllm|llamacpp`
and one capability table, `ENGINES`, that every engine-specific piece of code reads (health probe, start
check, token counting, request parameters) instead of knowing the engines itself.

`auto` asks the engine at worker start (`detected_engine`): TGI answers `GET /info` with its router's
parameters, vLLM answers `GET /version` and lists its models as `owned_by: "vllm"`, llama.cpp's servers list
theirs as `owned_by: "llamacpp"` (llama-server) or `"me"` (llama-cpp-python, the embedded stack's). An engine
that cannot be reached then does not hold the worker up: it runs with `GENERIC`, the description that is safe
on any OpenAI-compatible engine (TGI's stricter rules, no engine tokenizer), and says so once in the log; set
CHAT_WORKER_ENGINE to name the engine and skip the question."""

from __future__ import annotations

import asyncio
import ssl
from enum import StrEnum
from functools import cache
from typing import Any, Literal

import httpx2
from loguru import logger
from pydantic import BaseModel, ConfigDict

EngineChoice = Literal["auto", "tgi", "vllm", "llamacpp"]
DETECT_TIMEOUT_SECONDS = 5.0


@cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context of every HTTP client that talks to the engine. A new one loads the CA bundle again:
    ~20-50 ms of CPU on the worker's event loop, once per generation (a third of the worker's CPU per job) and
    once per engine check (the generation worker's, at the start of nearly every generation) when each client
    built its own."""
    return httpx2.create_ssl_context()


class EngineKind(StrEnum):
    tgi = "tgi"
    vllm = "vllm"
    llamacpp = "llamacpp"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenizeRoute(Frozen):
    """How the engine counts a text's tokens over HTTP."""

    path: str
    text_field: str
    sends_model: bool
    # The answer: a list with one element per token (TGI), or {"count": n} (vLLM, llama-cpp-python).
    answer: Literal["token_list", "count"]
    # Served beside running generations (TGI's and vLLM's routers). llama-cpp-python's waits behind them, so
    # CHAT_WORKER_TOKENIZER=auto counts with the local GGUF there and uses the route only when told to (=engine).
    beside_generation: bool

    def body(self, text: str, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {self.text_field: text}
        if self.sends_model:
            body["model"] = model
        if self.text_field != "input":  # llama-cpp-python's request model has no such field
            body["add_special_tokens"] = False
        return body

    def tokens_in(self, answer: Any) -> int | None:
        """The count in the engine's answer; None when the answer is not of this route's shape."""
        if self.answer == "token_list":
            return len(answer) if isinstance(answer, list) else None
        count = answer.get("count") if isinstance(answer, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None


StructuredForm = Literal["tgi_grammar", "openai_json_schema", "json_object_schema"]


def response_format(form: StructuredForm, schema: dict[str, Any], name: str = "reply") -> dict[str, Any]:
    """The `response_format` that constrains a reply to `schema`, in the engine's own form."""
    if form == "tgi_grammar":
        # TGI: https://huggingface.co/docs/text-generation-inference/basic_tutorials/using_guidance
        return {"type": "json_object", "value": schema}
    if form == "json_object_schema":
        # llama-cpp-python: llama_types.ChatCompletionRequestResponseFormat {"type": "json_object", "schema"}
        return {"type": "json_object", "schema": schema}
    # OpenAI's form, which vLLM implements (its older `guided_json` extra field says the same).
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


class RepetitionParameter(Frozen):
    """How the engine takes a repetition penalty r: CTRL's (Keskar et al. 2019), the logit of a token already
    seen divided by r (multiplied when negative), 1.0 none. All three implement that penalty; each names it
    differently, and the worker sends it only when an attempt raised it above 1.0 (the engine's default)."""

    field: str
    # Sent as r + offset: TGI's chat API has no such field but turns `presence_penalty` p into its
    # repetition_penalty p + 2.0, so r is sent as presence_penalty r - 2.0.
    offset: float = 0.0
    # Outside OpenAI's request fields: sent in huggingface_hub's `extra_body`, merged into the request's JSON.
    extra: bool

    def request_fields(self, penalty: float) -> dict[str, Any]:
        sent = {self.field: round(penalty + self.offset, 6)}
        return {"extra_body": sent} if self.extra else sent


class Engine(Frozen):
    """What the worker must know about one engine."""

    kind: EngineKind | None  # None: GENERIC, an engine not (yet) known
    label: str
    # GET it: not 200 is down. None: the engine has none, and GET /v1/models answering 5xx is down.
    health_path: str | None
    # TGI's GET /info (model, token limits, concurrency cap), checked at worker start.
    has_info: bool
    # More stop sequences than this are refused (TGI's MAX_STOP_SEQUENCES, 4 by default); None: no limit.
    # vLLM and llama.cpp take any number: a list, per request, that nobody sends long.
    max_stop_sequences: int | None
    # TGI rejects top_p = 1.0 (it must be < 1.0); leaving it out means the same.
    top_p_below_one: bool
    # How a repetition penalty is sent; None: not at all. OpenAI's presence_penalty is never sent: TGI turns it
    # into repetition_penalty p + 2.0, a far stronger and different penalty. frequency_penalty is OpenAI's
    # field on all three and is sent as it is; TGI divides each token's count by the sequence's length
    # (server/text_generation_server/utils/logits_process.py), so it is much weaker there.
    repetition: RepetitionParameter | None
    structured_output: StructuredForm
    tokenize: TokenizeRoute | None

    def response_format(self, schema: dict[str, Any], name: str = "reply") -> dict[str, Any]:
        return response_format(self.structured_output, schema, name)

    def stops(self, stop: list[str]) -> list[str]:
        return stop if self.max_stop_sequences is None else stop[: self.max_stop_sequences]


ENGINES: dict[EngineKind, Engine] = {
    EngineKind.tgi: Engine(
        kind=EngineKind.tgi,
        label="TGI",
        health_path="/health",
        has_info=True,
        max_stop_sequences=4,
        top_p_below_one=True,
        # router/src/lib.rs, ChatRequest::try_into_generate: `repetition_penalty = presence_penalty.map(|x| x + 2.0)`;
        # validation.rs only wants it > 0. ChatRequest does not deny unknown fields: a `repetition_penalty`
        # field would be ignored without a word.
        repetition=RepetitionParameter(field="presence_penalty", offset=-2.0, extra=False),
        structured_output="tgi_grammar",
        # TGI's router: POST /tokenize {"inputs"} → [{"id", "text", "start", "stop"}, ...]
        tokenize=TokenizeRoute(
            path="/tokenize", text_field="inputs", sends_model=False, answer="token_list", beside_generation=True
        ),
    ),
    EngineKind.vllm: Engine(
        kind=EngineKind.vllm,
        label="vLLM",
        health_path="/health",
        has_info=False,
        max_stop_sequences=None,
        top_p_below_one=False,
        # vllm/entrypoints/openai/protocol.py, ChatCompletionRequest's extra sampling parameters:
        # `repetition_penalty: Optional[float] = None` (then the model's generation_config, else 1.0).
        repetition=RepetitionParameter(field="repetition_penalty", extra=True),
        structured_output="openai_json_schema",
        # vLLM's TokenizeRequest {"model", "prompt", "add_special_tokens"} → TokenizeResponse {"count", ...}
        tokenize=TokenizeRoute(
            path="/tokenize", text_field="prompt", sends_model=True, answer="count", beside_generation=True
        ),
    ),
    EngineKind.llamacpp: Engine(
        kind=EngineKind.llamacpp,
        label="llama.cpp",
        health_path=None,  # llama-cpp-python's server has no /health
        has_info=False,
        max_stop_sequences=None,
        top_p_below_one=False,
        # llama-cpp-python's server (llama_cpp/server/types.py, CreateChatCompletionRequest): `repeat_penalty`,
        # default 1.1, over the last 64 tokens; llama.cpp's llama-server takes the same field.
        repetition=RepetitionParameter(field="repeat_penalty", extra=True),
        structured_output="json_object_schema",
        # llama-cpp-python's server (the embedded stack's): POST /extras/tokenize/count {"input"} → {"count"};
        # it tokenizes with BOS and special tokens, so a count is at most a token or two high. llama.cpp's own
        # llama-server has no such route (404): it counts with the local GGUF or the estimate.
        tokenize=TokenizeRoute(
            path="/extras/tokenize/count",
            text_field="input",
            sends_model=False,
            answer="count",
            beside_generation=False,
        ),
    ),
}

# For an engine not known: what is safe on all three (TGI's limits), health as TGI and vLLM have it with
# llama.cpp's fallback, and no engine tokenizer (the local GGUF or the estimate count).
GENERIC = Engine(
    kind=None,
    label="OpenAI-compatible (not detected)",
    health_path="/health",
    has_info=False,
    max_stop_sequences=4,
    top_p_below_one=True,
    repetition=None,  # no field means CTRL's penalty on every OpenAI-compatible engine
    structured_output="openai_json_schema",
    tokenize=None,
)


def _owners(models: Any) -> set[str]:
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list):
        return set()
    return {str(model.get("owned_by")) for model in data if isinstance(model, dict)}


def engine_from_answers(info: Any, version: Any, models: Any) -> EngineKind | None:
    """The engine from its answers to GET /info, /version and /v1/models (each its decoded JSON body, or
    None when the route answered anything but 200 with JSON); None when they match no known engine."""
    if isinstance(info, dict) and {"model_id", "max_concurrent_requests"} <= info.keys():
        return EngineKind.tgi
    owners = _owners(models)
    if "vllm" in owners:
        return EngineKind.vllm
    if owners & {"llamacpp", "me"}:
        return EngineKind.llamacpp
    if isinstance(version, dict) and isinstance(version.get("version"), str):  # vLLM behind a renamed listing
        return EngineKind.vllm
    return None


async def _json_answer(http: httpx2.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


async def probed_engine(base_url: str, api_key: str | None = None) -> EngineKind | None:
    """The engine at `base_url`, asked; raises httpx2.TransportError when it cannot be reached."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx2.AsyncClient(
        base_url=base_url, headers=headers, timeout=DETECT_TIMEOUT_SECONDS, verify=tls_context()
    ) as http:
        info, version, models = await asyncio.gather(
            _json_answer(http, "/info"), _json_answer(http, "/version"), _json_answer(http, "/v1/models")
        )
    return engine_from_answers(info, version, models)


async def detected_engine(
    choice: EngineChoice, base_url: str, api_key: str | None = None, *, quiet: bool = False
) -> Engine:
    """The engine's description: the one CHAT_WORKER_ENGINE names, or for `auto` the one the engine's answers
    show; GENERIC when it cannot be reached or matches none (logged unless `quiet`)."""
    if choice != "auto":
        return ENGINES[EngineKind(choice)]
    try:
        kind = await probed_engine(base_url, api_key)
    except httpx2.TransportError as error:
        if quiet:
            return GENERIC
        logger.warning(
            "engine at {} not reached to detect its kind ({}): using the {} description; set CHAT_WORKER_ENGINE "
            "to name it",
            base_url,
            type(error).__name__,
            GENERIC.label,
        )
        return GENERIC
    if kind is None:
        if quiet:
            return GENERIC
        logger.warning(
            "engine at {} is none of tgi, vllm, llamacpp by its answers: using the {} description",
            base_url,
            GENERIC.label,
        )
        return GENERIC
    return ENGINES[kind]
