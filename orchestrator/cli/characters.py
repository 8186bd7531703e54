"""`python -m orchestrator characters …`: bundled profiles and Character Cards. No server is involved, so
nothing here imports temporalio."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from characters import CardError, UnknownCharacter, bundled_character, bundled_characters, export_card, read_card
from characters.cards import CARD_FORMATS
from characters.registry import profile_yaml
from orchestrator.cli.command import NO_SETTINGS, Argument, Command, Group
from orchestrator.errors import AsCliError, CliError
from orchestrator.settings import Settings

SUMMARY_WIDTH = 100


def summary(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SUMMARY_WIDTH else line[: SUMMARY_WIDTH - 1].rstrip() + "…"


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    profiles = list(bundled_characters().values())
    width = max(len(c.name) for c in profiles)
    for character in profiles:
        print(f"{character.name:<{width}}  {summary(character.creator_notes or character.description)}")
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with AsCliError(UnknownCharacter, code=2):
        print(profile_yaml(bundled_character(args.name)), end="")
    return 0


async def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    with AsCliError(CardError, code=2):
        card = read_card(args.path)
    if args.json:
        print(json.dumps({**card.character.model_dump(mode="json"), "spec": card.spec}))
    else:
        print(f"# read from {args.path}, a {card.spec.upper()} card")
        print(profile_yaml(card.character), end="")
    return 0


def default_output(name: str, card_format: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "character"
    return Path(f"{slug}.{card_format.rsplit('-', 1)[1]}")


def exported_card(args: argparse.Namespace) -> tuple[str, bytes]:
    """The bundled profile's name and its card file's bytes."""
    try:
        character = bundled_character(args.name)
        image = args.image.read_bytes() if args.image else None
        return character.name, export_card(character, args.format, image)
    except (UnknownCharacter, CardError) as error:
        raise CliError(str(error), code=2) from None
    except OSError as error:
        raise CliError(f"{args.image}: cannot read it: {error.strerror or error}", code=2) from None


def written_card(args: argparse.Namespace) -> Path:
    """Where the card file was written."""
    name, data = exported_card(args)
    output: Path = args.output or default_output(name, args.format)
    if output.exists() and not args.force:
        raise CliError(f"{output} exists; use --force to replace it", code=2)
    try:
        output.write_bytes(data)
    except OSError as error:
        raise CliError(f"{output}: cannot write it: {error.strerror or error}", code=2) from None
    return output


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    print(written_card(args))
    return 0


CHARACTERS = Group(
    "characters",
    help="bundled character profiles, and Character Cards (PNG/JSON, V1/V2/V3) in and out",
    description="Bundled profiles live in characters/profiles/*.yaml. Cards are the files SillyTavern and "
    "other roleplay front ends use: PNG with the card in a 'chara' (V2) or 'ccv3' (V3) text chunk, or JSON. "
    "A job names a bundled character or carries a card inline (`chat --card PATH`). Needs no server.",
    actions=(
        Command(
            "list",
            help="one line per bundled profile: name and what it is",
            reads=NO_SETTINGS,
            run=cmd_list,
        ),
        Command(
            "show",
            help="a bundled profile as YAML",
            description="Print a bundled profile as YAML.",
            arguments=(Argument("name", metavar="NAME", help="the profile's name, any case (see `characters list`)"),),
            reads=NO_SETTINGS,
            run=cmd_show,
        ),
        Command(
            "import",
            help="read a PNG or JSON card and print its profile; saves nothing",
            description="Read a Character Card (PNG or JSON; V1, V2 or V3) and print the profile it holds: YAML "
            "(fit for characters/profiles/) by default, or with --json one JSON object whose 'spec' says which "
            "format was read. Nothing is saved. A file that is not a readable card exits 2 with one 'error:' line.",
            epilog="example: python -m orchestrator characters import Seraphina.png --json",
            arguments=(
                Argument("path", type=Path, metavar="PATH", help="the card file (.png or .json)"),
                Argument("--json", action="store_true", help="print one JSON object instead of YAML"),
            ),
            reads=NO_SETTINGS,
            run=cmd_import,
        ),
        Command(
            "export",
            help="write a bundled profile as a card file for SillyTavern",
            description="Write a bundled profile as a Character Card. v3-png carries both the V3 'ccv3' chunk and "
            "a V2 'chara' chunk for older readers. Fields no card spec has (appearance, background, speaking_style, "
            "scenarios) travel in extensions.chat_worker, so the card imports back unchanged. Prints the path "
            "written.",
            epilog="example: python -m orchestrator characters export Mira --format v3-png -o mira.png",
            arguments=(
                Argument("name", metavar="NAME", help="the bundled profile's name (see `characters list`)"),
                Argument(
                    "--format",
                    choices=CARD_FORMATS,
                    default="v3-png",
                    help="card format (default: v3-png, read by all)",
                ),
                Argument(
                    "-o",
                    "--output",
                    type=Path,
                    metavar="PATH",
                    help="file to write (default: NAME.png or NAME.json here)",
                ),
                Argument("--image", type=Path, metavar="PATH", help="avatar image for a PNG card (default: plain)"),
                Argument("--force", action="store_true", help="replace the output file if it exists"),
            ),
            reads=NO_SETTINGS,
            run=cmd_export,
        ),
    ),
)
