"""The job's data: what the backend sends (ChatJob), what it gets back (ChatResult), what crosses the
generation activity, and the error taxonomy shared by the inference client, the activity and the workflow.

Plain JSON on the wire: every model here round-trips through `pydantic_data_converter`."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from characters import ASSISTANT_NAME, Character, StrictModel

WORKFLOW_TYPE = "ChatWorkflow"
# An encrypted payload's metadata (orchestrator/codec.py has the wire format). A worker hands on a job input
# it cannot decrypt as it is, so that the workflow fails the job naming the key id.
ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"


def generate_task_queue(workflow_task_queue: str) -> str:
    """Generation runs on its own queue beside the workflow's ("chat" → "chat-generate"), so that only
    generation is capped by the engine's slots."""
    return f"{workflow_task_queue}-generate"


JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# Whoever the backend serves, as an opaque id: the fairness key of the job's generations (Temporal keeps it in
# plain text with each task; its limit is 64 bytes).
USER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
# Temporal task priority levels: 1 highest … 5 lowest (the server's default range); 3 is the server's default.
HIGHEST_PRIORITY = 1
LOWEST_PRIORITY = 5
DEFAULT_PRIORITY = 3


class JobType(StrEnum):
    conversation = "chat_conversation"
    roleplay = "chat_roleplay"
    enhance = "chat_enhance"
    unrestricted = "chat_unrestricted"
    # Summarise the conversation (merged with the job's memory): the summary is the job's reply.
    summarize = "chat_summarize"
    # An image prompt (or a storyboard) of the chat's scene, for the image and video workers (workflows/scenes.py).
    scene = "chat_scene"
    # A Character Card V3 for one of the conversation's characters (`character`; default the assistant's):
    # ChatResult.card, and `content` a readable rendering of it (workflows/card.py).
    character = "chat_character"


# Job types that read the conversation rather than continue it: any role may come last in `messages`.
ANY_ROLE_LAST = frozenset({JobType.summarize, JobType.scene, JobType.character})


class Message(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)
    # In a group job: which member wrote an assistant message (its profile's `name`, as in ChatResult.replies).
    name: str | None = Field(default=None, min_length=1, max_length=100)


class Sampling(StrictModel):
    """What the job asks for; None means the job type's default (see `sampling_defaults`)."""

    temperature: float | None = Field(default=None, ge=0.1, le=1.0)
    top_p: float | None = Field(default=None, ge=0.1, le=1.0)
    # The worker's configured cap (default 2048) is checked against the job in `limit_problems`.
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class ResolvedSampling(StrictModel):
    """Concrete values for one attempt; never None, so nothing null reaches the engine."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    frequency_penalty: float = 0.0
    # CTRL's repetition penalty (a seen token's logit divided by it; 1.0: none, the engine's default), which
    # each engine takes in its own form (orchestrator/engines.py, `RepetitionParameter`).
    repetition_penalty: float = Field(default=1.0, ge=1.0)


# Bounds of a story memory as the backend sends it (a summary the worker writes is shorter: SUMMARY_MAX_CHARS).
MEMORY_SUMMARY_CHARS = 4000
MEMORY_FACTS = 32
MEMORY_FACT_CHARS = 400
# A summary the worker writes: at most this many tokens generated, this many characters kept.
SUMMARY_MAX_TOKENS = 200
SUMMARY_MAX_CHARS = 1200


class Memory(StrictModel):
    """A chat's story memory, kept by the backend and sent with each job: `summary` of the first `covers`
    messages of the job's `messages` (what the window has dropped), and `facts` that always go in (pinned)."""

    summary: str = Field(default="", max_length=MEMORY_SUMMARY_CHARS)
    facts: list[Annotated[str, Field(min_length=1, max_length=MEMORY_FACT_CHARS)]] = Field(
        default=[], max_length=MEMORY_FACTS
    )
    covers: int = Field(default=0, ge=0)


# Bounds of an author's note.
AUTHOR_NOTE_CHARS = 2000
AUTHOR_NOTE_MAX_DEPTH = 1000
AUTHOR_NOTE_MAX_EVERY = 1000


class AuthorNote(StrictModel):
    """A note put into the history (SillyTavern's author's note): a copy at every `every`-th user message,
    `depth` messages before the end of the history as it stood then, but never before the message after the
    user's previous one, and each copy stays where it went (workflows/context.py `author_note_places`)."""

    text: str = Field(min_length=1, max_length=AUTHOR_NOTE_CHARS)
    depth: int = Field(default=4, ge=0, le=AUTHOR_NOTE_MAX_DEPTH)
    every: int = Field(default=1, ge=1, le=AUTHOR_NOTE_MAX_EVERY)


