"""`python -m orchestrator chat`: one job and its reply, streamed or not, or an interactive conversation
that keeps the history client-side between turns, as the platform's backend does."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import TYPE_CHECKING, get_args

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
    group_greeting,
    resolve,
)
from orchestrator.cli.command import Argument, CardFile, Command, OneOf, connected
from orchestrator.errors import AsCliError, CliError
from orchestrator.settings import Settings
from workflows.models import (
    DEFAULT_PRIORITY,
    PANELS_DEFAULT,
    PANELS_MAX,
    PANELS_MIN,
    ChatJob,
    ChatResult,
    JobType,
    Message,
    SceneMode,
)

if TYPE_CHECKING:
    from orchestrator.client import ChatClient

HELP = (
    "commands: /regenerate (a new reply to your last message), /continue (extend the last reply), /impersonate "
    "(the model writes your next message: Enter sends it), /quit"
)
GROUP_HELP = (
    "commands: /as NAME [message] (NAME replies next, after your message if you give one), /regenerate (a new "
    "round after your last message), /quit"
)


def character_from_args(args: argparse.Namespace) -> str | Character | None:
    """A bundled character's name, or the profile of a card file (carried in the job inline); None for a group."""
    if args.card is not None:
        return args.card.character
    return args.character[0] if args.character and len(args.character) == 1 else None


def members_from_args(args: argparse.Namespace) -> list[str] | None:
    """A group's bundled members (`--character` given more than once), else None."""
    return args.character if args.character and len(args.character) > 1 else None


def profile(character: str | Character | None) -> Character | None:
    with AsCliError(UnknownCharacter, code=2):
        return resolve(character)


def job_from_args(
    args: argparse.Namespace, messages: list[Message], mode: str = "reply", speaker: str | None = None
) -> ChatJob:
    """`speaker`: in a group, the member who replies next (the manual strategy)."""
    character = character_from_args(args)
    members = members_from_args(args)
    group: dict[str, object] | None = None
    if members is not None:
        group = {"strategy": "manual", "speakers": [speaker]} if speaker else {"strategy": args.group_strategy}
        group["card_mode"] = args.card_mode
    roleplay = character is not None or members is not None
    job_type = JobType(args.job_type) if args.job_type else JobType.roleplay if roleplay else JobType.conversation
    scene = scene_from_args(args)
    if scene is not None:
        job_type = JobType.scene
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
            characters=members,
            group=group,
            scenario=args.scenario,
            author_note={"text": args.author_note} if args.author_note else None,
            emotion={"of_reply": True, "of_user": mode == "reply"} if args.emotion else None,
            user_id=args.user_id,
            priority=args.priority,
            scene=scene,
        )
    except ValidationError as error:
        raise CliError(f"invalid job: {describe_validation_error(error, 'job')}", code=2) from None


def scene_from_args(args: argparse.Namespace) -> dict[str, object] | None:
    """A chat_scene job's `scene` (--scene-mode, --panels), else None."""
    if args.scene_mode is None:
        if args.panels is not None or args.history_file is not None:
            raise CliError("--panels and --history-file go with --scene-mode", code=2)
        return None
    return {"mode": args.scene_mode} | ({"panels": args.panels} if args.panels is not None else {})


def scene_messages(args: argparse.Namespace) -> list[Message]:
    """What a scene is drawn from: the history file's messages, then --message as the user's."""
    from orchestrator.cli.pipeline import history_from

    messages = history_from(args.history_file)
    if args.message is not None:
        messages.append(Message(role="user", content=args.message))
    if not messages:
        raise CliError("--scene-mode needs --message or --history-file", code=2)
    return messages


