"""The engine's weights into the Hugging Face cache ahead of time, so TGI (HF_HUB_OFFLINE=1 in tgi.env) and
vLLM start offline from the same cache.

huggingface_hub's `snapshot_download` does the work: it shows a progress bar per file, retries a dropped
connection from where it stopped, skips the files already in the cache (so a rerun continues an
interrupted pull), and sends HF_TOKEN (or a saved `hf auth login`) for gated or private models.

Defaults come from TGI's own variables (MODEL_ID, REVISION, HUGGINGFACE_HUB_CACHE), so running with
`env_file: tgi.env` pulls exactly what TGI will load, where it looks. The command, `python -m orchestrator
models pull`, is in orchestrator/cli/models.py."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"
DEFAULT_REVISION = "main"
T = TypeVar("T")


class Pull(BaseModel):
    model: str
    revision: str
    cache_dir: Path


def default_cache_dir() -> Path:
    """Where huggingface_hub (and so TGI) looks: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE or $HF_HOME/hub."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def token_source(environ: Mapping[str, str]) -> str:
    from huggingface_hub import get_token

    if environ.get("HF_TOKEN"):
        return "HF_TOKEN"
    return "the saved `hf auth login` token" if get_token() else "none (public models only)"


def describe_failure(error: Exception, pull: Pull) -> str | None:
    """One line saying what went wrong and what to do, or None for an error this module does not know."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    wanted = f"{pull.model}@{pull.revision}"
    if isinstance(error, IncompleteSnapshotError):
        return f"the Hub is unreachable and the cached copy of {wanted} is incomplete: rerun with network access"
    if isinstance(error, LocalEntryNotFoundError) and isinstance(error.__cause__, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set and {wanted} is not in {pull.cache_dir}: run with HF_HUB_OFFLINE=0 to download"
    if isinstance(error, LocalEntryNotFoundError):
        cause = error.__cause__ or error
        return (
            f"cannot reach the Hub at {constants.ENDPOINT} ({type(cause).__name__}: {cause}) and {wanted} is "
            f"not in {pull.cache_dir}: check the network, proxy or HF_ENDPOINT and rerun"
        )
    if isinstance(error, GatedRepoError):
        return f"{pull.model} is gated: accept its terms on the Hub, then set HF_TOKEN to a token of that account"
    if isinstance(error, RepositoryNotFoundError):
        return f"no model {pull.model} on the Hub (a private one needs HF_TOKEN)"
    if isinstance(error, RevisionNotFoundError):
        return f"{pull.model} has no revision {pull.revision!r}"
    if isinstance(error, HfHubHTTPError) and error.response.status_code == 401:
        return f"the Hub refused the token (HTTP 401) for {wanted}: check HF_TOKEN"
    if isinstance(error, HfHubHTTPError):
        return f"the Hub answered HTTP {error.response.status_code} for {wanted}: {error}".splitlines()[0]
    if isinstance(error, OSError):
        return f"cannot write the weights to {pull.cache_dir}: {error.strerror or error}"
    return None


def remove_partial_downloads(pull: Pull, since: float) -> int:
    """Delete the unfinished files of an interrupted pull (`blobs/*.incomplete` written since it started),
    which the next run would not reuse. Returns how many."""
    from huggingface_hub.file_download import repo_folder_name

    blobs = pull.cache_dir / repo_folder_name(repo_id=pull.model, repo_type="model") / "blobs"
    partial = [p for p in blobs.glob("*.incomplete") if p.stat().st_mtime >= since]
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def snapshot_size(path: Path) -> tuple[int, int]:
    """(files, bytes) of a snapshot; its files are links into the cache's blobs."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


async def in_daemon_thread(function: Callable[[], T]) -> T:
    """Run blocking work so that Ctrl-C ends the command at once: asyncio's default executor would wait for
    a half-downloaded file to finish before letting the process exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            outcome(value)

    def run() -> None:
        # Ctrl-C must reach the main thread: a SIGINT the kernel hands to this thread (or to the download threads,
        # which inherit its mask) only flags Python's handler, and the event loop, asleep with no wakeup fd, would
        # not run it until something else woke it (seen as a pull that ignored Ctrl-C).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting coroutine, which re-raises it
            loop.call_soon_threadsafe(settle, future.set_exception, error)
        else:
            loop.call_soon_threadsafe(settle, future.set_result, result)

    threading.Thread(target=run, name="models-pull", daemon=True).start()
    return await future