# The chats: the job types whose result is a chat message a character (or the assistant) speaks. Only they take
# mode "impersonate" (the user's next message), `speech` and `emotion` (not chat_enhance's image prompt, not a
# summary, scene or card).
CHAT_JOBS = frozenset({JobType.conversation, JobType.roleplay, JobType.unrestricted})


GROUP_MIN = 2
GROUP_MAX = 8


class GroupSettings(StrictModel):
    """How a group job's round is cast (workflows/group.py): who speaks, and whose cards the prompt holds."""

    # natural: the members mentioned, then each by its talkativeness; list: all, in order; pooled: one who has not
    # spoken since the user's last message; manual: `speakers`, in order.
    strategy: Literal["natural", "list", "pooled", "manual"] = "natural"
    speakers: list[str] = Field(default=[], max_length=GROUP_MAX)
    # swap: only the speaker's card in the prompt; join: every member's.
    card_mode: Literal["swap", "join"] = "swap"
    # Whether the last message's speaker may speak first again (natural and pooled).
    allow_self_responses: bool = False


# chat_scene (workflows/scenes.py): what the image prompt shows; `storyboard` is `panels` prompts in story order.
SceneMode = Literal["character", "face", "user", "last_message", "story", "background", "storyboard"]
PANELS_MIN = 2
PANELS_MAX = 8
PANELS_DEFAULT = 4


class SceneSettings(StrictModel):
    mode: SceneMode
    # Only for a storyboard (default PANELS_DEFAULT).
    panels: int | None = Field(default=None, ge=PANELS_MIN, le=PANELS_MAX, strict=True)

    @field_validator("panels")
    @classmethod
    def _panels_only_for_a_storyboard(cls, panels: int | None, info: ValidationInfo) -> int | None:
        if panels is not None and info.data.get("mode", "storyboard") != "storyboard":
            raise ValueError("only a storyboard (mode 'storyboard') takes panels")
        return panels

    @property
    def panel_count(self) -> int:
        return self.panels or PANELS_DEFAULT


def scene_problem(job: ChatJob) -> ValidationError | None:
    """What makes the job's `scene` inconsistent with its type or mode, naming the field."""
    if job.job_type is JobType.scene and job.scene is None:
        return field_error(("scene",), "scene_missing", 'a chat_scene job needs `scene` ({"mode": ...})')
    if job.job_type is not JobType.scene and job.scene is not None:
        return field_error(("scene",), "scene_not_a_scene_job", "only a chat_scene job takes `scene`")
    if job.job_type is JobType.scene and job.mode != "reply":
        return field_error(("mode",), "scene_mode", "a chat_scene job takes mode 'reply'")
    return None


def member_name(ref: str | Character) -> str:
    """A member's name as the job names it: a bundled profile's name as sent, an inline profile's `name`."""
    return ref if isinstance(ref, str) else ref.name


def field_error(loc: tuple[str | int, ...], kind: str, message: str, value: object = None) -> ValidationError:
    return ValidationError.from_exception_data(
        "ChatJob", [InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)]
    )


def group_problem(job: ChatJob) -> ValidationError | None:
    """What makes the job's group fields inconsistent, naming the field (the members' own profiles are resolved
    in prepare, which names an unknown bundled one)."""
    if job.characters is None:
        if job.group is not None:
            return field_error(("group",), "group_without_characters", "needs `characters` (2-8 members)")
        last = [m for m in job.messages if m.role != "system"][-1]
        if job.mode == "reply" and last.role == "assistant" and job.job_type not in ANY_ROLE_LAST:
            return field_error(
                ("messages",), "last_message", "in mode 'reply' the last non-system message must be the user's"
            )
        return None
    if job.character is not None:
        return field_error(("characters",), "character_and_characters", "give `character` or `characters`, not both")
    if job.job_type is not JobType.roleplay:
        return field_error(("job_type",), "group_job_type", "a group job (`characters`) is a chat_roleplay job")
    if job.mode != "reply":
        return field_error(("mode",), "group_mode", "a group job takes mode 'reply'")
    if job.memory is not None:
        return field_error(("memory",), "group_memory", "story memory is not supported in group jobs")
    names = [member_name(ref).strip().lower() for ref in job.characters]
    for index, name in enumerate(names):
        if name in names[:index]:
            return field_error(("characters", index), "group_member_twice", "names a member already in the group")
    group = job.group or GroupSettings()
    if group.strategy == "manual" and not group.speakers:
        return field_error(("group", "speakers"), "manual_without_speakers", "the manual strategy needs speakers")
    if group.strategy != "manual" and group.speakers:
        return field_error(("group", "speakers"), "speakers_not_manual", "only the manual strategy takes speakers")
    for index, speaker in enumerate(group.speakers):
        if speaker.strip().lower() not in names:
            return field_error(("group", "speakers", index), "not_a_member", "is not one of `characters`")
    for index, message in enumerate(job.messages):
        if message.name is not None and message.role == "assistant" and message.name.strip().lower() not in names:
            return field_error(("messages", index, "name"), "not_a_member", "is not one of `characters`")
    return None