async def one_scene(chat: ChatClient, args: argparse.Namespace) -> None:
    """A chat_scene job: its readable rendering on stdout (the prompt, or the storyboard's panels)."""
    job = job_from_args(args, scene_messages(args))
    result = await reply_of(chat, job)
    print(result.content)
    print(summary_line(result), file=sys.stderr)


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
    """Prints the reply as it arrives (a group's, each speaker's on its own line, as the events name them); a
    regeneration starts a fresh line; the kept reply is shown when validation's cleaning changed it, and a group
    member whose reply was not kept is said to be left out."""
    await submitted(chat, job)
    shown: dict[str, str] = {}
    current: str | None = None
    async for event in chat.stream(job.job_id):
        if event.type in ("delta", "reset"):
            name = event.speaker or speaker
            if name != current:
                print(("\n" if current is not None else "") + f"{name}: ", end="", flush=True)
                current = name
            if event.type == "reset":
                shown[name] = ""
                print(f"\n[regenerating: attempt {event.attempt}]\n{name}: ", end="", flush=True)
            else:
                shown[name] = shown.get(name, "") + event.text
                print(event.text, end="", flush=True)
        elif event.type == "done":
            print()
            replies = [(r.speaker, r.content) for r in event.result.replies] or [(speaker, event.result.content)]
            for name, content in replies:
                if content != shown.get(name, "").strip():
                    print(f"[kept] {name}: {content}")
            for name in shown.keys() - {name for name, _ in replies}:
                print(f"[left out] {name}: no reply that could be kept")
            return event.result
        elif event.type == "failed":
            print()
            raise CliError(f"job {job.job_id} failed: {event.error_type}: {event.message}")
        else:
            print()
            raise CliError(f"job {job.job_id} was cancelled")
    raise CliError(f"job {job.job_id}: the stream ended without a result")


def emotion_labels(result: ChatResult) -> str:
    """The result's emotion labels (`--emotion`), e.g. "emotion: user grief, reply caring"; "" without them."""
    if result.emotion is None:
        return ""
    labels = [(who, label) for who, label in (("user", result.emotion.user), ("reply", result.emotion.reply)) if label]
    return "emotion: " + ", ".join(f"{who} {label}" for who, label in labels)


def summary_line(result: ChatResult) -> str:
    rejected = f" · reasons: {', '.join(result.reasons)}" if result.reasons else ""
    emotion = f" · {emotion_labels(result)}" if result.emotion is not None else ""
    return (
        f"[{result.outcome} · {result.attempts} attempt(s) · {result.completion_tokens} tokens · "
        f"{result.timings.total_ms / 1000:.1f} s{rejected}{emotion}]"
    )


async def one_message(chat: ChatClient, args: argparse.Namespace, speaker: str) -> None:
    job = job_from_args(args, [Message(role="user", content=args.message)])
    if args.stream:
        result = await streamed_reply_of(chat, job, speaker)
    else:
        result = await reply_of(chat, job)
        for name, content in [(r.speaker, r.content) for r in result.replies] or [(speaker, result.content)]:
            print(f"{name}: {content}")
    print(summary_line(result), file=sys.stderr)


def round_messages(result: ChatResult) -> list[Message]:
    """A group round's replies as the next job's messages."""
    return [Message(role="assistant", content=r.content, name=r.speaker) for r in result.replies]


async def group_conversation(chat: ChatClient, args: argparse.Namespace, members: list[Character]) -> None:
    """A group's conversation: each member's greeting, then a round per line; `/as NAME` picks who replies."""
    names = [m.name for m in members]
    messages: list[Message] = []
    for member in members:
        opening = group_greeting(member, args.user_name, [m.char_name for m in members])
        if opening:
            print(f"{member.name}: {opening}")
            messages.append(Message(role="assistant", content=opening, name=member.name))
    print(GROUP_HELP, file=sys.stderr)
    while True:
        line = await typed_line(args.user_name)
        if line is None:
            return
        if not line:
            continue
        if line == "/quit":
            return
        speaker = None
        said = line
        if line == "/regenerate":
            while messages and messages[-1].role == "assistant" and messages[-1].name is not None:
                messages.pop()
            if not messages or messages[-1].role != "user":
                print("nothing to regenerate yet", file=sys.stderr)
                continue
            said = ""
        elif line.startswith("/as "):
            name, _, said = line.removeprefix("/as ").strip().partition(" ")
            speaker = next(
                (n for n in names if n.lower() == name.lower() or n.split()[0].lower() == name.lower()), None
            )
            if speaker is None:
                print(f"no member named {name!r}; members: {', '.join(names)}", file=sys.stderr)
                continue
        elif line.startswith("/"):
            print(f"unknown command {line!r}; {GROUP_HELP}", file=sys.stderr)
            continue
        turn = [*messages, Message(role="user", content=said)] if said else list(messages)
        if not turn or turn[-1].role == "system":
            print("say something first", file=sys.stderr)
            continue
        job = job_from_args(args, turn, speaker=speaker)
        try:
            result = await streamed_reply_of(chat, job, names[0])
        except CliError as error:
            print(error.line, file=sys.stderr)
            continue
        messages = [*turn, *round_messages(result)]


