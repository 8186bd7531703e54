"""`python -m orchestrator`: the dev stack, the worker, and chat jobs from the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from loguru import logger
from pydantic import ValidationError

from characters import (
    SCENARIO_TYPES,
    CardError,
    Character,
    UnknownCharacter,
    bundled_character,
    bundled_characters,
    read_card,
)
from orchestrator import cli_pipeline, health, models_pull
from orchestrator.cli_characters import add_characters_parser
from orchestrator.devstack import DevStackError
from orchestrator.settings import Settings, SettingsError, load_settings
from orchestrator.tokens import TokenizerUnavailable
from workflows.models import ChatJob, ChatResult, JobType, describe_validation_error
from workflows.policy import PolicyFileError

if TYPE_CHECKING:
    from temporalio.client import Client

DEMO_MESSAGE = "*shakes the rain off my coat* Evening, Mira. Quiet night?"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def configure_logging(settings: Settings) -> None:
    logger.remove()
    logger.add(sys.stderr, level=settings.log_level, format="{time:HH:mm:ss} {level: <7} {message}")


def character_from_args(args: argparse.Namespace) -> str | Character | None:
    """A bundled character's name, or the profile of a card file (carried in the job inline)."""
    if args.card is None:
        return args.character
    try:
        return read_card(args.card).character
    except CardError as error:
        raise CliError(f"--card {error}", code=2) from None


def character_name(job: ChatJob) -> str | None:
    if isinstance(job.character, str):
        return bundled_character(job.character).name
    return job.character.name if job.character else None


def job_from_args(args: argparse.Namespace) -> ChatJob:
    character = character_from_args(args)
    job_type = JobType(args.job_type) if args.job_type else JobType.roleplay if character else JobType.conversation
    sampling = {
        key: value
        for key, value in (
            ("max_tokens", args.max_tokens),
            ("temperature", args.temperature),
            ("top_p", args.top_p),
            ("seed", args.seed),
        )
        if value is not None
    }
    try:
        return ChatJob(
            job_id=args.job_id or uuid.uuid4().hex,
            job_type=job_type,
            messages=[{"role": "user", "content": args.message}],
            user_name=args.user_name,
            sampling=sampling,
            character=character,
            scenario=args.scenario,
        )
    except ValidationError as error:
        raise CliError(f"invalid job: {describe_validation_error(error, 'job')}", code=2) from None


async def connected(settings: Settings) -> Client:
    from orchestrator.worker import connect

    try:
        return await connect(settings)
    except RuntimeError as error:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address} ({error}); is `make dev` running?"
        ) from None


async def run_job(client: Client, settings: Settings, job: ChatJob) -> ChatResult:
    from temporalio.client import WorkflowFailureError

    from orchestrator.client import ChatClient, InvalidJob

    chat = ChatClient(client, settings)
    try:
        handle = await chat.submit(job)
        print(f"job {job.job_id} started (workflow {handle.id})", file=sys.stderr)
        return await handle.result()
    except (UnknownCharacter, InvalidJob) as error:
        raise CliError(str(error), code=2) from None
    except WorkflowFailureError as error:
        cause = error.cause
        detail = getattr(cause, "cause", None) or cause
        kind = getattr(detail, "type", None) or type(detail).__name__
        raise CliError(f"job {job.job_id} failed: {kind}: {getattr(detail, 'message', detail)}") from None


def print_result(result: ChatResult, name: str | None) -> None:
    print(f"{name or 'Assistant'}: {result.content}")
    print(
        f"[{result.outcome} · {result.attempts} attempt(s) · {result.completion_tokens} tokens · "
        f"{result.timings.total_ms / 1000:.1f} s"
        + (f" · rejected: {', '.join(result.reasons)}" if result.reasons else "")
        + "]",
        file=sys.stderr,
    )