# Emotion labels (workflows/emotion.py): the 28 of go_emotions, classified by the model.
Emotion = Literal[
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
]


class EmotionOptions(StrictModel):
    """Which texts the job labels: the returned reply, after validation; the user's last message, before the
    reply, which a note at the history's end then asks the character to respond to (mode 'reply' only)."""

    of_reply: bool = Field(default=False, strict=True)
    of_user: bool = Field(default=False, strict=True)


class Emotions(StrictModel):
    """The labels asked for (null: not asked); `neutral` also when the classification failed."""

    reply: Emotion | None = None
    user: Emotion | None = None


def emotion_problem(job: ChatJob) -> ValidationError | None:
    """What makes the job's `emotion` unfit for it, naming the field."""
    if job.emotion is None:
        return None
    if job.characters is not None:
        return field_error(("emotion",), "group_emotion", "emotion labels are not supported in group jobs")
    if job.job_type not in CHAT_JOBS:
        chats = ", ".join(sorted(CHAT_JOBS))
        return field_error(
            ("emotion",),
            "emotion_job_type",
            f"emotion labels need a chat job type ({chats}), not {job.job_type.value!r}",
        )
    if job.emotion.of_user and job.mode != "reply":
        return field_error(
            ("emotion", "of_user"), "emotion_of_user_mode", "labels the message a reply answers: mode 'reply' only"
        )
    return None


