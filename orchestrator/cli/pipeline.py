"""The pipeline's pure stages from the command line, with no server: `validate`, `context`, `schema`.
Each prints ONE JSON object on stdout (scripts outside the test suite rely on that)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import TypeAdapter, ValidationError

from characters import ASSISTANT_NAME, Character, UnknownCharacter, describe_validation_error, listed, resolve
from orchestrator.cli.command import NO_SETTINGS, Argument, CardFile, Command
from orchestrator.errors import AsCliError, CliError
from orchestrator.settings import ENGINE_LIMITS, Settings
from orchestrator.tokens import offline_counter
from workflows.context import ContextTooLarge, budgeted_context
from workflows.emotion import EMOTIONS
from workflows.group import GroupScene, scene_of
from workflows.models import (
    ChatJob,
    ChatResult,
    JobStatus,
    JobType,
    Message,
    SceneCheck,
    SceneMode,
    SceneSettings,
    StreamEvent,
    SummaryCheck,
    job_problems,
)
from workflows.policy import load_policy
from workflows.scenes import SCENE_REASONS, scene_names, validate_scene
from workflows.summary_validation import SUMMARY_REASONS, validate_summary
from workflows.validation import ReplySpec, validate

T = TypeVar("T")


def read_text(path: str, what: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"{what} {path}: cannot read: {getattr(error, 'strerror', None) or error}", code=2) from None


def from_json_file(path: str, what: str, shape: TypeAdapter[T], root: str) -> T:
    """The file's JSON as `shape`; an error names the file and, for a bad value, its field under `root`."""
    try:
        return shape.validate_python(json.loads(read_text(path, what)))
    except json.JSONDecodeError as error:
        raise CliError(f"{what} {path}: not valid JSON: {error}", code=2) from None
    except ValidationError as error:
        raise CliError(f"{what} {path}: {describe_validation_error(error, root)}", code=2) from None


def history_from(path: str | None) -> list[Message]:
    return [] if path is None else from_json_file(path, "history file", TypeAdapter(list[Message]), "history")


def emit(payload: Any) -> int:
    print(json.dumps(payload, ensure_ascii=False))
    return 0


async def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    reply = read_text(args.reply_file, "reply file")
    history = history_from(args.history_file)
    policy = load_policy(settings.policy_file)
    if JobType(args.job_type) is JobType.summarize:
        check = SummaryCheck(
            summary=reply, finish_reason=args.finish_reason, char_name=args.char_name, user_name=args.user_name
        )
        return emit(validate_summary(check, policy).model_dump())
    if JobType(args.job_type) is JobType.scene:
        return emit(validate_scene(scene_check(args, reply), policy).model_dump())
    spec = ReplySpec(
        job_type=JobType(args.job_type),
        char_name=args.char_name,
        user_name=args.user_name,
        writes_as="user" if args.mode == "impersonate" else "character",
        others=args.other or [],
    )
    verdict = validate(reply, spec, history, args.finish_reason, policy)
    return emit(verdict.model_dump())


def scene_check(args: argparse.Namespace, output: str) -> SceneCheck:
    """The check of a chat_scene output from the command line (the names it must not hold: the character's and
    the user's)."""
    if args.scene_mode is None:
        raise CliError("--job-type chat_scene needs --scene-mode", code=2)
    try:
        scene = SceneSettings(mode=args.scene_mode, panels=args.panels)
    except ValidationError as error:
        raise CliError(describe_validation_error(error, "scene"), code=2) from None
    return SceneCheck(
        output=output,
        finish_reason=args.finish_reason,
        scene=scene,
        names=scene_names(Character(name=args.char_name), args.user_name),
        char_name=args.char_name,
        user_name=args.user_name,
    )


def group_scene(job: ChatJob, speaker: str | None) -> GroupScene | None:
    """A group job's scene for `speaker` (default: the first member), whose prompt `context` prints."""
    if job.characters is None:
        if speaker is not None:
            raise CliError("--speaker: only for a group job (one with `characters`)", code=2)
        return None
    members = []
    for index, ref in enumerate(job.characters):
        with AsCliError(UnknownCharacter, code=2, prefix=f"job.characters.{index}: "):
            members.append(resolve(ref))
    with AsCliError(ValueError, code=2, prefix="--speaker: "):
        return scene_of([m for m in members if m is not None], speaker or members[0].name, job.group)


async def cmd_context(args: argparse.Namespace, settings: Settings) -> int:
    job = from_json_file(args.job_file, "job file", TypeAdapter(ChatJob), "job")
    if args.card is not None and job.characters is not None:
        raise CliError("--card: a group job's members are its `characters`", code=2)
    if args.card is not None:
        job = job.model_copy(update={"character": args.card.character})
    max_input = args.max_input_tokens or settings.max_input_tokens
    max_total = args.max_total_tokens or settings.max_total_tokens
    if max_input >= max_total:
        raise CliError(
            f"--max-input-tokens ({max_input}) must be smaller than --max-total-tokens ({max_total})", code=2
        )
    problems = job_problems(job)
    if problems:
        raise CliError(f"invalid job: {listed(problems)}", code=2)
    scene = group_scene(job, args.speaker)
    if args.user_emotion is not None and (job.emotion is None or not job.emotion.of_user):
        raise CliError("--user-emotion: only for a job with emotion.of_user", code=2)
    with AsCliError(UnknownCharacter, code=2, prefix="job.character: "):
        character = scene.speaker if scene is not None else resolve(job.character)
    counter = offline_counter(settings)
    limits = settings.engine_limits.model_copy(update={"max_input_tokens": max_input, "max_total_tokens": max_total})
    with AsCliError(ContextTooLarge, code=2):
        built = await budgeted_context(job, character, limits, counter, scene=scene, user_emotion=args.user_emotion)
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


