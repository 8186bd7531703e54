"""Context building: the messages the engine sees for a job, within a token budget. Pure given a token
counter: `context_pieces` cuts the job into the parts that may go in, `assemble` keeps what fits.

The prompt is laid out so that consecutive turns of a long chat share a byte-identical prefix, which the
engines' prefix caches reuse (a sawtooth window):

- The system message comes first (Qwen's template otherwise inserts its own "You are Qwen…"): the job type's
  prompt, or the card's own `system_prompt` with `{{original}}` standing for the replaced one; the character,
  the user's persona, the scenario, the book's constant entries and the entries laid with the prefix (each
  before or after the character, as its `position` says), then, until the history first needs their room,
  the example dialogue. Then the history in whole turns, then `post_history_instructions` (and the continue
  instruction; in mode impersonate, the impersonate instruction instead of both). Always kept: the system
  prompt, character, persona, scenario, the newest turn and what follows the history.
- The history grows until it and the lorebook entries anchored in it (below) no longer fit its room (what
  the budget leaves after the system message: the high-water mark); then whole turns are dropped from its
  front until it takes `low_water` (60 %, CHAT_WORKER_CONTEXT_LOW_WATER) of its room, and the prefix is laid
  anew: the lorebook entries that fire at that message go into the system message, the example dialogue
  goes out. Between two drops the system message and the history's start stay put, so the next turn only
  appends (a drop costs one turn: only the part of the system message before the first change is reused).
- Where the window starts is a pure function of the job's messages: `window_walk` replays the conversation
  from its first message, message by message, with the same rule every time, so the `context` command
  (called once per turn, with no state) gives the prompt the worker sends, and consecutive turns agree on
  every drop before their last messages. The worker keeps the replay's state at the end of recent jobs
  (`ReplayCache`), so the next turn replays only its new messages; a kept state is used only where the job's
  messages and rules equal its own, so the result is the full replay's.
- A keyed lorebook entry that fires after the prefix was laid (on the scan of the last `scan_depth`
  messages, at any message since) goes into the history at its depth when it first fired (Card V3
  `@@depth`, V2 `extensions.depth`, default 4 messages from the end) and stays at that message until the
  next drop, which lays it where its `position` says if it fires then. Entries laid with the prefix also
  stay until the next drop, even when their keys have scrolled out of the scan. The card's character note
  (`extensions.depth_prompt`) is always its depth from the end, and `post_history_instructions` always last
  but for the note on the user's emotion (`emotion.of_user`, workflows/emotion.py) and the reminders that an
  attempt after a rejected reply adds (workflows/prompts.py), which come after it, in that order, and go out when
  the newest turn leaves them no room.
- The job's author's note (`author_note`) never moves a message an earlier turn's prompt held: a copy goes in
  at every `every`-th user message (counted from the conversation's first), `depth` messages before the end of
  the history as it stood then, but never before the message after the user's previous message; a copy stays
  where it went, and its tokens count with its user message's turn, so it leaves with that turn at a drop
  (`author_note_places`). In an alternating chat a depth of 2 or more puts the copy before the character's
  last reply: the previous turn's prompt stays whole, but an engine that also cached the reply it generated
  recomputes that reply; depth 0 (after the user's message) or 1 (before it) keeps even that. SillyTavern
  instead moves one note to that depth every turn and takes it out on the turns between, which changes cached
  text every turn.
- Lorebook entries come before history, as before: constant ones by priority within the book's token
  budget; laid ones by priority within what the book's budget leaves and all but the newest turn's room;
  anchored ones by priority within what the book's budget leaves (they count against the history's room).
  When one turn alone outgrows the room, older turns, then the examples, then anchored, laid and constant
  entries (lowest priority first) are given up until the budget holds."""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable
from itertools import accumulate
from typing import NamedTuple, Protocol

from pydantic import BaseModel

from characters import ASSISTANT_NAME, Character, fill_macros, scenario_text
from characters.profile import CharacterBook
from workflows.emotion import user_emotion_note
from workflows.group import GROUP_NUDGE, GroupScene
from workflows.lorebook import (
    DEFAULT_DEPTH,
    KeyIndex,
    entry_depth,
    entry_label,
    entry_text,
    fired_in,
    scan_depth,
    triggered_entries,
)
from workflows.models import (
    DEFAULT_LOW_WATER,
    SUMMARY_MAX_TOKENS,
    AuthorNote,
    BuiltContext,
    ChatJob,
    Dropped,
    Emotion,
    EngineLimits,
    Insertion,
    JobType,
    Memory,
    MemoryBlock,
    Message,
    NoteKind,
    Reminder,
    Window,
)
from workflows.prompts import REMINDERS, system_prompt
from workflows.sampling import max_tokens_for