def unencodable_field(value: object, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The path of the first field whose text does not encode as UTF-8 (a lone surrogate, which Python's JSON
    decoder lets through into free-form dicts), or None. A dict is named as a whole: its keys are the job's text."""
    if isinstance(value, BaseModel):
        fields = ((name, getattr(value, name)) for name in type(value).model_fields)
        return next((found for name, item in fields if (found := unencodable_field(item, (*path, name)))), None)
    if isinstance(value, list):
        return next((found for i, item in enumerate(value) if (found := unencodable_field(item, (*path, i)))), None)
    try:
        if isinstance(value, str):
            value.encode()
        elif isinstance(value, dict):
            json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return path
    return None


class ChatJob(StrictModel):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    job_type: JobType = JobType.roleplay
    # reply: answer the user's last message. continue: the last message is the assistant's, cut short;
    # generate its continuation. impersonate: the last message is the assistant's; write the user's next message
    # (in a chat job type). Regenerate = the same messages under a new job_id (a fresh seed).
    mode: Literal["reply", "continue", "impersonate"] = "reply"
    messages: list[Message] = Field(min_length=1)
    # The user's persona: a name, and an optional description the character knows.
    user_name: str = Field(default="User", min_length=1, max_length=100)
    user_description: str = Field(default="", max_length=4000)
    sampling: Sampling = Sampling()
    # A bundled character's name, or a whole profile inline.
    character: str | Character | None = None
    scenario: str | None = Field(default=None, max_length=4000)
    # Default and cap come from the worker's settings (see `limit_problems`).
    deadline_seconds: float | None = Field(default=None, gt=0, le=3600)
    # The chat's story memory (None: the job gets no summaries, as before memory existed; {}: an empty one).
    memory: Memory | None = None
    # A group scene instead of `character`: 2-8 members (bundled names or inline profiles), one round per job.
    characters: list[str | Character] | None = Field(default=None, min_length=GROUP_MIN, max_length=GROUP_MAX)
    group: GroupSettings | None = None
    # Fairness: jobs of different users take turns in the generation queue, so that one user's backlog does not
    # hold the others' jobs back. Jobs without a user_id share one turn, as if they were one user.
    user_id: str | None = Field(default=None, pattern=USER_ID_PATTERN)
    # Within a level, fairness; a higher level goes first (1 highest … 5 lowest).
    # Strict: `true` or "1" in JSON is a mistake, not the highest priority.
    priority: int = Field(default=DEFAULT_PRIORITY, ge=HIGHEST_PRIORITY, le=LOWEST_PRIORITY, strict=True)
    author_note: AuthorNote | None = None
    # Speech-ready text: ChatResult.speech holds the reply split into segments for the voice worker.
    speech: bool = False
    # Emotion labels of the reply and of the user's last message (None: none).
    emotion: EmotionOptions | None = None
    # chat_scene only (and required there): what the image prompt shows.
    scene: SceneSettings | None = None

    @field_validator("mode")
    @classmethod
    def _mode_fits_the_job_type(cls, mode: str, info: ValidationInfo) -> str:
        job_type = info.data.get("job_type")
        if mode == "impersonate" and job_type is not None and job_type not in CHAT_JOBS:
            chats = ", ".join(sorted(CHAT_JOBS))
            raise ValueError(f"'impersonate' needs a chat job type ({chats}), not {job_type.value!r}")
        if mode != "reply" and job_type is JobType.character:
            raise ValueError(f"a chat_character job takes mode 'reply', not {mode!r}")
        return mode

    @field_validator("speech")
    @classmethod
    def _speech_fits_the_job(cls, speech: bool, info: ValidationInfo) -> bool:
        """Only a reply that a character or the assistant speaks is split into speech (not an image prompt or a
        summary), and never the user's own next message (the user's persona never speaks in a reply)."""
        job_type, mode = info.data.get("job_type"), info.data.get("mode")
        if speech and job_type is not None and job_type not in CHAT_JOBS:
            kinds = ", ".join(sorted(CHAT_JOBS))
            raise PydanticCustomError("speech_job_type", f"needs a job type whose reply is spoken ({kinds})")
        if speech and mode == "impersonate":
            raise PydanticCustomError("speech_impersonate", "an impersonation is the user's message: no speech")
        return speech

    @field_validator("messages")
    @classmethod
    def _last_message_fits_the_mode(cls, messages: list[Message], info: ValidationInfo) -> list[Message]:
        turns = [m for m in messages if m.role != "system"]
        mode = info.data.get("mode")
        if mode is None:
            return messages  # the mode itself is invalid, and named
        if turns and mode == "reply" and turns[-1].role == "assistant" and turns[-1].name is not None:
            return messages  # a group's round may follow a member's reply (checked with the group's fields)
        if info.data.get("job_type") is JobType.summarize:
            if mode != "reply" or not turns:
                raise ValueError("a chat_summarize job takes mode 'reply' and at least one non-system message")
            return messages  # any role may come last
        if info.data.get("job_type") is JobType.scene and mode == "reply":
            if not turns:
                raise ValueError("a chat_scene job takes at least one non-system message")
            return messages  # any role may come last
        if info.data.get("job_type") is JobType.character:
            if not turns:
                raise ValueError("a chat_character job needs at least one non-system message")
            return messages  # any role may come last
        wanted = "user" if mode == "reply" else "assistant"  # continue, impersonate
        if not turns or turns[-1].role != wanted:
            last = turns[-1].role if turns else "none"
            raise ValueError(f"in mode {mode!r} the last non-system message must be the {wanted}'s (it is {last!r})")
        return messages

    @model_validator(mode="after")
    def _memory_covers_messages(self) -> ChatJob:
        if self.memory is None or self.memory.covers <= len(self.messages):
            return self
        error = PydanticCustomError(
            "memory_covers",
            "must be at most the number of messages ({messages}): it counts the leading messages the summary covers",
            {"messages": len(self.messages)},
        )
        raise ValidationError.from_exception_data(
            type(self).__name__, [InitErrorDetails(type=error, loc=("memory", "covers"), input=self.memory.covers)]
        )

    @model_validator(mode="after")
    def _group_is_consistent(self) -> ChatJob:
        problem = group_problem(self)
        if problem is not None:
            raise problem
        return self

    @model_validator(mode="after")
    def _emotion_fits_the_job(self) -> ChatJob:
        problem = emotion_problem(self)
        if problem is not None:
            raise problem
        return self

    @model_validator(mode="after")
    def _scene_fits_the_job(self) -> ChatJob:
        problem = scene_problem(self)
        if problem is not None:
            raise problem
        return self

    @model_validator(mode="after")
    def _text_is_unicode(self) -> ChatJob:
        # Otherwise the job would fail only where it is next serialized: in the workflow, at every retry of a task.
        path = unencodable_field(self)
        if path is None:
            return self
        error = PydanticCustomError("string_unicode", "must be valid Unicode text (it holds a lone surrogate)")
        raise ValidationError.from_exception_data(
            type(self).__name__, [InitErrorDetails(type=error, loc=path, input=None)]
        )


class JobLimits(StrictModel):
    """The worker's caps on what a job may ask for."""

    max_tokens_cap: int = Field(default=2048, ge=1)
    default_deadline_seconds: float = Field(default=120.0, gt=0)
    max_deadline_seconds: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)


