"""`python -m orchestrator chat`: one job and its reply, streamed or not, or an interactive conversation
that keeps the history client-side between turns, as the platform's backend does."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import TYPE_CHECKING

from pydantic import ValidationError

from characters import (
    ASSISTANT_NAME,
    SCENARIO_TYPES,
    Character,
    NoSuchGreeting,
    UnknownCharacter,
    bundled_characters,
    describe_validation_error,
    greeting,
    resolve,
)
from orchestrator.cli.command import Argument, CardFile, Command, OneOf, connected
from orchestrator.errors import AsCliError, CliError
from orchestrator.settings import Settings
from workflows.models import DEFAULT_PRIORITY, ChatJob, ChatResult, JobType, Message

if TYPE_CHECKING:
    from orchestrator.client import ChatClient

HELP = (
    "commands: /regenerate (a new reply to your last message), /continue (extend the last reply), /impersonate "
    "(the model writes your next message: Enter sends it), /quit"
)


def character_from_args(args: argparse.Namespace) -> str | Character | None:
    """A bundled character's name, or the profile of a card file (carried in the job inline)."""
    return args.character if args.card is None else args.card.character


def profile(character: str | Character | None) -> Character | None:
    with AsCliError(UnknownCharacter, code=2):
        return resolve(character)


def job_from_args(args: argparse.Namespace, messages: list[Message], mode: str = "reply") -> ChatJob:
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
            job_id=args.job_id if args.job_id and mode == "reply" and len(messages) == 1 else uuid.uuid4().hex,
            job_type=job_type,
            mode=mode,
            messages=messages,
            user_name=args.user_name,
            sampling=sampling,
            character=character,
            scenario=args.scenario,
            author_note={"text": args.author_note} if args.author_note else None,
            user_id=args.user_id,
            priority=args.priority,
        )
    except ValidationError as error:
        raise CliError(f"invalid job: {describe_validation_error(error, 'job')}", code=2) from None


