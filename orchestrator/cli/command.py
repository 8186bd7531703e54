"""What every command module declares its commands with, and what several of them share: the `--card`
argument and the connection to Temporal.

A command is data: a `Command` (name, help, description, a table of its arguments, the settings fields it
reads, and `run`, an `async (args, settings) -> int` coroutine giving the exit code) or a `Group` of them
(`jobs list`, `characters show`…). The root parser in orchestrator/cli/__init__.py adds each one with
`add_to`."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from characters import CardError, Character, read_card
from orchestrator.errors import AsCliError, CliError, StartupError
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from temporalio.client import Client

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

Run = Callable[[argparse.Namespace, Settings], Awaitable[int]]

# Commands that run against the stack read every setting: an invalid one stops them at start.
EVERY_SETTING: frozenset[str] = frozenset(Settings.model_fields)
NO_SETTINGS: frozenset[str] = frozenset()


class Argument:
    """One `add_argument` call as data: the flags (or a positional's name) and argparse's options."""

    def __init__(self, *flags: str, **options: Any) -> None:
        self.flags = flags
        self.options = options

    def add_to(self, parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
        parser.add_argument(*self.flags, **self.options)


class OneOf:
    """Arguments of which a command line may give at most one."""

    def __init__(self, *arguments: Argument) -> None:
        self.arguments = arguments

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group()
        for argument in self.arguments:
            argument.add_to(group)


@dataclass(frozen=True)
class Command:
    """`reads`: the Settings fields `run` uses; an invalid CHAT_WORKER_* variable of any other field does not
    stop the command (see load_settings)."""

    name: str
    help: str
    run: Run
    description: str | None = None
    epilog: str | None = None
    arguments: tuple[Argument | OneOf, ...] = ()
    reads: frozenset[str] = EVERY_SETTING
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter

    def add_to(self, commands: Subcommands) -> None:
        parser = commands.add_parser(
            self.name,
            help=self.help,
            description=self.description,
            epilog=self.epilog,
            formatter_class=self.formatter_class,
        )
        for argument in self.arguments:
            argument.add_to(parser)
        parser.set_defaults(run=self.run, reads=self.reads)


@dataclass(frozen=True)
class Group:
    """A command with actions of its own, e.g. `characters` with list, show, import and export."""

    name: str
    help: str
    description: str
    actions: tuple[Command, ...]
    metavar: str = "ACTION"

    def add_to(self, commands: Subcommands) -> None:
        parser = commands.add_parser(self.name, help=self.help, description=self.description)
        actions = parser.add_subparsers(dest=f"{self.name}_command", required=True, metavar=self.metavar)
        for action in self.actions:
            action.add_to(actions)


class CardFile:
    """`--card PATH`: a Character Card file, read when a job first needs its profile and then kept, so a
    command that sends many jobs (a conversation) reads it once. An unreadable card is bad input (exit 2)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    @cached_property
    def character(self) -> Character:
        with AsCliError(CardError, code=2, prefix="--card "):
            return read_card(self.path).character


async def connected(settings: Settings) -> Client:
    from orchestrator.client import connect

    try:
        return await connect(settings)
    except StartupError:  # e.g. the keys file: its own message, not "cannot reach Temporal"
        raise
    except RuntimeError as error:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address} ({error}); is `make dev` running?"
        ) from None