# Fixed caps on any job, whatever the worker's settings: they keep a job within Temporal's payload limit
# (2 MB per blob) and the preparation of one job from starving the others.
MAX_LOREBOOK_ENTRIES = 1000
MAX_MESSAGE_BYTES = 32 * 1024
MAX_JOB_BYTES = 1536 * 1024


def utf8_size(text: str) -> int:
    return len(text.encode())


def job_problems(job: ChatJob) -> list[str]:
    """What in the job exceeds the caps of every job, each naming the field and the size, never the text."""
    problems = []
    book = job.character.character_book if isinstance(job.character, Character) else None
    if book is not None and len(book.entries) > MAX_LOREBOOK_ENTRIES:
        problems.append(
            f"job.character.character_book.entries: at most {MAX_LOREBOOK_ENTRIES} entries (got {len(book.entries)})"
        )
    for index, message in enumerate(job.messages):
        size = utf8_size(message.content)
        if size > MAX_MESSAGE_BYTES:
            problems.append(f"job.messages.{index}.content: at most {MAX_MESSAGE_BYTES} bytes as UTF-8 (got {size})")
    size = utf8_size(job.model_dump_json())
    if size > MAX_JOB_BYTES:
        problems.append(f"job: at most {MAX_JOB_BYTES} bytes as JSON (got {size})")
    return problems


def limit_problems(job: ChatJob, limits: JobLimits) -> list[str]:
    """What in the job exceeds the caps of every job (`job_problems`) or this worker's, each naming the field
    and the range."""
    problems = job_problems(job)
    max_tokens = job.sampling.max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens_cap:
        problems.append(f"job.sampling.max_tokens: must be 1-{limits.max_tokens_cap} (got {max_tokens})")
    deadline = job.deadline_seconds
    if deadline is not None and deadline > limits.max_deadline_seconds:
        problems.append(f"job.deadline_seconds: must be at most {limits.max_deadline_seconds:g} (got {deadline:g})")
    return problems


class Timings(StrictModel):
    context_ms: float = 0.0
    queue_ms: float = 0.0  # generation requests waiting for a free slot, summed over attempts
    first_token_ms: float | None = None  # of the returned reply's generation
    generation_ms: float = 0.0  # wall time in generation activities, queue wait and retries included
    engine_ms: float = 0.0  # time the engine spent streaming, summed over attempts
    total_ms: float = 0.0


class AttemptSummary(StrictModel):
    attempt: int  # in a group job, counted per speaker
    valid: bool
    reasons: list[str]
    finish_reason: str
    completion_tokens: int
    speaker: str | None = None  # a group job: whose reply


class GroupReply(StrictModel):
    """One member's reply in a group job's round."""

    speaker: str  # the member profile's `name`, as bundled or sent
    content: str
    reasons: list[str] = []
    attempts: int


# A segment's text is at most this many characters (Unicode code points), what TTS engines take in one request.
SPEECH_SEGMENT_CHARS = 400


class SpeechSegment(StrictModel):
    """A piece of a reply for text to speech (workflows/speech.py): who speaks it, dialogue (quoted speech) or
    narration (actions, description), the plain text (no markdown, quotes or asterisks; at most 400 characters),
    and the speaker's voice from the profile (None: the voice worker's default). Narration's speaker is the
    character whose reply it is, with the character's voice."""

    speaker: str
    kind: Literal["dialogue", "narration"]
    text: str = Field(min_length=1, max_length=SPEECH_SEGMENT_CHARS)
    voice: str | None = None


