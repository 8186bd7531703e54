"""`python -m orchestrator models pull`: the engine's weights into the Hugging Face cache ahead of time, so
TGI (HF_HUB_OFFLINE=1 in tgi.env) and vLLM start offline from the same cache.

huggingface_hub's `snapshot_download` does the work: it shows a progress bar per file, retries a dropped
connection from where it stopped, skips the files already in the cache (so a rerun continues an
interrupted pull), and sends HF_TOKEN (or a saved `hf auth login`) for gated or private models.

Defaults come from TGI's own variables (MODEL_ID, REVISION, HUGGINGFACE_HUB_CACHE), so running with
`env_file: tgi.env` pulls exactly what TGI will load, where it looks."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"
DEFAULT_REVISION = "main"
T = TypeVar("T")


class PullError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Pull(BaseModel):
    model: str
    revision: str
    cache_dir: Path


def default_cache_dir() -> Path:
    """Where huggingface_hub (and so TGI) looks: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE or $HF_HOME/hub."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def pull_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Pull:
    """The pull the arguments ask for, defaults from TGI's variables; a bad value names its flag."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    model = args.model or environ.get("MODEL_ID") or DEFAULT_MODEL
    try:
        validate_repo_id(model)
    except HFValidationError as error:
        raise PullError(f"--model: {error}", code=2) from None
    revision = args.revision or environ.get("REVISION") or DEFAULT_REVISION
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PullError(f"--cache-dir: cannot create {cache_dir}: {error.strerror}", code=2) from None
    if not os.access(cache_dir, os.W_OK):
        raise PullError(f"--cache-dir: {cache_dir} is not writable by this user", code=2)
    return Pull(model=model, revision=revision, cache_dir=cache_dir)


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
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting coroutine, which re-raises it
            loop.call_soon_threadsafe(settle, future.set_exception, error)
        else:
            loop.call_soon_threadsafe(settle, future.set_result, result)

    threading.Thread(target=run, name="models-pull", daemon=True).start()
    return await future


async def cmd_models_pull(args: argparse.Namespace, _settings: object) -> int:
    try:
        pull = pull_from(args, os.environ)
    except PullError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code

    from huggingface_hub import snapshot_download

    print(f"pulling {pull.model} (revision {pull.revision}) into {pull.cache_dir}", file=sys.stderr)
    print(f"  token: {token_source(os.environ)}", file=sys.stderr)
    print("  files already in the cache are kept: rerun the same command to continue", file=sys.stderr)
    started = time.time()
    try:
        snapshot = Path(
            await in_daemon_thread(
                lambda: snapshot_download(pull.model, revision=pull.revision, cache_dir=pull.cache_dir)
            )
        )
    except asyncio.CancelledError:
        removed = remove_partial_downloads(pull, started)
        print(f"\ninterrupted: {removed} unfinished file(s) removed; rerun to continue", file=sys.stderr)
        raise
    except Exception as error:
        message = describe_failure(error, pull)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    files, size = snapshot_size(snapshot)
    print(f"done: {pull.model} at {snapshot.name}: {files} files, {size / 1e9:.1f} GB", file=sys.stderr)
    print(snapshot)
    return 0


def add_command(commands: Any) -> None:
    """`models pull`, registered by orchestrator.__main__.parser()."""
    models = commands.add_parser(
        "models",
        help="model weights for the inference engine",
        description="Manage the engine's model weights in the Hugging Face cache.",
    )
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pull = actions.add_parser(
        "pull",
        help="download the engine's model into the Hugging Face cache, so TGI starts offline",
        description="Download a model snapshot from the Hugging Face Hub into the cache that TGI and vLLM "
        "read (tgi.env sets HF_HUB_OFFLINE=1, so they never download at start). Shows a progress bar per "
        "file; files already in the cache are kept, so rerunning continues an interrupted pull. Sends "
        "HF_TOKEN (or a saved `hf auth login`) for gated or private models. Defaults come from TGI's "
        "variables MODEL_ID, REVISION and HUGGINGFACE_HUB_CACHE, so running it with tgi.env's environment "
        "pulls exactly what TGI will load. Prints the snapshot's path on stdout.",
        epilog="production: docker compose --profile tools run --rm models-pull   "
        "(into the stack's hf-cache volume; see README.md)",
    )
    pull.add_argument(
        "--model",
        metavar="ID",
        help=f"Hub repo id (default: $MODEL_ID, else {DEFAULT_MODEL})",
    )
    pull.add_argument(
        "--revision",
        metavar="R",
        help=f"branch, tag or commit (default: $REVISION, else {DEFAULT_REVISION})",
    )
    pull.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        help="Hugging Face hub cache to fill (default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE or "
        "$HF_HOME/hub, i.e. where TGI looks)",
    )
    pull.set_defaults(run=cmd_models_pull)