def failure_message(job: ChatJob, error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    detail = getattr(cause, "cause", None) or cause
    kind = getattr(detail, "type", None) or type(detail).__name__
    return f"job {job.job_id} failed: {kind}: {getattr(detail, 'message', detail)}"


async def submitted(chat: ChatClient, job: ChatJob) -> None:
    from orchestrator.client import InvalidJob

    with AsCliError(InvalidJob, code=2):
        handle = await chat.submit(job)
    print(f"job {job.job_id} started (workflow {handle.id})", file=sys.stderr)


async def reply_of(chat: ChatClient, job: ChatJob) -> ChatResult:
    from temporalio.client import WorkflowFailureError

    await submitted(chat, job)
    try:
        return await chat.result(job.job_id)
    except WorkflowFailureError as error:
        raise CliError(failure_message(job, error)) from None


async def streamed_reply_of(chat: ChatClient, job: ChatJob, speaker: str) -> ChatResult:
    """Prints the reply as it arrives; a regeneration starts a fresh line; the kept reply is shown when
    validation's cleaning changed it."""
    await submitted(chat, job)
    print(f"{speaker}: ", end="", flush=True)
    shown = ""
    async for event in chat.stream(job.job_id):
        if event.type == "delta":
            shown += event.text
            print(event.text, end="", flush=True)
        elif event.type == "reset":
            shown = ""
            print(f"\n[regenerating: attempt {event.attempt}]\n{speaker}: ", end="", flush=True)
        elif event.type == "done":
            print()
            if event.result.content != shown.strip():
                print(f"[kept] {speaker}: {event.result.content}")
            return event.result
        elif event.type == "failed":
            print()
            raise CliError(f"job {job.job_id} failed: {event.error_type}: {event.message}")
        else:
            print()
            raise CliError(f"job {job.job_id} was cancelled")
    raise CliError(f"job {job.job_id}: the stream ended without a result")


def summary_line(result: ChatResult) -> str:
    rejected = f" · reasons: {', '.join(result.reasons)}" if result.reasons else ""
    return (
        f"[{result.outcome} · {result.attempts} attempt(s) · {result.completion_tokens} tokens · "
        f"{result.timings.total_ms / 1000:.1f} s{rejected}]"
    )


async def one_message(chat: ChatClient, args: argparse.Namespace, speaker: str) -> None:
    job = job_from_args(args, [Message(role="user", content=args.message)])
    if args.stream:
        result = await streamed_reply_of(chat, job, speaker)
    else:
        result = await reply_of(chat, job)
        print(f"{speaker}: {result.content}")
    print(summary_line(result), file=sys.stderr)


async def conversation(chat: ChatClient, args: argparse.Namespace, character: Character | None, speaker: str) -> None:
    messages: list[Message] = []
    if character is not None:
        try:
            opening = greeting(character, args.user_name)
        except NoSuchGreeting:
            opening = ""
        if opening:
            print(f"{speaker}: {opening}")
            messages.append(Message(role="assistant", content=opening))
    print(HELP, file=sys.stderr)
    suggestion = ""  # the last /impersonate's message, which an empty line sends
    while True:
        try:
            line = (await asyncio.to_thread(input, f"{args.user_name}: ")).strip()
        except EOFError:
            print()
            return
        line, suggestion = line or suggestion, ""
        if not line:
            continue
        if line == "/quit":
            return
        if line == "/regenerate":
            if not messages or messages[-1].role != "assistant" or len(messages) < 2:
                print("nothing to regenerate yet", file=sys.stderr)
                continue
            messages.pop()
            job = job_from_args(args, messages)
        elif line == "/continue":
            if not messages or messages[-1].role != "assistant":
                print("nothing to continue yet", file=sys.stderr)
                continue
            job = job_from_args(args, messages, mode="continue")
        elif line == "/impersonate":
            if not messages or messages[-1].role != "assistant":
                print("nothing to answer yet: the character has not spoken", file=sys.stderr)
                continue
            job = job_from_args(args, messages, mode="impersonate")
        elif line.startswith("/"):
            print(f"unknown command {line!r}; {HELP}", file=sys.stderr)
            continue
        else:
            messages.append(Message(role="user", content=line))
            job = job_from_args(args, messages)
        writer = f"{args.user_name} (suggested)" if job.mode == "impersonate" else speaker
        try:
            result = await streamed_reply_of(chat, job, writer)
        except CliError as error:
            print(error.line, file=sys.stderr)
            if job.mode == "reply" and messages[-1].role == "user" and line != "/regenerate":
                messages.pop()  # the turn did not happen; the user may try again
            continue
        if job.mode == "impersonate":
            suggestion = result.content
            print("[Enter sends it as yours; or type your own message]", file=sys.stderr)
        elif job.mode == "continue":
            last = messages.pop()
            messages.append(Message(role="assistant", content=last.content + result.content))
        else:
            messages.append(Message(role="assistant", content=result.content))


async def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.client import ChatClient

    character = profile(character_from_args(args))
    speaker = character.name if character else ASSISTANT_NAME
    if args.message is not None:
        job_from_args(args, [Message(role="user", content=args.message)])  # bad input fails before connecting
    chat = ChatClient(await connected(settings), settings)
    if args.message is not None:
        await one_message(chat, args, speaker)
    else:
        await conversation(chat, args, character, speaker)
    return 0


CHAT = Command(
    "chat",
    help="one chat job and its reply, or an interactive conversation",
    description="Submit a chat job to a running stack (`make dev` or a worker). With --message: print the "
    "reply on stdout (as it is written, with --stream); progress and a summary line go to stderr. Without "
    "--message: an interactive conversation that shows the character's greeting, streams each reply and "
    "keeps the history between turns; type /regenerate, /continue, /impersonate (the model writes your next "
    "message in your persona; an empty line sends it, anything else is sent instead) or /quit.",
    epilog="examples: python -m orchestrator chat --character Mira --message 'Evening, Mira.' --stream\n"
    "          python -m orchestrator chat --character Mira",
    formatter_class=argparse.RawDescriptionHelpFormatter,
    arguments=(
        Argument("-m", "--message", help="the user's message (omit it for an interactive conversation)"),
        Argument("--stream", action="store_true", help="print the reply as it is generated"),
        OneOf(
            Argument(
                "-c",
                "--character",
                help="a bundled character to roleplay with "
                f"({', '.join(c.name for c in bundled_characters().values())}); implies --job-type chat_roleplay",
            ),
            Argument(
                "--card",
                type=CardFile,
                metavar="PATH",
                help="a Character Card file (PNG or JSON, V1/V2/V3) to roleplay with, sent inline in the job",
            ),
        ),
        Argument(
            "-s",
            "--scenario",
            help=f"the scene: a type ({', '.join(SCENARIO_TYPES)}), woven with the character's details, or free "
            "text (default: the character's own)",
        ),
        Argument("-u", "--user-name", default="User", help="the user's name in the story (default: User)"),
        Argument(
            "--job-type",
            choices=[t.value for t in JobType],
            metavar="TYPE",
            help=f"one of {', '.join(t.value for t in JobType)} (default: chat_roleplay with --character, "
            "else chat_conversation)",
        ),
        Argument("--max-tokens", type=int, help="reply length cap, 1-2048 (default: per job type)"),
        Argument("--temperature", type=float, help="0.1-1.0 (default: per job type)"),
        Argument("--top-p", type=float, help="0.1-1.0 (default: 0.9)"),
        Argument("--seed", type=int, help="sampling seed, for a reproducible first attempt"),
        Argument("--job-id", help="job id (default: random); the same id never runs twice"),
        Argument(
            "--author-note",
            metavar="TEXT",
            help="an author's note for every job (depth 4, every user turn; see README's Author's note)",
        ),
        Argument(
            "--user-id",
            help="whose job it is (letters, digits, . _ : -; at most 64): users take turns in the generation queue "
            "(default: none, the turn all jobs without one share)",
        ),
        Argument("--priority", type=int, default=DEFAULT_PRIORITY, help="1 (highest) to 5 (lowest) (default: 3)"),
    ),
    run=cmd_chat,
)