class ScenePrompt(StrictModel):
    """A chat_scene job's image prompt: comma-separated visual keywords, the character's prefix first."""

    prompt: str


class Panel(StrictModel):
    prompt: str
    caption: str  # one line


class Storyboard(StrictModel):
    panels: list[Panel]  # in story order


class ChatResult(StrictModel):
    job_id: str
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    returned_attempt: int  # whose reply `content` is (the valid one, or the best rejected one)
    # Every reason code found in any attempt, first occurrence first; per attempt in `attempt_details`. Last,
    # `deadline` when the deadline passed before a valid reply and the best rejected one is returned.
    reasons: list[str] = []
    attempt_details: list[AttemptSummary] = []
    # "ok": the reply passed validation. "flagged": every attempt was rejected (or the deadline came first) and
    # the best one is returned with its reasons (never one that broke the platform's policy).
    outcome: Literal["ok", "flagged"] = "ok"
    timings: Timings = Timings()
    # Jobs that carry memory: the memory to send with the next job (covers advanced after a summary; the job's
    # own when no summary was due or none passed validation). chat_summarize: the summary written.
    memory: Memory | None = None
    # A group job: the round's replies in order (`content` is the first's; `attempts` and token counts are sums).
    replies: list[GroupReply] = []
    # A job with `speech`: the reply (a group job: every reply of the round, in order) as speech segments.
    speech: list[SpeechSegment] | None = None
    # A job with `emotion`: the labels it asked for (None: the job asked for none).
    emotion: Emotions | None = None
    # chat_scene: {"prompt"} or, for a storyboard, {"panels"}; `content` is its readable rendering.
    scene: ScenePrompt | Storyboard | None = None
    # chat_character: the Character Card V3 (`{"spec": "chara_card_v3", "spec_version": "3.0", "data": {…}}`), as
    # `characters import` reads it; `content` is its readable rendering.
    card: dict[str, Any] | None = None


class GenerateRequest(StrictModel):
    job_id: str
    attempt: int
    messages: list[Message]
    sampling: ResolvedSampling
    stop: list[str] = []
    # Only a reply is streamed to the job's subscribers; no other generation's text is ever logged.
    purpose: Literal["reply", "summary", "scene", "card", "emotion"] = "reply"
    # A JSON schema the output must follow: sent as the engine's own constrained decoding (`response_format`,
    # orchestrator/engines.py). None: free text.
    json_schema: dict[str, Any] | None = None
    speaker: str | None = None  # a group job's member whose reply this is (carried by the stream's events)


class GenerateResult(StrictModel):
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    engine_ms: float
    first_token_ms: float | None = None
    queue_ms: float = 0.0
    # The reply's first characters the activity sent to the job's stream; the workflow publishes the rest (the
    # activity leaves its last batch to it). None: a result from before, whose activity sent every delta itself.
    streamed_chars: int | None = None


# When a chat's history outgrows its room, whole turns are dropped until it takes this share of the room.
DEFAULT_LOW_WATER = 0.6


# What crosses the local activities (prepare, check_reply): their inputs and the markers they leave.
class EngineLimits(StrictModel):
    max_input_tokens: int
    max_total_tokens: int
    margin_tokens: int
    low_water: float = Field(default=DEFAULT_LOW_WATER, gt=0, le=1)


class Dropped(StrictModel):
    history_messages: int = 0
    examples: int = 0
    lorebook_entries: int = 0


class Reminder(StrEnum):
    """A one-line instruction after the history for an attempt after a rejected reply (workflows/prompts.py
    has the texts): `own_reply` after `speaks_for_user`, `in_character` after `out_of_character` or `refusal`
    in roleplay."""

    own_reply = "own_reply"
    in_character = "in_character"


# What the context puts into the history besides lorebook entries, and after it.
NoteKind = Literal[
    "character_note",
    "author_note",
    "post_history_instructions",
    "continue_instruction",
    "impersonate_instruction",
    "group_nudge",
    "reminder",
    "user_emotion",
]


class Insertion(StrictModel):
    """A piece the card or the book puts into the context, and where: `message` is its index in `messages`;
    `depth` (for a piece in the history) how many history messages follow it."""

    kind: Literal["lorebook", NoteKind]
    label: str
    message: int
    depth: int | None = None  # None: in the system message, laid with the prefix