# Tokens a chat template adds around each message (ChatML: <|im_start|>role\n … <|im_end|>\n), and once for
# the assistant's turn that generation starts.
MESSAGE_OVERHEAD = 5
REPLY_PRIMER = 3
CONTINUE_INSTRUCTION = (
    "Continue your last message from exactly where it stopped. Do not repeat any of it and do not start a new message."
)

# Mode impersonate: after the history, the model writes the user's next message (the system message stays the
# reply's, so an impersonation shares the chat's cached prefix).
IMPERSONATE_INSTRUCTION = (
    "[Write {{user}}'s next message in this chat, as {{user}} would write it: in the first person, in {{user}}'s "
    "own voice and style as in {{user}}'s earlier messages{persona}. Write only what {{user}} says and does; do "
    "not write {{char}}'s words or actions.]"
)
IMPERSONATE_PERSONA = " and true to how {{user}} is described"

EXAMPLES_HEADER = "Example dialogue:"
MEMORY_HEADER = "Story so far:"
FACTS_HEADER = "Facts to keep in mind:"
# SillyTavern's character note: {"prompt", "depth", "role"} in the card's extensions.
CHARACTER_NOTE_EXTENSION = "depth_prompt"

TokenCounter = Callable[[str], int]


class ContextTooLarge(ValueError):
    """The parts that must always go in do not fit the budget on their own."""


def estimate_tokens(text: str) -> int:
    """A documented stand-in for a tokenizer: about 3.5 characters per token for English prose (BPE
    tokenizers such as Qwen's and SmolLM's), rounded up. Used by tests and the offline `context` command."""
    return math.ceil(len(text) / 3.5)


def token_budget(max_input_tokens: int, max_total_tokens: int, max_tokens: int, margin: int) -> int:
    return min(max_input_tokens, max_total_tokens - max_tokens) - margin


def budget_beside(limits: EngineLimits, max_tokens: int) -> int:
    """The prompt's tokens the engine takes beside an output of `max_tokens`."""
    return token_budget(limits.max_input_tokens, limits.max_total_tokens, max_tokens, limits.margin_tokens)


class LorePiece(BaseModel):
    index: int  # the entry's place in the book
    order: int  # its place in insertion order
    label: str
    text: str
    before_character: bool
    priority: float
    depth: int


class Note(BaseModel):
    """A text the card puts into the history at a depth (0: after the history)."""

    kind: NoteKind
    text: str
    depth: int = 0


class ContextPieces(BaseModel):
    """Everything that may go into the context, macros filled, before the budget decides."""

    prompt: str
    character: str
    persona: str
    scenario: str
    constant_lore: list[LorePiece]
    # Keyed entries that fire somewhere in the conversation: every entry a scan at any message can give.
    lore: list[LorePiece]
    book: CharacterBook | None  # scanned again where the window is laid
    lore_budget: int | None
    examples: list[str]
    chat: list[Message]  # the conversation without system messages, oldest first
    chat_indices: list[int]  # each one's index in the job's messages
    notes: list[Note]  # at their depth in the history
    after_history: list[Note]  # post-history instructions, then the continue instruction
    # Last of all, when they fit: the note on the user's emotion (emotion.of_user), then the reminders.
    reminders: list[Note] = []
    memory: Memory | None = None  # the job's story memory: its block is `memory_text`
    memory_text: str = ""
    memory_floor: str = ""  # the block without a summary: the facts, whose room is reserved with the summary's
    stop: list[str] = []
    author_note: str = ""
    # (chat index a copy goes before, chat index of the user message that put it in): `author_note_places`
    author_note_places: list[tuple[int, int]] = []

    def texts(self) -> list[str]:
        """Every text `assemble` may count."""
        return [
            self.prompt,
            self.character,
            self.persona,
            self.scenario,
            EXAMPLES_HEADER,
            *(p.text for p in [*self.constant_lore, *self.lore]),
            *self.examples,
            *(m.content for m in self.chat),
            *(n.text for n in [*self.notes, *self.after_history, *self.reminders]),
            self.memory_text,
            self.memory_floor,
            MEMORY_HEADER,
            self.author_note,
        ]


def char_name(character: Character | None) -> str:
    return character.char_name if character is not None else ASSISTANT_NAME