VALIDATE = Command(
    "validate",
    help="check a reply as the workflow does and print {valid, reasons, cleaned}",
    description="Run reply validation on a file, no server needed. Prints ONE JSON object "
    '{"valid": bool, "reasons": [codes], "cleaned": str} and exits 0 whatever the verdict; exits 2 with '
    "one error line for bad arguments or unreadable files. Reason codes: empty, too_short, short (warning), "
    "repetitive, echoes_history, out_of_character, refusal, speaks_for_user (also another group member's lines, "
    "with --other), speaks_for_character (--mode "
    "impersonate: the file is the user's next message), cut_off, policy. With --job-type "
    "chat_summarize the file is a story summary, checked as the workflow checks summaries: "
    f"{', '.join(SUMMARY_REASONS)}. With --job-type chat_scene and --scene-mode the file is a scene prompt (a "
    "storyboard's JSON with --scene-mode storyboard), checked and cleaned as the workflow does, with its `scene`: "
    f"{', '.join(SCENE_REASONS)}.",
    arguments=(
        Argument("--job-type", required=True, choices=[t.value for t in JobType]),
        Argument("--reply-file", required=True, metavar="PATH", help="the reply; - reads stdin"),
        Argument("--char-name", default=ASSISTANT_NAME, help=f"the character's name (default: {ASSISTANT_NAME})"),
        Argument("--user-name", default="User", help="the user's name (default: User)"),
        Argument(
            "--other",
            action="append",
            metavar="NAME",
            help="a group scene's other member (repeat it), whose lines the reply must not write",
        ),
        Argument(
            "--history-file",
            metavar="PATH",
            help='JSON list of {"role", "content"}, oldest first, ending with the message the reply answers',
        ),
        Argument(
            "--finish-reason", choices=["stop", "length"], default="stop", help="why the engine stopped (default: stop)"
        ),
        Argument(
            "--mode",
            choices=["reply", "continue", "impersonate"],
            default="reply",
            help="the job's mode; impersonate: the reply is the user's next message (default: reply)",
        ),
        Argument(
            "--scene-mode", choices=list(get_args(SceneMode)), help="with --job-type chat_scene: the scene's mode"
        ),
        Argument("--panels", type=int, help="with --scene-mode storyboard: the panels asked for (default: 4)"),
    ),
    reads=frozenset({"policy_file"}),
    run=cmd_validate,
)

CONTEXT = Command(
    "context",
    help="print the messages a job would send, within the token budget",
    description="Build a job's context offline and print ONE JSON object: messages, prompt_tokens, budget, "
    "lorebook (entries inserted), dropped ({history_messages, examples, lorebook_entries}), stop, "
    "insertions ([{kind, label, message, depth}]: each lorebook entry and note (kinds lorebook, character_note, "
    "author_note: one per copy of the job's author's note, post_history_instructions, continue_instruction, "
    "impersonate_instruction, reminder, user_emotion: with --user-emotion), the index of the message it is in, "
    "and for one in the history how many "
    "history messages follow it; depth null: in the system message), "
    "window ({first_message, laid_at, high_water, low_water}: where the history starts, the message at which "
    "the prompt's front was last laid, the history's room and low-water mark in tokens), memory (null for a job "
    "without memory; else {message, text, tokens, reserved, covers, facts, summarize_until}: the system message "
    "that holds the memory block, after the constant part and before the example dialogue, its text (summary "
    "and pinned facts), its tokens and the room reserved for it, how many leading messages the summary covers, "
    "the number of facts, and when the window starts past what the summary covers, the message up to which the "
    "worker summarises after the reply), tokenizer. The same "
    "job gives the prompt the worker sends. Engine limits come from settings (CHAT_WORKER_MAX_INPUT_TOKENS / "
    "_MAX_TOTAL_TOKENS) unless given; the window's low-water share from CHAT_WORKER_CONTEXT_LOW_WATER. "
    "Tokens are counted with the local GGUF's tokenizer when installed, else estimated (3.5 chars/token).",
    arguments=(
        Argument("--job-file", required=True, metavar="JOB.json", help="a ChatJob as in `schema`"),
        Argument(
            "--card", type=CardFile, metavar="PATH", help="a PNG or JSON character card, inlined as the job's character"
        ),
        Argument("--max-input-tokens", type=int, metavar="N", help="the engine's input limit"),
        Argument("--max-total-tokens", type=int, metavar="N", help="the engine's input+output limit"),
        Argument(
            "--speaker",
            metavar="NAME",
            help="a group job: the member whose prompt to print (default: the first; a round's later speakers "
            "also see the replies before theirs, which the worker adds as messages named by their speakers)",
        ),
        Argument(
            "--user-emotion",
            choices=EMOTIONS,
            metavar="LABEL",
            help="a job with emotion.of_user: the label the worker's classification gave the user's last message, "
            "whose note goes after the history (none for neutral)",
        ),
    ),
    reads=ENGINE_LIMITS | {"context_margin_tokens", "context_low_water", "tokenizer", "local_model_path"},
    run=cmd_context,
)

SCHEMA = Command(
    "schema",
    help="print the JSON Schemas of ChatJob (with memory, author_note, mode impersonate), ChatResult and the "
    "stream's events",
    description='Print ONE JSON object {"ChatJob": <JSON Schema>, "ChatResult": <JSON Schema>, "StreamEvent": '
    '<JSON Schema>, "JobStatus": <JSON Schema>} for backends in other languages.',
    reads=NO_SETTINGS,
    run=cmd_schema,
)