async def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    job = job_from_args(args)
    client = await connected(settings)
    result = await run_job(client, settings, job)
    print_result(result, character_name(job))
    return 0


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.engine_check import engine_limit_problems
    from orchestrator.worker import run_workers, stop_on_signals

    problems = await engine_limit_problems(settings)
    if problems:
        raise CliError(
            f"the engine at {settings.inference_base_url} disagrees with this worker: " + "; ".join(problems)
        )
    client = await connected(settings)
    await run_workers(client, settings, stop_on_signals())
    return 0


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.devstack import DevStack
    from orchestrator.worker import run_workers, stop_on_signals

    with DevStack(settings):
        stop = stop_on_signals()
        client = await connected(settings)
        print(f"dev stack up. Temporal Web UI: {settings.ui_url}  (Ctrl-C stops everything)", file=sys.stderr)
        print("try: python -m orchestrator chat --character Mira --message 'Hello there'", file=sys.stderr)
        await run_workers(client, settings, stop)
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.devstack import DevStack
    from orchestrator.worker import run_workers

    job = ChatJob(
        job_id=f"demo-{uuid.uuid4().hex[:12]}",
        job_type=JobType.roleplay,
        messages=[{"role": "user", "content": args.message}],
        character=args.character,
        user_name=args.user_name,
    )
    with DevStack(settings):
        client = await connected(settings)
        stop = asyncio.Event()
        workers = asyncio.create_task(run_workers(client, settings, stop))
        try:
            print(f"{args.user_name}: {args.message}")
            result = await run_job(client, settings, job)
        finally:
            stop.set()
            await workers
    print_result(result, args.character)
    print(
        f"job {job.job_id} is saved in {settings.state_dir / 'temporal.db'}; see it in the Temporal Web UI at "
        f"{settings.ui_url}/namespaces/{settings.temporal_namespace}/workflows while `make dev` runs.",
        file=sys.stderr,
    )
    return 0


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments: one `error:` line on stderr and exit 2 (scripts read it), not usage plus a message."""

    def error(self, message: str) -> NoReturn:
        print(
            f"error: {self.prog.removeprefix('python -m orchestrator').strip() or 'arguments'}: {message}",
            file=sys.stderr,
        )
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    root = OneLineErrors(
        prog="python -m orchestrator",
        description="chat-worker: chat and roleplay jobs as Temporal workflows. Settings come from "
        "CHAT_WORKER_* environment variables or a .env file (see README.md).",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrors)

    dev = commands.add_parser(
        "dev",
        help="run the embedded stack (Temporal dev server + llama.cpp + worker) until Ctrl-C",
        description="Start the Temporal dev server (SQLite under CHAT_WORKER_STATE_DIR, default .state/, Web UI "
        "on CHAT_WORKER_TEMPORAL_UI_PORT, default 8233), the llama.cpp server with SmolLM2-135M on "
        "CHAT_WORKER_INFERENCE_BASE_URL (default http://127.0.0.1:8088) and a worker, and keep them "
        "running until Ctrl-C or SIGTERM, which stops all three. Logs of the servers go to .state/logs/. "
        "Submit jobs from another terminal with `python -m orchestrator chat`.",
    )
    dev.set_defaults(run=cmd_dev)

    worker = commands.add_parser(
        "worker",
        help="run a worker against an existing Temporal server and inference engine",
        description="Poll task queues 'chat' (workflows) and 'chat-generate' (generation, at most "
        "CHAT_WORKER_GENERATION_SLOTS at once, default 8) until SIGTERM or Ctrl-C, which lets in-flight "
        "generations finish first. At start, a TGI engine's GET /info must match the worker's token limits "
        "and cover its slots, or the worker refuses to run (engines without /info are not checked).",
    )
    worker.set_defaults(run=cmd_worker)

    chat = commands.add_parser(
        "chat",
        help="submit one chat job and print the reply",
        description="Submit one chat job to a running stack (`make dev` or a worker) and print the reply "
        "on stdout; progress and a summary line go to stderr.",
        epilog="example: python -m orchestrator chat --character Mira --message 'Evening, Mira.'",
    )
    chat.add_argument("-m", "--message", required=True, help="the user's message")
    who = chat.add_mutually_exclusive_group()
    who.add_argument(
        "-c",
        "--character",
        help=f"a bundled character to roleplay with ({', '.join(c.name for c in bundled_characters().values())}); "
        "implies --job-type chat_roleplay",
    )
    who.add_argument(
        "--card",
        type=Path,
        metavar="PATH",
        help="a Character Card file (PNG or JSON, V1/V2/V3) to roleplay with, sent inline in the job",
    )
    chat.add_argument(
        "-s",
        "--scenario",
        help=f"the scene: a type ({', '.join(SCENARIO_TYPES)}), woven with the character's details, or free "
        "text (default: the character's own)",
    )
    chat.add_argument("-u", "--user-name", default="User", help="the user's name in the story (default: User)")
    chat.add_argument(
        "--job-type",
        choices=[t.value for t in JobType],
        metavar="TYPE",
        help=f"one of {', '.join(t.value for t in JobType)} (default: chat_roleplay with --character, "
        "else chat_conversation)",
    )
    chat.add_argument("--max-tokens", type=int, help="reply length cap, 1-2048 (default: per job type)")
    chat.add_argument("--temperature", type=float, help="0.1-1.0 (default: per job type)")
    chat.add_argument("--top-p", type=float, help="0.1-1.0 (default: 0.9)")
    chat.add_argument("--seed", type=int, help="sampling seed, for a reproducible first attempt")
    chat.add_argument("--job-id", help="job id (default: random); the same id never runs twice")
    chat.set_defaults(run=cmd_chat)

    demo = commands.add_parser(
        "demo",
        help="start the embedded stack, run one roleplay exchange, print the reply, stop",
        description="What `make demo` runs: the dev stack and a worker start, one roleplay job runs through "
        "Temporal against the real local model, the reply is printed, everything stops. The job stays "
        "in the dev server's history under .state/.",
    )
    demo.add_argument("--character", default="Mira", help="bundled character (default: Mira)")
    demo.add_argument("--message", default=DEMO_MESSAGE, help="the user's message")
    demo.add_argument("--user-name", default="Traveller", help="the user's name (default: Traveller)")
    demo.set_defaults(run=cmd_demo)
    cli_pipeline.add_commands(commands)
    add_characters_parser(commands)
    health.add_command(commands)
    models_pull.add_command(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings)
        return asyncio.run(args.run(args, settings))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except cli_pipeline.InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DevStackError, PolicyFileError, TokenizerUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # temporalio's native runtime was seen to segfault at interpreter exit after all work was done;
    # leave without interpreter teardown so the exit code is the command's own.
    os._exit(code)