def split_examples(mes_example: str) -> list[str]:
    """Example dialogue blocks, split on <START>."""
    return [block.strip() for block in re.split(r"<START>", mes_example, flags=re.IGNORECASE) if block.strip()]


def turns(messages: list[Message]) -> list[list[Message]]:
    """Conversation turns, each starting at a user message (a leading assistant greeting is its own turn)."""
    grouped: list[list[Message]] = []
    for message in messages:
        if message.role == "user" or not grouped:
            grouped.append([])
        grouped[-1].append(message)
    return grouped


def character_sheet(character: Character) -> str:
    lines = [f"Character: {character.name}"]
    for label, text in (
        ("Description", character.description),
        ("Personality", character.personality),
        ("Appearance", character.appearance),
        ("Background", character.background),
        ("Speaking style", character.speaking_style),
    ):
        if text:
            lines.append(f"{label}: {text}")
    return "\n".join(lines)


def character_note(character: Character) -> tuple[str, int] | None:
    """The card's character note and its depth, when it has one."""
    note = character.extensions.get(CHARACTER_NOTE_EXTENSION)
    if not isinstance(note, dict) or not isinstance(note.get("prompt"), str) or not str(note["prompt"]).strip():
        return None
    depth = note.get("depth")
    return str(note["prompt"]), depth if isinstance(depth, int) and depth >= 0 else DEFAULT_DEPTH


def memory_text(memory: Memory) -> str:
    """The memory block: the summary, then the pinned facts."""
    parts = []
    if memory.summary.strip():
        parts.append(f"{MEMORY_HEADER}\n{memory.summary.strip()}")
    if memory.facts:
        parts.append(f"{FACTS_HEADER}\n" + "\n".join(f"- {fact.strip()}" for fact in memory.facts))
    return "\n\n".join(parts)


def author_note_places(chat: list[Message], note: AuthorNote) -> list[tuple[int, int]]:
    """Where the author's note's copies go (see the module's docstring): for every `every`-th user message of
    `chat`, the index of the chat message the copy goes before (len(chat): after the history) and the user
    message's own index."""
    places = []
    previous = -1  # the index of the previous user message
    number = 0
    for index, message in enumerate(chat):
        if message.role != "user":
            continue
        number += 1
        if number % note.every == 0:
            places.append((max(index + 1 - note.depth, previous + 1), index))
        previous = index
    return places


