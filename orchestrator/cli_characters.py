"""`python -m orchestrator characters …`: bundled profiles and Character Cards. No server is involved, so
nothing here imports temporalio."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from characters import CardError, UnknownCharacter, bundled_character, bundled_characters, export_card, read_card
from characters.cards import CARD_FORMATS
from characters.registry import profile_yaml

if TYPE_CHECKING:
    from orchestrator.settings import Settings

SUMMARY_WIDTH = 100


def failed(message: str) -> int:
    """One `error:` line on stderr (whatever line breaks the message had) and exit code 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def summary(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SUMMARY_WIDTH else line[: SUMMARY_WIDTH - 1].rstrip() + "…"


def cmd_list(args: argparse.Namespace) -> int:
    profiles = list(bundled_characters().values())
    width = max(len(c.name) for c in profiles)
    for character in profiles:
        print(f"{character.name:<{width}}  {summary(character.creator_notes or character.description)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        character = bundled_character(args.name)
    except UnknownCharacter as error:
        return failed(str(error))
    print(profile_yaml(character), end="")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        card = read_card(args.path)
    except CardError as error:
        return failed(str(error))
    if args.json:
        print(json.dumps({**card.character.model_dump(mode="json"), "spec": card.spec}))
    else:
        print(f"# read from {args.path}, a {card.spec.upper()} card")
        print(profile_yaml(card.character), end="")
    return 0


def default_output(name: str, card_format: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "character"
    return Path(f"{slug}.{card_format.rsplit('-', 1)[1]}")


def cmd_export(args: argparse.Namespace) -> int:
    try:
        character = bundled_character(args.name)
        image = args.image.read_bytes() if args.image else None
        data = export_card(character, args.format, image)
    except (UnknownCharacter, CardError) as error:
        return failed(str(error))
    except OSError as error:
        return failed(f"{args.image}: cannot read it: {error.strerror or error}")
    output: Path = args.output or default_output(character.name, args.format)
    if output.exists() and not args.force:
        return failed(f"{output} exists; use --force to replace it")
    try:
        output.write_bytes(data)
    except OSError as error:
        return failed(f"{output}: cannot write it: {error.strerror or error}")
    print(output)
    return 0


def run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace, Settings], Awaitable[int]]:
    """The CLI's `run` signature for a handler that needs neither settings nor an event loop."""

    async def run_handler(args: argparse.Namespace, settings: Settings) -> int:
        return handler(args)

    return run_handler


def add_characters_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    characters = commands.add_parser(
        "characters",
        help="bundled character profiles, and Character Cards (PNG/JSON, V1/V2/V3) in and out",
        description="Bundled profiles live in characters/profiles/*.yaml. Cards are the files SillyTavern and "
        "other roleplay front ends use: PNG with the card in a 'chara' (V2) or 'ccv3' (V3) text chunk, or JSON. "
        "A job names a bundled character or carries a card inline (`chat --card PATH`). Needs no server.",
    )
    actions = characters.add_subparsers(dest="characters_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="one line per bundled profile: name and what it is")
    listing.set_defaults(run=run(cmd_list))

    show = actions.add_parser("show", help="a bundled profile as YAML", description="Print a bundled profile as YAML.")
    show.add_argument("name", metavar="NAME", help="the profile's name, any case (see `characters list`)")
    show.set_defaults(run=run(cmd_show))

    reading = actions.add_parser(
        "import",
        help="read a PNG or JSON card and print its profile; saves nothing",
        description="Read a Character Card (PNG or JSON; V1, V2 or V3) and print the profile it holds: YAML "
        "(fit for characters/profiles/) by default, or with --json one JSON object whose 'spec' says which "
        "format was read. Nothing is saved. A file that is not a readable card exits 2 with one 'error:' line.",
        epilog="example: python -m orchestrator characters import Seraphina.png --json",
    )
    reading.add_argument("path", type=Path, metavar="PATH", help="the card file (.png or .json)")
    reading.add_argument("--json", action="store_true", help="print one JSON object instead of YAML")
    reading.set_defaults(run=run(cmd_import))

    writing = actions.add_parser(
        "export",
        help="write a bundled profile as a card file for SillyTavern",
        description="Write a bundled profile as a Character Card. v3-png carries both the V3 'ccv3' chunk and a "
        "V2 'chara' chunk for older readers. Fields no card spec has (appearance, background, speaking_style, "
        "scenarios) travel in extensions.chat_worker, so the card imports back unchanged. Prints the path written.",
        epilog="example: python -m orchestrator characters export Mira --format v3-png -o mira.png",
    )
    writing.add_argument("name", metavar="NAME", help="the bundled profile's name (see `characters list`)")
    writing.add_argument(
        "--format", choices=CARD_FORMATS, default="v3-png", help="card format (default: v3-png, read by all)"
    )
    writing.add_argument(
        "-o", "--output", type=Path, metavar="PATH", help="file to write (default: NAME.png or NAME.json here)"
    )
    writing.add_argument("--image", type=Path, metavar="PATH", help="avatar image for a PNG card (default: plain)")
    writing.add_argument("--force", action="store_true", help="replace the output file if it exists")
    writing.set_defaults(run=run(cmd_export))
