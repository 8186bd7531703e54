"""`python -m orchestrator`: the dev stack, the worker, and chat jobs from the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from loguru import logger

from characters import SCENARIO_TYPES, bundled_character, bundled_characters
from orchestrator import cli_pipeline, health, models_pull
from orchestrator.cli_characters import add_characters_parser
from orchestrator.cli_chat import cmd_chat, connected, reply_of, summary_line
from orchestrator.errors import CliError, StartupError
from orchestrator.settings import Settings, SettingsError, load_settings
from workflows.models import ChatJob, JobType
from workflows.policy import PolicyFileError

DEMO_MESSAGE = "*shakes the rain off my coat* Evening, Mira. Quiet night?"


def configure_logging(settings: Settings) -> None:
    logger.remove()
    if settings.log_json:
        logger.add(sys.stderr, level=settings.log_level, serialize=True)
    else:
        logger.add(sys.stderr, level=settings.log_level, format="{time:HH:mm:ss} {level: <7} {message}")


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
    from orchestrator.client import ChatClient
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
        stop, ready = asyncio.Event(), asyncio.Event()
        workers = asyncio.create_task(run_workers(client, settings, stop, ready))
        try:
            await ready.wait()
            print(f"{args.user_name}: {args.message}")
            result = await reply_of(ChatClient(client, settings), job)
        finally:
            stop.set()
            await workers
    print(f"{bundled_character(args.character).name}: {result.content}")
    print(summary_line(result), file=sys.stderr)
    print(
        f"job {job.job_id} is saved in {settings.state_dir / 'temporal.db'}; see it in the Temporal Web UI at "
        f"{settings.ui_url}/namespaces/{settings.temporal_namespace}/workflows while `make dev` runs.",
        file=sys.stderr,
    )
    return 0


def duration(text: str) -> timedelta:
    """ "90s", "30m", "1h", "2d" as a timedelta."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 90s, 30m, 1h or 2d")
    return timedelta(**{units[unit]: int(number)})


async def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.visibility import recent_jobs

    rows = await recent_jobs(
        await connected(settings),
        job_type=args.job_type,
        character=args.character,
        since=args.since,
        limit=args.limit,
    )
    print(f"{'workflow id':<44} {'type':<18} {'character':<16} {'outcome':<10} {'tries':>5} {'seconds':>8}")
    for row in rows:
        seconds = f"{row.duration_s:.1f}" if row.duration_s is not None else row.status
        attempts = "" if row.attempts is None else str(row.attempts)
        print(
            f"{row.workflow_id:<44} {row.job_type:<18} {row.character:<16} {row.outcome or row.status:<10} "
            f"{attempts:>5} {seconds:>8}"
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
        help="one chat job and its reply, or an interactive conversation",
        description="Submit a chat job to a running stack (`make dev` or a worker). With --message: print the "
        "reply on stdout (as it is written, with --stream); progress and a summary line go to stderr. Without "
        "--message: an interactive conversation that shows the character's greeting, streams each reply and "
        "keeps the history between turns; type /regenerate, /continue or /quit.",
        epilog="examples: python -m orchestrator chat --character Mira --message 'Evening, Mira.' --stream\n"
        "          python -m orchestrator chat --character Mira",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chat.add_argument("-m", "--message", help="the user's message (omit it for an interactive conversation)")
    chat.add_argument("--stream", action="store_true", help="print the reply as it is generated")
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

    jobs = commands.add_parser(
        "jobs", help="recent jobs from Temporal's visibility", description="Recent chat jobs, newest first."
    )
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    listing = jobs_commands.add_parser(
        "list",
        help="recent jobs: id, type, character, outcome, attempts, duration",
        description="List recent ChatWorkflow runs from visibility (search attributes JobType, CharacterName, "
        "Outcome, Attempts), newest first.",
    )
    listing.add_argument("--job-type", choices=[t.value for t in JobType], help="only this job type")
    listing.add_argument("--character", help="only jobs with this character (its name as in the profile)")
    listing.add_argument("--since", type=duration, metavar="AGE", help="only jobs started within AGE, e.g. 30m, 1h, 2d")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default: 50)")
    listing.set_defaults(run=cmd_jobs_list)
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
    except (StartupError, PolicyFileError) as error:
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