async def typed_line(user_name: str) -> str | None:
    """The user's next line, stripped; None at the end of input (Ctrl-D)."""
    try:
        return (await asyncio.to_thread(input, f"{user_name}: ")).strip()
    except EOFError:
        print()
        return None


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
        line = await typed_line(args.user_name)
        if line is None:
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
        if result.emotion is not None:
            print(f"[{emotion_labels(result)}]", file=sys.stderr)
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
    members = [profile(name) for name in members_from_args(args) or []]
    speaker = character.name if character else members[0].name if members else ASSISTANT_NAME
    if args.scene_mode is not None:
        job_from_args(args, scene_messages(args))  # bad input fails before connecting
        await one_scene(ChatClient(await connected(settings), settings), args)
        return 0
    if args.message is not None:
        job_from_args(args, [Message(role="user", content=args.message)])  # bad input fails before connecting
    chat = ChatClient(await connected(settings), settings)
    if args.message is not None:
        await one_message(chat, args, speaker)
    elif members:
        await group_conversation(chat, args, [m for m in members if m is not None])
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
    "message in your persona; an empty line sends it, anything else is sent instead) or /quit. With --character "
    "given 2-8 times: a group scene, a round of replies per line (/as NAME picks who replies next). With "
    "--scene-mode: a chat_scene job instead of a reply: the image prompt of the chat (--history-file, then "
    "--message) on stdout, or with --scene-mode storyboard its --panels panels, one caption and prompt each.",
    epilog="examples: python -m orchestrator chat --character Mira --message 'Evening, Mira.' --stream\n"
    "          python -m orchestrator chat --character Mira\n"
    "          python -m orchestrator chat --character Mira --character 'Theo Marlowe' --group-strategy list\n"
    "          python -m orchestrator chat --character Mira --scene-mode last_message --history-file c.json\n"
    "          python -m orchestrator chat --character Mira --scene-mode storyboard --panels 3 --history-file c.json",
    formatter_class=argparse.RawDescriptionHelpFormatter,
    arguments=(
        Argument("-m", "--message", help="the user's message (omit it for an interactive conversation)"),
        Argument("--stream", action="store_true", help="print the reply as it is generated"),
        OneOf(
            Argument(
                "-c",
                "--character",
                action="append",
                help="a bundled character to roleplay with "
                f"({', '.join(c.name for c in bundled_characters().values())}); implies --job-type chat_roleplay; "
                "give it 2-8 times for a group scene",
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
        Argument(
            "--emotion",
            action="store_true",
            help="label each reply's emotion and the user's message it answers (go_emotions labels, on stderr; "
            "the character is told the user's; not in a group)",
        ),
        Argument(
            "--group-strategy",
            choices=["natural", "list", "pooled"],
            default="natural",
            help="a group's speaker choice each round (default: natural; /as NAME picks one)",
        ),
        Argument(
            "--card-mode",
            choices=["swap", "join"],
            default="swap",
            help="a group's cards in the prompt: the speaker's (swap, default) or every member's (join)",
        ),
        Argument(
            "--scene-mode",
            choices=list(get_args(SceneMode)),
            help="write the chat's image prompt (a chat_scene job) instead of a reply: the character (full body), "
            "face, user (the persona), last_message (what it shows), story (recent events), background (the place), "
            "or storyboard (--panels prompts with captions)",
        ),
        Argument(
            "--panels",
            type=int,
            help=f"a storyboard's panels, {PANELS_MIN}-{PANELS_MAX} (default: {PANELS_DEFAULT})",
        ),
        Argument(
            "--history-file",
            metavar="PATH",
            help='with --scene-mode: the chat as a JSON list of {"role", "content"}, oldest first (any role last)',
        ),
    ),
    run=cmd_chat,
)