def context_pieces(
    job: ChatJob,
    character: Character | None,
    reminders: Iterable[Reminder] = (),
    scene: GroupScene | None = None,
    user_emotion: Emotion | None = None,
) -> ContextPieces:
    """`scene`: a group job's, for its speaker (`character`): the cards of `scene.carded`, the history's lines
    labelled with their speakers, the group nudge after the history. `user_emotion`: the label of the user's last
    message, which a note after the history names (workflows/emotion.py)."""
    name, user = char_name(character), job.user_name
    group = scene.names if scene is not None else ()

    def filled(text: str, speaker: Character | str = name) -> str:
        return fill_macros(text, char=speaker, user=user, group=group).strip()

    default_prompt = system_prompt(job.job_type)
    roleplay = job.job_type is JobType.roleplay and character is not None
    prompt = default_prompt
    if roleplay and character.system_prompt:
        prompt = character.system_prompt.replace("{{original}}", default_prompt)
    job_system = [m.content for m in job.messages if m.role == "system"]
    prompt = "\n\n".join([prompt, *job_system])

    scenario = scenario_text(character, job.scenario) if roleplay else job.scenario or ""
    chat_indices = [index for index, m in enumerate(job.messages) if m.role != "system"]
    spoken = [job.messages[index] for index in chat_indices]
    chat = [scene.labelled(message, user) for message in spoken] if scene is not None else spoken
    carded = scene.carded if scene is not None else [character] if character is not None else []
    book = character.character_book if roleplay else None
    # A scan of the whole conversation fires every entry that a scan of its last messages at any point can.
    candidates = fired_in(book, "\n".join(m.content for m in chat)) if book else []
    lore = [
        LorePiece(
            index=index,
            order=order,
            label=entry_label(entry, index),
            text=filled(entry_text(entry)),
            before_character=entry.position == "before_char",
            priority=entry.priority if entry.priority is not None else 100,
            depth=entry_depth(entry),
        )
        for order, (index, entry) in enumerate(candidates)
    ]
    lore = [piece for piece in lore if piece.text]
    notes = []
    note = character_note(character) if roleplay else None
    if note is not None:
        notes.append(Note(kind="character_note", text=filled(note[0]), depth=note[1]))
    after_history = []
    impersonate = job.mode == "impersonate"
    if roleplay and character.post_history_instructions and not impersonate:  # they instruct the character
        text = filled(character.post_history_instructions.replace("{{original}}", ""))
        after_history.append(Note(kind="post_history_instructions", text=text))
    if job.mode == "continue":
        after_history.append(Note(kind="continue_instruction", text=CONTINUE_INSTRUCTION))
    if impersonate:
        persona = IMPERSONATE_PERSONA if job.user_description else ""
        text = filled(IMPERSONATE_INSTRUCTION.replace("{persona}", persona))
        after_history.append(Note(kind="impersonate_instruction", text=text))
    note_text = filled(job.author_note.text) if job.author_note else ""
    others_labels = []  # a group's other members: their line labels are stop strings too
    if scene is not None:
        after_history.append(Note(kind="group_nudge", text=filled(GROUP_NUDGE)))
        others_labels = [f"\n{other}:" for other in scene.others]
    constant = {piece.index for piece in lore if book is not None and book.entries[piece.index].constant}
    emotion_note = user_emotion_note(user_emotion) if user_emotion is not None else None
    last = [Note(kind="user_emotion", text=filled(emotion_note))] if emotion_note else []
    return ContextPieces(
        prompt=filled(prompt),
        character="\n\n".join(filled(character_sheet(member), member) for member in carded) if roleplay else "",
        persona=filled(f"{user} (the user): {job.user_description}") if job.user_description else "",
        scenario=filled(f"Scenario: {scenario}") if scenario else "",
        constant_lore=[piece for piece in lore if piece.index in constant],
        lore=[piece for piece in lore if piece.index not in constant],
        book=book,
        lore_budget=book.token_budget if book else None,
        examples=[filled(block, m) for m in carded for block in split_examples(m.mes_example)] if roleplay else [],
        chat=chat,
        chat_indices=chat_indices,
        notes=[n for n in notes if n.text],
        after_history=[n for n in after_history if n.text],
        reminders=[
            *last,
            *(Note(kind="reminder", text=filled(REMINDERS[reminder])) for reminder in dict.fromkeys(reminders)),
        ],
        memory=job.memory,
        memory_text=filled(memory_text(job.memory)) if job.memory else "",
        memory_floor=filled(memory_text(Memory(facts=job.memory.facts))) if job.memory else "",
        # Impersonating, the model must not write the character's lines: it stops at the character's labels.
        stop=stop_sequences(name, generic=()) if impersonate else [*stop_sequences(user), *others_labels],
        author_note=note_text,
        author_note_places=author_note_places(spoken, job.author_note) if job.author_note and note_text else [],
    )


def stop_sequences(name: str, generic: Iterable[str] = ("You", "User")) -> list[str]:
    """`name` as a line's label, where the model starts writing the other side's turn (SillyTavern's default
    stop strings; the user's name, or impersonating, the character's): its own labels first, the plain one
    first of them, since an engine with a limit (TGI: 4) takes the first ones (orchestrator/engines.py
    `Engine.stops`); then the `generic` labels. What a stop string cannot express is cut after generation
    (workflows/validation.py)."""
    own = [f"\n{name}:", f"\n**{name}:**", f"\n**{name}**:"]
    return list(dict.fromkeys([*own, *(f"\n{label}:" for label in generic)]))


def _system_text(pieces: ContextPieces, lore: list[LorePiece], examples: list[str]) -> str:
    parts = [
        pieces.prompt,
        *(p.text for p in lore if p.before_character),
        pieces.character,
        *(p.text for p in lore if not p.before_character),
        pieces.persona,
        pieces.scenario,
        # The story memory: after the constant part, before the examples and history.
        pieces.memory_text,
    ]
    if examples:
        parts.append(f"{EXAMPLES_HEADER}\n" + "\n\n".join(examples))
    return "\n\n".join(part for part in parts if part)


def by_priority(pieces: Iterable[LorePiece], room: float, price: Callable[[LorePiece], int]) -> list[LorePiece]:
    """The pieces that fit `room`, highest priority first (ties: insertion order), in insertion order."""
    chosen, used = [], 0
    for piece in sorted(pieces, key=lambda p: (-p.priority, p.order)):
        if used + price(piece) <= room:
            chosen.append(piece)
            used += price(piece)
    return sorted(chosen, key=lambda p: p.order)


