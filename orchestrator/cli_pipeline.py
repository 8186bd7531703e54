"""The pipeline's pure stages from the command line, with no server: `validate`, `context`, `schema`.
Each prints ONE JSON object on stdout (scripts outside the test suite rely on that)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from characters import ASSISTANT_NAME, CardError, UnknownCharacter, describe_validation_error, read_card, resolve
from orchestrator.errors import CliError
from orchestrator.settings import Settings
from orchestrator.tokens import offline_counter
from workflows.context import ContextTooLarge, budgeted_context
from workflows.models import (
    ChatJob,
    ChatResult,
    EngineLimits,
    JobStatus,
    JobType,
    Message,
    StreamEvent,
)
from workflows.policy import load_policy
from workflows.validation import ReplySpec, validate


def input_error(message: str) -> CliError:
    """Bad arguments or an unreadable file: one `error:` line, exit 2."""
    return CliError(message, code=2)


def read_text(path: str, what: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise input_error(f"{what} {path}: cannot read: {getattr(error, 'strerror', None) or error}") from None


def read_json(path: str, what: str) -> Any:
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as error:
        raise input_error(f"{what} {path}: not valid JSON: {error}") from None


def history_from(path: str | None) -> list[Message]:
    if path is None:
        return []
    try:
        return TypeAdapter(list[Message]).validate_python(read_json(path, "history file"))
    except ValidationError as error:
        raise input_error(f"history file {path}: {describe_validation_error(error, 'history')}") from None


def emit(payload: Any) -> int:
    print(json.dumps(payload, ensure_ascii=False))
    return 0


async def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    reply = read_text(args.reply_file, "reply file")
    history = history_from(args.history_file)
    spec = ReplySpec(job_type=JobType(args.job_type), char_name=args.char_name, user_name=args.user_name)
    verdict = validate(reply, spec, history, args.finish_reason, load_policy(settings.policy_file))
    return emit(verdict.model_dump())


def job_from_file(path: str) -> ChatJob:
    try:
        return ChatJob.model_validate(read_json(path, "job file"))
    except ValidationError as error:
        raise input_error(f"job file {path}: {describe_validation_error(error, 'job')}") from None


async def cmd_context(args: argparse.Namespace, settings: Settings) -> int:
    job = job_from_file(args.job_file)
    if args.card is not None:
        try:
            job = job.model_copy(update={"character": read_card(Path(args.card)).character})
        except CardError as error:
            raise input_error(f"--card {error}") from None
    max_input = args.max_input_tokens or settings.max_input_tokens
    max_total = args.max_total_tokens or settings.max_total_tokens
    if max_input >= max_total:
        raise input_error(f"--max-input-tokens ({max_input}) must be smaller than --max-total-tokens ({max_total})")
    try:
        character = resolve(job.character)
    except UnknownCharacter as error:
        raise input_error(f"job.character: {error}") from None
    counter = offline_counter(settings)
    limits = EngineLimits(
        max_input_tokens=max_input, max_total_tokens=max_total, margin_tokens=settings.context_margin_tokens
    )
    try:
        built = await budgeted_context(job, character, limits, counter)
    except ContextTooLarge as error:
        raise input_error(str(error)) from None
    return emit({**built.model_dump(), "tokenizer": counter.name})


async def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    return emit(
        {
            "ChatJob": ChatJob.model_json_schema(),
            "ChatResult": ChatResult.model_json_schema(),
            "StreamEvent": TypeAdapter(StreamEvent).json_schema(),
            "JobStatus": JobStatus.model_json_schema(),
        }
    )


def add_commands(commands: Any) -> None:
    validate_cmd = commands.add_parser(
        "validate",
        help="check a reply as the workflow does and print {valid, reasons, cleaned}",
        description="Run reply validation on a file, no server needed. Prints ONE JSON object "
        '{"valid": bool, "reasons": [codes], "cleaned": str} and exits 0 whatever the verdict; exits 2 with '
        "one error line for bad arguments or unreadable files. Reason codes: empty, too_short, short (warning), "
        "repetitive, echoes_history, out_of_character, refusal, speaks_for_user, cut_off, policy.",
    )
    validate_cmd.add_argument("--job-type", required=True, choices=[t.value for t in JobType])
    validate_cmd.add_argument("--reply-file", required=True, metavar="PATH", help="the reply; - reads stdin")
    validate_cmd.add_argument(
        "--char-name", default=ASSISTANT_NAME, help=f"the character's name (default: {ASSISTANT_NAME})"
    )
    validate_cmd.add_argument("--user-name", default="User", help="the user's name (default: User)")
    validate_cmd.add_argument(
        "--history-file",
        metavar="PATH",
        help='JSON list of {"role", "content"}, oldest first, ending with the message the reply answers',
    )
    validate_cmd.add_argument(
        "--finish-reason", choices=["stop", "length"], default="stop", help="why the engine stopped (default: stop)"
    )
    validate_cmd.set_defaults(run=cmd_validate)

    context_cmd = commands.add_parser(
        "context",
        help="print the messages a job would send, within the token budget",
        description="Build a job's context offline and print ONE JSON object: messages, prompt_tokens, budget, "
        "lorebook (entries inserted), dropped ({history_messages, examples, lorebook_entries}), stop, tokenizer. "
        "Engine limits come from settings (CHAT_WORKER_MAX_INPUT_TOKENS / _MAX_TOTAL_TOKENS) unless given. "
        "Tokens are counted with the local GGUF's tokenizer when installed, else estimated (3.5 chars/token).",
    )
    context_cmd.add_argument("--job-file", required=True, metavar="JOB.json", help="a ChatJob as in `schema`")
    context_cmd.add_argument(
        "--card", metavar="PATH", help="a PNG or JSON character card, inlined as the job's character"
    )
    context_cmd.add_argument("--max-input-tokens", type=int, metavar="N", help="the engine's input limit")
    context_cmd.add_argument("--max-total-tokens", type=int, metavar="N", help="the engine's input+output limit")
    context_cmd.set_defaults(run=cmd_context)

    schema_cmd = commands.add_parser(
        "schema",
        help="print the JSON Schemas of ChatJob, ChatResult and the stream's events",
        description='Print ONE JSON object {"ChatJob": <JSON Schema>, "ChatResult": <JSON Schema>, "StreamEvent": '
        '<JSON Schema>, "JobStatus": <JSON Schema>} for backends in other languages.',
    )
    schema_cmd.set_defaults(run=cmd_schema)
