"""`python -m orchestrator`: the dev stack, the worker, and chat jobs from the command line.

Each command group is a module here (stack, chat, jobs, pipeline, characters, health, models) that
declares its commands as `Command`/`Group` data (orchestrator/cli/command.py); `parser()` adds them in the
order `--help` lists them, and `main()` runs the chosen one with the settings it reads."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn

from loguru import logger

from orchestrator.cli import characters, chat, health, jobs, models, pipeline, privacy, stack
from orchestrator.cli.command import Command, Group
from orchestrator.errors import AsCliError, CliError, StartupError
from orchestrator.settings import Settings, SettingsError, load_settings
from workflows.policy import PolicyFileError

COMMANDS: tuple[Command | Group, ...] = (
    stack.DEV,
    stack.WORKER,
    chat.CHAT,
    stack.DEMO,
    jobs.JOBS,
    pipeline.VALIDATE,
    pipeline.CONTEXT,
    pipeline.SCHEMA,
    characters.CHARACTERS,
    health.HEALTH,
    models.MODELS,
    privacy.KEYS,
    privacy.CODEC_SERVER,
)


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments are a CliError with exit code 2: one `error:` line naming the command (scripts read it),
    not usage plus a message."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("python -m orchestrator").strip() or "arguments"
        raise CliError(f"{command}: {message}", code=2)


def parser() -> argparse.ArgumentParser:
    root = OneLineErrors(
        prog="python -m orchestrator",
        description="chat-worker: chat and roleplay jobs as Temporal workflows. Settings come from "
        "CHAT_WORKER_* environment variables or a .env file (see README.md).",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrors)
    for command in COMMANDS:
        command.add_to(commands)
    return root


def configure_logging(settings: Settings) -> None:
    logger.remove()
    if settings.log_json:
        logger.add(sys.stderr, level=settings.log_level, serialize=True)
    else:
        logger.add(sys.stderr, level=settings.log_level, format="{time:HH:mm:ss} {level: <7} {message}")


def exit_code(args: argparse.Namespace) -> int:
    """What the command returns; whatever stops it early is raised as a CliError."""
    with AsCliError(SettingsError, code=2):
        settings = load_settings(reads=args.reads)
    configure_logging(settings)
    with AsCliError(StartupError, PolicyFileError, code=1):
        return asyncio.run(args.run(args, settings))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return exit_code(parser().parse_args(argv))
    except CliError as error:
        print(error.line, file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return 130