class Laying(BaseModel):
    """The prefix as laid at one message: what goes into the system message with it, and the room left to
    the history (its high-water mark)."""

    at: int  # index into the chat
    lore: list[LorePiece]
    left_out: set[int]  # entries that fired here but did not fit: not anchored before the next drop either
    examples: list[str]
    room: int


class Anchored(BaseModel):
    """A keyed entry that fired after the prefix was laid: it goes before chat message `before` (its depth
    from the end of the history when it first fired) and stays there until the next drop."""

    piece: LorePiece
    before: int
    tokens: int


class Walk(BaseModel):
    """The replay after its first `replayed` messages: the first turn kept, the history's tokens from there,
    the prefix as last laid (None before the first user message) and the entries anchored since."""

    replayed: int = 0
    start: int = 0
    total: int = 0
    laying: Laying | None = None
    anchored: list[Anchored] = []


def window_walk(
    costs: list[int],
    turn_of: list[int],
    first: int,
    lay: Callable[[int, int, bool], Laying],
    anchor: Callable[[int, Laying, list[Anchored]], list[Anchored]],
    low_water: float,
    begin: Walk,
    end: int,
) -> Walk:
    """Replay the conversation message by message (costs: each message's tokens; turn_of: its turn) from
    `begin` (the replay after its first `begin.replayed` messages) up to message `end`. At message `first` the
    prefix is laid (with the examples); after it, entries that fire are anchored at their depth; whenever the
    history and its anchored entries outgrow the room, the prefix is laid again (without the examples, with
    what fires then) and whole turns go from the front until the history takes `low_water` of the new room.
    Every job of a conversation replays the same messages the same way, so the start moves only at a drop,
    and a turn that adds messages agrees with the one before on every earlier drop."""
    turn_costs = [0] * (turn_of[-1] + 1)
    for index in range(begin.replayed):
        turn_costs[turn_of[index]] += costs[index]
    start, total, laying, anchored = begin.start, begin.total, begin.laying, begin.anchored
    for index in range(begin.replayed, end):
        total += costs[index]
        turn_costs[turn_of[index]] += costs[index]
        if index < first:
            continue
        if laying is None:
            laying = lay(index, total, True)
        else:
            anchored = anchor(index, laying, anchored)
        if total + sum(a.tokens for a in anchored) > laying.room:
            laying, anchored = lay(index, total, False), []
            while total > low_water * laying.room and start < turn_of[index]:
                total -= turn_costs[start]
                start += 1
    return Walk(replayed=end, start=start, total=total, laying=laying, anchored=anchored)


# A chat message as the replay sees it: role, token cost, text.
Replayed = tuple[str, int, str]
REPLAY_CACHE_SIZE = 256


class _Kept(NamedTuple):
    rules: Hashable
    lore: dict[int, Hashable]
    messages: list[Replayed]
    walk: Walk


