"""`python -m orchestrator keys new` and `codec-server`: payload encryption's keys, and the server through
which the Temporal UI and CLI read encrypted jobs (README "Privacy")."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.command import NO_SETTINGS, Argument, Command, Group
from orchestrator.errors import AsCliError, CliError
from orchestrator.settings import Settings

KEYS_FILE_READ = frozenset({"payload_keys_file"})
CORS_ORIGIN_HELP = "an origin whose pages may call it, e.g. the UI's http://127.0.0.1:8233 (repeatable)"


def key_id(value: str) -> str:
    from orchestrator.codec import KEY_ID_RULE, is_key_id

    if not is_key_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a key id ({KEY_ID_RULE})")
    return value


async def cmd_keys_new(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.codec import new_key_line

    print(new_key_line(args.id))
    return 0


def bearer_token(path: Path) -> str:
    with AsCliError(OSError, code=2, prefix=f"--token-file {path}: cannot read it: "):
        token = path.read_text(encoding="utf-8").strip()
    if not token or len(token.split()) != 1:
        raise CliError(f"--token-file {path}: must hold one token on one line", code=2)
    return token


async def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.codec import KeysFileError, read_keys
    from orchestrator.codec_server import CodecServerError, codec_server_running
    from orchestrator.worker import stop_on_signals

    if settings.payload_keys_file is None:
        raise CliError("CHAT_WORKER_PAYLOAD_KEYS_FILE is not set: the codec server decrypts with those keys", 2)
    with AsCliError(KeysFileError, code=1, prefix="CHAT_WORKER_PAYLOAD_KEYS_FILE: "):
        keys = read_keys(settings.payload_keys_file)
    token = bearer_token(args.token_file) if args.token_file else None
    stop = stop_on_signals()
    with AsCliError(CodecServerError, code=1):
        async with codec_server_running(keys, args.host, args.port, args.cors_origin, token):
            await stop.wait()
    return 0


KEYS = Group(
    "keys",
    help="payload encryption keys",
    description="Keys for CHAT_WORKER_PAYLOAD_KEYS_FILE: lines `<key-id> <base64 of 32 bytes>`; the first "
    "encrypts, all decrypt (README.md, Privacy).",
    actions=(
        Command(
            "new",
            help="print a new key line for the keys file",
            description="Print one line `<key-id> <base64 of 32 random bytes>` on stdout. To rotate, put it "
            "first in the keys file and keep the old lines until the jobs they encrypted have passed Temporal's "
            "retention. Keep the file private (chmod 600): whoever reads it reads every job.",
            epilog="example: python -m orchestrator keys new > secrets/payload-keys",
            arguments=(Argument("--id", type=key_id, metavar="ID", help="the key id (default: k-DATE-RANDOM)"),),
            reads=NO_SETTINGS,
            run=cmd_keys_new,
        ),
    ),
)

CODEC_SERVER_DESCRIPTION = (
    'Serve POST /encode and POST /decode ({"payloads": [...]}) with the keys of CHAT_WORKER_PAYLOAD_KEYS_FILE '
    "until Ctrl-C or SIGTERM. Browsers may call it only from the --cors-origin origins (the Temporal UI's, e.g. "
    "http://127.0.0.1:8233). With --token-file every request must carry `Authorization: Bearer <token>` (the UI "
    "sends none to a plain-http endpoint: a token is for the CLI's --codec-auth). It decrypts every job: keep it "
    "on loopback."
)

CODEC_SERVER = Command(
    "codec-server",
    help="decrypt payloads for the Temporal UI and CLI (Temporal's remote codec protocol)",
    description=CODEC_SERVER_DESCRIPTION,
    epilog="example: temporal workflow show --codec-endpoint http://127.0.0.1:8081 -w chat-42",
    arguments=(
        Argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"),
        Argument("--port", type=int, default=8081, help="port (default: 8081)"),
        Argument("--cors-origin", action="append", default=[], metavar="URL", help=CORS_ORIGIN_HELP),
        Argument("--token-file", type=Path, metavar="F", help="a file holding the bearer token to require"),
    ),
    reads=KEYS_FILE_READ,
    run=cmd_codec_server,
)