class Window(StrictModel):
    """Where the history starts (a pure function of the job's messages: see workflows/context.py).
    Indices are into the job's `messages`; token counts are the history's room."""

    first_message: int
    laid_at: int  # the message at which the prefix (history start, laid lorebook entries) was last laid
    high_water: int
    low_water: int


class MemoryBlock(StrictModel):
    """Where the job's story memory went: in system message `message`, after the constant part (prompt,
    character, persona, scenario, constant and laid lorebook entries) and before the example dialogue; `text`
    holds the summary and the pinned facts. Its room is reserved whatever the summary's length (`reserved`
    tokens: the longest summary the worker writes plus the facts), so a new summary never moves the window.
    `summarize_until`: the window starts past what the summary covers, so the job summarises the messages from
    `covers` up to there."""

    message: int = 0
    text: str
    tokens: int
    reserved: int
    covers: int
    facts: int
    summarize_until: int | None = None


class BuiltContext(StrictModel):
    messages: list[Message]
    prompt_tokens: int
    budget: int
    lorebook: list[str]
    dropped: Dropped
    stop: list[str]
    insertions: list[Insertion] = []
    window: Window | None = None
    memory: MemoryBlock | None = None


class PrepareRequest(StrictModel):
    job: ChatJob
    # 1.0 normally; smaller after the engine still answered "input too long".
    budget_share: float = 1.0
    # Until when prepare waits for an engine that is down (runs begun before prepare-waits-for-the-engine: none).
    wait_until: datetime | None = None
    # After rejected replies: what goes after the history, last (runs begun before escalation-per-reason: none).
    reminders: list[Reminder] = []
    speaker: str | None = None  # a group job: the member whose reply the context is for
    # The user's last message's emotion label (emotion.of_user), which a note after the history names.
    user_emotion: Emotion | None = None


class Prepared(StrictModel):
    context: BuiltContext
    character: Character | None
    max_attempts: int
    deadline_seconds: float
    # The worker's cap on max_tokens, which a later attempt's may grow to (None: recorded before it was sent).
    max_tokens_cap: int | None = None
    # A group job: every name the other members go by, whose lines the reply must not write.
    others: list[str] = []


class SummaryRequest(StrictModel):
    """A summary step: merge `memory`'s summary with the job's messages from `memory.covers` up to `until`."""

    job: ChatJob
    memory: Memory
    until: int


class SummaryPrompt(StrictModel):
    """What the summary step sends, and how far the new summary covers (the messages that fit the budget)."""

    messages: list[Message]
    covers: int
    prompt_tokens: int
    stop: list[str] = []


class EmotionRequest(StrictModel):
    """What the emotion_prompt local activity builds a classification for: the user's last message of `job`
    (after the job's limits and policy, which prepare would check only after the text went to the engine), or
    else `reply`."""

    job: ChatJob | None = None
    reply: str = ""


class SummaryCheck(StrictModel):
    summary: str
    finish_reason: str
    char_name: str = ASSISTANT_NAME
    user_name: str = "User"


class SceneRequest(StrictModel):
    """A chat_scene job's prompt, for a scene output of at most `max_tokens`."""

    job: ChatJob
    max_tokens: int


class SceneMessages(StrictModel):
    """What a chat_scene job sends, and what its check needs: the names the prompt must not hold and the
    character's prefix (workflows/scenes.py)."""

    messages: list[Message]
    prompt_tokens: int
    stop: list[str] = []
    json_schema: dict[str, Any] | None = None  # a storyboard's
    names: list[str] = []
    prefix: str = ""


class SceneCheck(StrictModel):
    output: str
    finish_reason: str
    scene: SceneSettings
    names: list[str] = []
    prefix: str = ""
    char_name: str = ASSISTANT_NAME
    user_name: str = "User"


# chat_character (workflows/card.py): at most this many tokens for the card's JSON by default.
CARD_MAX_TOKENS = 700


class CardPrompt(StrictModel):
    """What a card generation sends: the newest messages that fit the budget, from `first_message` on."""

    messages: list[Message]
    prompt_tokens: int
    budget: int
    first_message: int


class CardCheck(StrictModel):
    """A card the model wrote, and what it is checked against: the starting profile (bundled, inline, or a bare
    name), the user's name, and whether the conversation has the character's own lines."""

    reply: str
    finish_reason: str
    profile: Character
    user_name: str = "User"
    character_spoke: bool = True