class ReplayCache:
    """The replay's state at the end of recent jobs and one message before it, so that the next turn of a
    chat (or a regeneration, or an edited last message) replays only its new messages instead of the whole
    conversation. A state is found by a hash of the walk's rules (every value the replay reads besides the
    messages and the keyed lorebook entries: the room, the book, the examples, the low-water mark) and of
    each message up to there (role, cost, text), and used only when its rules and messages equal the job's
    and each keyed entry it could have seen is the same in the job (an entry that fires on a scan of the
    messages fires on the scan of any longer conversation: the job's keyed entries hold the state's). So a
    changed message, setting, counter or lorebook cannot reuse a stale state: the result is the full
    replay's. Holds the texts of at most `size` states (two per job); thread-safe (prepare assembles in
    threads)."""

    def __init__(self, size: int = REPLAY_CACHE_SIZE) -> None:
        self._size = size
        self._kept: OrderedDict[tuple[int, int], _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self.replayed = 0  # messages replayed over all walks

    def walk(
        self,
        rules: Hashable,
        lore: dict[int, Hashable],
        messages: list[Replayed],
        replay: Callable[[Walk, int], Walk],
    ) -> Walk:
        """The replay of all `messages` (`lore`: each keyed entry's terms by its index in the book), from the
        longest kept state that holds for them."""
        keys = list(accumulate(messages, lambda key, message: hash((key, message)), initial=hash(rules)))[1:]
        end = len(messages)
        begin = self._longest(rules, lore, messages, keys)
        if begin.replayed == end:
            return begin
        before_last = replay(begin, end - 1) if begin.replayed < end - 1 else begin
        walk = replay(before_last, end)
        with self._lock:
            self.replayed += end - begin.replayed
            for state in (before_last, walk):
                if state.replayed > 0:
                    key = (state.replayed, keys[state.replayed - 1])
                    self._kept[key] = _Kept(rules, lore, messages, state)
                    self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return walk

    def _longest(self, rules: Hashable, lore: dict[int, Hashable], messages: list[Replayed], keys: list[int]) -> Walk:
        with self._lock:
            for count in range(len(messages), 0, -1):
                kept = self._kept.get((count, keys[count - 1]))
                if (
                    kept is not None
                    and kept.rules == rules
                    and kept.messages[:count] == messages[:count]
                    and all(lore.get(index) == terms for index, terms in kept.lore.items())
                ):
                    self._kept.move_to_end((count, keys[count - 1]))
                    return kept.walk
        return Walk()


# The worker's: every job's context is assembled with it.
REPLAYS = ReplayCache()


def _examples_within(examples: list[str], room: int, cost: Callable[[str], int], header: int) -> list[str]:
    kept: list[str] = []
    used = 0
    for block in examples:
        price = cost(block) + (header if not kept else 0)
        if used + price > room:
            break
        kept.append(block)
        used += price
    return kept


def assemble(
    pieces: ContextPieces,
    *,
    budget: int,
    count: TokenCounter,
    low_water: float = DEFAULT_LOW_WATER,
    replays: ReplayCache = REPLAYS,
) -> BuiltContext:
    def cost(text: str) -> int:
        return count(text) + 1 if text else 0  # +1: the blank line joining parts

    def message_cost(text: str) -> int:
        return count(text) + MESSAGE_OVERHEAD

    def lore_cost(lore: Iterable[LorePiece]) -> int:
        return sum(cost(p.text) for p in lore)

    header = count(EXAMPLES_HEADER) + 1

    def examples_cost(examples: list[str]) -> int:
        return sum(cost(block) for block in examples) + (header if examples else 0)

    chat = pieces.chat
    grouped = turns(chat)
    turn_of = [number for number, turn in enumerate(grouped) for _ in turn]
    costs = [message_cost(m.content) for m in chat]
    for _, by in pieces.author_note_places:  # a copy's tokens count with the user message that put it in
        costs[by] += message_cost(pieces.author_note)
    turn_starts = [0, *accumulate(len(turn) for turn in grouped[:-1])]
    turn_costs = [sum(costs[start : start + len(turn)]) for start, turn in zip(turn_starts, grouped, strict=True)]
    core = (
        MESSAGE_OVERHEAD
        + REPLY_PRIMER
        + sum(cost(t) for t in (pieces.prompt, pieces.character, pieces.persona, pieces.scenario))
        + sum(message_cost(n.text) for n in [*pieces.notes, *pieces.after_history])
    )
    memory_tokens = cost(pieces.memory_text)
    # The memory's room does not depend on the summary's length, so a new summary never moves the window.
    reserved = max(memory_tokens, cost(pieces.memory_floor) + cost(MEMORY_HEADER) + SUMMARY_MAX_TOKENS)
    if pieces.memory is not None:
        core += reserved
    if core + turn_costs[-1] > budget:
        raise ContextTooLarge(
            f"context_too_large: the system prompt, character, persona, scenario, memory and newest message need "
            f"{core + turn_costs[-1]} tokens; the budget is {budget}"
        )
    reminders_cost = sum(message_cost(n.text) for n in pieces.reminders)
    if core + reminders_cost + turn_costs[-1] <= budget:
        core += reminders_cost
    else:  # a reminder never costs the job: the attempt goes without it
        pieces = pieces.model_copy(update={"reminders": []})
    book_room = pieces.lore_budget if pieces.lore_budget is not None else math.inf
    constant = by_priority(pieces.constant_lore, min(book_room, budget - core), lambda p: cost(p.text))
    room = budget - core - lore_cost(constant)  # for laid lore, examples and history
    keyed = {piece.index: piece for piece in pieces.lore}
    depth = scan_depth(pieces.book) if pieces.book else 0

    def fired_at(index: int, among: Collection[int]) -> list[LorePiece]:
        if pieces.book is None or not among:
            return []
        fired = triggered_entries(pieces.book, chat[max(0, index + 1 - depth) : index + 1], among)
        return [keyed[i] for i, _ in fired]

    def lay(index: int, history: int, with_examples: bool) -> Laying:
        current = sum(costs[turn_starts[turn_of[index]] : index + 1])
        lore_room = min(book_room - lore_cost(constant), room - current)
        fired = fired_at(index, keyed)
        lore = by_priority(fired, lore_room, lambda p: cost(p.text))
        left_out = {p.index for p in fired} - {p.index for p in lore}
        left = room - lore_cost(lore)
        examples = _examples_within(pieces.examples, left - history, cost, header) if with_examples else []
        return Laying(at=index, lore=lore, left_out=left_out, examples=examples, room=left - examples_cost(examples))

    def anchor_from(replayed: int, end: int) -> Callable[[int, Laying, list[Anchored]], list[Anchored]]:
        """`anchor` for the messages replayed from `replayed` to `end` (only their keys are indexed: the next
        turn's replay from a kept state reads two messages, not the conversation)."""
        keys = KeyIndex(pieces.book, [m.content for m in chat[replayed:end]]) if pieces.book else None

        def anchor(index: int, laying: Laying, anchored: list[Anchored]) -> list[Anchored]:
            placed = {p.index for p in laying.lore} | laying.left_out | {a.piece.index for a in anchored}
            new = {
                i for i in keyed.keys() - placed if keys is not None and index - replayed in keys.messages_holding(i)
            }
            if not new:
                return anchored
            book_left = book_room
            if pieces.lore_budget is not None:
                book_left -= lore_cost(constant) + lore_cost(laying.lore) + lore_cost(a.piece for a in anchored)
            added = []
            for piece in by_priority(fired_at(index, new), book_left, lambda p: cost(p.text)):
                added.append(Anchored(piece=piece, before=index + 1 - piece.depth, tokens=message_cost(piece.text)))
            return [*anchored, *added]

        return anchor

    first = next((i for i, m in enumerate(chat) if m.role == "user"), len(chat) - 1)
    # Everything `lay`, `anchor` and the walk read besides the messages and the keyed entries: a kept replay is
    # reused only under equal rules. The entries' place in insertion order (`order`) comes from the book.
    rules = (
        first,
        low_water,
        room,
        book_room,
        lore_cost(constant),
        pieces.lore_budget,
        header,
        tuple((block, cost(block)) for block in pieces.examples),
        pieces.book.model_dump_json() if pieces.book else None,
    )
    lore_terms: dict[int, Hashable] = {
        p.index: (p.label, p.text, p.before_character, p.priority, p.depth, cost(p.text)) for p in pieces.lore
    }

    def replay(begin: Walk, end: int) -> Walk:
        return window_walk(costs, turn_of, first, lay, anchor_from(begin.replayed, end), low_water, begin, end)

    messages = [(m.role, c, m.content) for m, c in zip(chat, costs, strict=True)]
    walk = replays.walk(rules, lore_terms, messages, replay)
    assert walk.laying is not None  # `first` is a message of the chat
    start, examples = walk.start, list(walk.laying.examples)
    # A kept replay's pieces may come from an earlier job, whose `order`s count fewer entries: this job's own.
    laid = [keyed[p.index] for p in walk.laying.lore]
    anchored = [a.model_copy(update={"piece": keyed[a.piece.index]}) for a in walk.anchored]

    # Only when one turn outgrows the room (or the lore laid leaves it none) is more given up, in this order.
    used = core + lore_cost(constant) + lore_cost(laid) + examples_cost(examples) + sum(turn_costs[start:])
    used += sum(a.tokens for a in anchored)
    while used > budget and start < len(grouped) - 1:
        used -= turn_costs[start]
        start += 1
    if used > budget and examples:
        used -= examples_cost(examples)
        examples = []
    while used > budget and anchored:
        lowest = min(anchored, key=lambda a: (a.piece.priority, -a.piece.order))
        anchored = [a for a in anchored if a is not lowest]
        used -= lowest.tokens
    for lore in (laid, constant):
        while used > budget and lore:
            lowest_laid = min(lore, key=lambda p: (p.priority, -p.order))
            lore.remove(lowest_laid)
            used -= cost(lowest_laid.text)

    kept_from = turn_starts[start]
    prefix_lore = sorted([*constant, *laid], key=lambda p: p.order)
    at_depth = [(a.piece, max(0, a.before - kept_from)) for a in anchored]
    notes_at = [max(0, before - kept_from) for before, by in pieces.author_note_places if by >= kept_from]
    messages, insertions = _laid_out(pieces, prefix_lore, examples, chat[kept_from:], at_depth, notes_at)
    inserted = sorted([*prefix_lore, *(a.piece for a in anchored)], key=lambda p: p.order)
    fired = {p.index for p in [*fired_at(walk.laying.at, keyed), *fired_at(len(chat) - 1, keyed)]}
    wanted = fired | {p.index for p in pieces.constant_lore}
    window = Window(
        first_message=pieces.chat_indices[kept_from],
        laid_at=pieces.chat_indices[walk.laying.at],
        high_water=walk.laying.room,
        low_water=int(low_water * walk.laying.room),
    )
    memory = None
    if pieces.memory is not None:
        used -= reserved - memory_tokens
        memory = MemoryBlock(
            text=pieces.memory_text,
            tokens=memory_tokens,
            reserved=reserved,
            covers=pieces.memory.covers,
            facts=len(pieces.memory.facts),
            summarize_until=window.first_message if window.first_message > pieces.memory.covers else None,
        )
    return BuiltContext(
        messages=messages,
        prompt_tokens=used,
        budget=budget,
        lorebook=[p.label for p in inserted],
        dropped=Dropped(
            history_messages=kept_from,
            examples=len(pieces.examples) - len(examples),
            lorebook_entries=len(wanted - {p.index for p in inserted}),
        ),
        stop=pieces.stop,
        insertions=insertions,
        window=window,
        memory=memory,
    )


def _laid_out(
    pieces: ContextPieces,
    prefix_lore: list[LorePiece],
    examples: list[str],
    history: list[Message],
    at_depth: list[tuple[LorePiece, int]],
    author_notes: list[int],
) -> tuple[list[Message], list[Insertion]]:
    """The messages in order, and where each lorebook entry and note went. `at_depth`: entries with the
    place in `history` they go before; `author_notes`: the places of the author's note's copies; notes go
    their depth from its end."""
    insertions = [Insertion(kind="lorebook", label=p.label, message=0) for p in prefix_lore]
    at: dict[int, list[Note | LorePiece]] = {}  # by the place in the history they go before
    for piece, position in at_depth:
        at.setdefault(min(position, len(history)), []).append(piece)
    for position in author_notes:
        at.setdefault(min(position, len(history)), []).append(Note(kind="author_note", text=pieces.author_note))
    for note in pieces.notes:
        at.setdefault(max(0, len(history) - note.depth), []).append(note)
    messages = [Message(role="system", content=_system_text(pieces, prefix_lore, examples))]
    for position in range(len(history) + 1):
        for piece in at.get(position, []):
            kind, label = ("lorebook", piece.label) if isinstance(piece, LorePiece) else (piece.kind, piece.kind)
            depth = len(history) - position
            insertions.append(Insertion(kind=kind, label=label, message=len(messages), depth=depth))
            messages.append(Message(role="system", content=piece.text))
        if position < len(history):
            messages.append(history[position])
    for note in [*pieces.after_history, *pieces.reminders]:
        insertions.append(Insertion(kind=note.kind, label=note.kind, message=len(messages), depth=0))
        messages.append(Message(role="system", content=note.text))
    return messages, insertions


class TextsCounter(Protocol):
    """A tokenizer at the edge (engine endpoint, local vocabulary): counts for many texts at once."""

    async def count_many(self, texts: list[str]) -> dict[str, int]: ...


async def budgeted_context(
    job: ChatJob,
    character: Character | None,
    limits: EngineLimits,
    counter: TextsCounter,
    budget_share: float = 1.0,
    reminders: Iterable[Reminder] = (),
    scene: GroupScene | None = None,
    user_emotion: Emotion | None = None,
) -> BuiltContext:
    """The job's context within the engine's budget (times `budget_share`), every piece counted once.

    The lorebook scans and the assembly run in a thread: with a thousand entries and a long history they would
    stall the event loop that the worker's other jobs share."""
    pieces = await asyncio.to_thread(context_pieces, job, character, reminders, scene, user_emotion)
    counts = await counter.count_many(pieces.texts())
    budget = budget_beside(limits, max_tokens_for(job.job_type, job.sampling, job.mode))
    return await asyncio.to_thread(
        assemble,
        pieces,
        budget=int(budget * budget_share),
        count=counts.__getitem__,
        low_water=limits.low_water,
    )


def build_context(
    job: ChatJob,
    character: Character | None,
    *,
    budget: int,
    count: TokenCounter,
    low_water: float = DEFAULT_LOW_WATER,
    reminders: Iterable[Reminder] = (),
    scene: GroupScene | None = None,
    user_emotion: Emotion | None = None,
) -> BuiltContext:
    return assemble(
        context_pieces(job, character, reminders, scene, user_emotion),
        budget=budget,
        count=count,
        low_water=low_water,
    )
