"""`python -m orchestrator models pull`: the engine's weights into the Hugging Face cache ahead of time
(orchestrator/models_pull.py does the work)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from orchestrator.cli.command import NO_SETTINGS, Argument, Command, Group
from orchestrator.errors import AsCliError, CliError
from orchestrator.models_pull import (
    DEFAULT_MODEL,
    DEFAULT_REVISION,
    Pull,
    default_cache_dir,
    describe_failure,
    in_daemon_thread,
    remove_partial_downloads,
    snapshot_size,
    token_source,
)
from orchestrator.settings import Settings


def pull_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Pull:
    """The pull the arguments ask for, defaults from TGI's variables; a bad value names its flag."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    model = args.model or environ.get("MODEL_ID") or DEFAULT_MODEL
    with AsCliError(HFValidationError, code=2, prefix="--model: "):
        validate_repo_id(model)
    revision = args.revision or environ.get("REVISION") or DEFAULT_REVISION
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"--cache-dir: cannot create {cache_dir}: {error.strerror}", code=2) from None
    if not os.access(cache_dir, os.W_OK):
        raise CliError(f"--cache-dir: {cache_dir} is not writable by this user", code=2)
    return Pull(model=model, revision=revision, cache_dir=cache_dir)


async def cmd_models_pull(args: argparse.Namespace, settings: Settings) -> int:
    pull = pull_from(args, os.environ)

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
        raise CliError(message) from None
    files, size = snapshot_size(snapshot)
    print(f"done: {pull.model} at {snapshot.name}: {files} files, {size / 1e9:.1f} GB", file=sys.stderr)
    print(snapshot)
    return 0


MODELS = Group(
    "models",
    help="model weights for the inference engine",
    description="Manage the engine's model weights in the Hugging Face cache.",
    actions=(
        Command(
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
            arguments=(
                Argument("--model", metavar="ID", help=f"Hub repo id (default: $MODEL_ID, else {DEFAULT_MODEL})"),
                Argument(
                    "--revision",
                    metavar="R",
                    help=f"branch, tag or commit (default: $REVISION, else {DEFAULT_REVISION})",
                ),
                Argument(
                    "--cache-dir",
                    metavar="DIR",
                    type=Path,
                    help="Hugging Face hub cache to fill (default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE or "
                    "$HF_HOME/hub, i.e. where TGI looks)",
                ),
            ),
            reads=NO_SETTINGS,
            run=cmd_models_pull,
        ),
    ),
)