class ReplySpec(StrictModel):
    """Who is speaking in the job whose reply is checked."""

    job_type: JobType
    char_name: str = ASSISTANT_NAME
    user_name: str = "User"
    # The character's profile makes code its voice (`writes_code`): its code blocks are in scene.
    code_in_scene: bool = False
    # Who writes the reply: the character (modes reply, continue) or the user (impersonate: the character's
    # part is cut, the user's is its own).
    writes_as: Literal["character", "user"] = "character"
    # A group job: the other members' names, whose lines the reply must not write.
    others: list[str] = []


class Verdict(StrictModel):
    valid: bool
    reasons: list[str]
    cleaned: str


class SceneVerdict(Verdict):
    """A scene's verdict: `cleaned` is the readable rendering of `scene` (None: nothing could be read)."""

    scene: ScenePrompt | Storyboard | None = None


class CardVerdict(Verdict):
    """`cleaned` is the card's readable rendering; `card` the card itself (None when none could be read)."""

    card: dict[str, Any] | None = None


class CheckRequest(StrictModel):
    reply: str
    spec: ReplySpec
    history: list[Message]
    finish_reason: str


class JobMetrics(StrictModel):
    """The one structured record per returned reply (workflows/metrics.py `log_job_metrics`): numbers and codes,
    never chat text."""

    job_id: str
    job_type: JobType
    character: str | None
    conversation_length: int
    response_length: int
    temperature: float
    max_tokens: int
    attempts: int
    reasons: list[str]
    finish_reason: str
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    tokens_per_second: float
    timings: Timings
    warnings: list[str] = []  # quality warnings, filled in by log_job_metrics


class ErrorType(StrEnum):
    """Temporal ApplicationError types. Retry policies name the non-retryable ones."""

    engine_unavailable = "EngineUnavailable"  # connection refused, timeout, 502/503/504, loading
    engine_overloaded = "EngineOverloaded"  # 429, overloaded (also in-stream)
    generation_failed = "GenerationFailed"  # 424, 500, in-stream generation error
    input_too_long = "InputTooLong"
    invalid_request = "InvalidRequest"  # other 400/422
    engine_auth = "EngineAuth"  # 401/403
    engine_misconfigured = "EngineMisconfigured"  # 404
    invalid_job = "InvalidJob"  # the job failed its own validation
    no_valid_reply = "NoValidReply"  # no attempt can be returned: each broke the policy or was empty after cleaning
    deadline = "Deadline"  # the job's deadline passed
    context_too_large = "ContextTooLarge"  # the parts that must go in exceed the token budget


RETRYABLE = frozenset({ErrorType.engine_unavailable, ErrorType.engine_overloaded, ErrorType.generation_failed})
NON_RETRYABLE = frozenset(ErrorType) - RETRYABLE


class EngineError(Exception):
    def __init__(self, type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.type = type
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.type in RETRYABLE

    def __repr__(self) -> str:
        return f"EngineError({self.type.value}: {self.message})"


# The job's stream (temporalio.contrib.workflow_streams, topic STREAM_TOPIC): what a backend follows while a
# reply is written. `reset` comes before every generation after the first, whatever the cause, so a
# subscriber discards what it showed; `done`'s content may differ from the streamed text by validation's
# cleaning.
STREAM_TOPIC = "events"


class AttemptEvent(StrictModel):
    attempt: int  # the job's generation this event belongs to (1 = first; later ones after a rejected reply)
    speaker: str | None = None  # a group job: whose reply (attempts count per speaker)


class DeltaEvent(AttemptEvent):
    type: Literal["delta"] = "delta"
    text: str


class ResetEvent(AttemptEvent):
    type: Literal["reset"] = "reset"
    try_number: int = 1  # Temporal's try of this attempt; > 1 when a failed try is retried
    reason: Literal["regenerate", "retry"]


class DoneEvent(StrictModel):
    type: Literal["done"] = "done"
    result: ChatResult


class FailedEvent(StrictModel):
    type: Literal["failed"] = "failed"
    error_type: str
    message: str


class CancelledEvent(StrictModel):
    type: Literal["cancelled"] = "cancelled"


StreamEvent = Annotated[DeltaEvent | ResetEvent | DoneEvent | FailedEvent | CancelledEvent, Field(discriminator="type")]

Stage = Literal["queued", "building_context", "generating", "validating", "summarizing", "done", "failed", "cancelled"]


class JobStatus(StrictModel):
    stage: Stage
    attempt: int
    tokens: int  # completion tokens of finished attempts, plus the running one's when known
    elapsed_ms: float
