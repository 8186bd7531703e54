"""Context building: the messages the engine sees for a job, within a token budget. Pure given a token
counter: `context_pieces` cuts the job into the parts that may go in, `assemble` keeps what fits.

Always kept: the system message (job type prompt, or the card's own `system_prompt` with `{{original}}`
standing for the replaced one; the character, the user's persona, the scenario), the newest turn and
`post_history_instructions`. Then, while they fit: triggered lorebook entries (by priority, within the
book's token budget), history in whole turns from newest to oldest, example dialogue. The system message
always comes first: Qwen's template otherwise inserts its own "You are Qwen…"."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel

from characters import ASSISTANT_NAME, Character, fill_macros, scenario_text
from workflows.lorebook import entry_label, triggered_entries
from workflows.models import BuiltContext, ChatJob, Dropped, EngineLimits, JobType, Message
from workflows.prompts import system_prompt
from workflows.sampling import max_tokens_for

# Tokens a chat template adds around each message (ChatML: <|im_start|>role\n … <|im_end|>\n), and once for
# the assistant's turn that generation starts.
MESSAGE_OVERHEAD = 5
REPLY_PRIMER = 3
CONTINUE_INSTRUCTION = (
    "Continue your last message from exactly where it stopped. Do not repeat any of it and do not start a new message."
)

EXAMPLES_HEADER = "Example dialogue:"

TokenCounter = Callable[[str], int]


class ContextTooLarge(ValueError):
    """The parts that must always go in do not fit the budget on their own."""


def estimate_tokens(text: str) -> int:
    """A documented stand-in for a tokenizer: about 3.5 characters per token for English prose (BPE
    tokenizers such as Qwen's and SmolLM's), rounded up. Used by tests and the offline `context` command."""
    return math.ceil(len(text) / 3.5)


def token_budget(max_input_tokens: int, max_total_tokens: int, max_tokens: int, margin: int) -> int:
    return min(max_input_tokens, max_total_tokens - max_tokens) - margin


class LorePiece(BaseModel):
    label: str
    text: str
    before_character: bool
    priority: float


class ContextPieces(BaseModel):
    """Everything that may go into the context, macros filled, before the budget decides."""

    prompt: str
    character: str
    persona: str
    scenario: str
    lore: list[LorePiece]
    lore_budget: int | None
    examples: list[str]
    older_turns: list[list[Message]]  # oldest first
    newest_turn: list[Message]
    after_history: list[str]  # post-history instructions, then the continue instruction

    def texts(self) -> list[str]:
        """Every text `assemble` may count."""
        return [
            self.prompt,
            self.character,
            self.persona,
            self.scenario,
            EXAMPLES_HEADER,
            *(p.text for p in self.lore),
            *self.examples,
            *(m.content for turn in [*self.older_turns, self.newest_turn] for m in turn),
            *self.after_history,
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


def context_pieces(job: ChatJob, character: Character | None) -> ContextPieces:
    name, user = char_name(character), job.user_name

    def filled(text: str) -> str:
        return fill_macros(text, char=name, user=user).strip()

    default_prompt = system_prompt(job.job_type)
    roleplay = job.job_type is JobType.roleplay and character is not None
    prompt = default_prompt
    if roleplay and character.system_prompt:
        prompt = character.system_prompt.replace("{{original}}", default_prompt)
    job_system = [m.content for m in job.messages if m.role == "system"]
    prompt = "\n\n".join([prompt, *job_system])

    scenario = scenario_text(character, job.scenario) if roleplay else job.scenario or ""
    chat = [m for m in job.messages if m.role != "system"]
    conversation = turns(chat)
    book = character.character_book if roleplay else None
    lore = [
        LorePiece(
            label=entry_label(entry, index),
            text=filled(entry.content),
            before_character=entry.position == "before_char",
            priority=entry.priority if entry.priority is not None else 100,
        )
        for index, entry in (triggered_entries(book, chat) if book else [])
        if entry.content.strip()
    ]
    after_history = []
    if roleplay and character.post_history_instructions:
        after_history.append(filled(character.post_history_instructions.replace("{{original}}", "")))
    if job.mode == "continue":
        after_history.append(CONTINUE_INSTRUCTION)
    return ContextPieces(
        prompt=filled(prompt),
        character=filled(character_sheet(character)) if roleplay else "",
        persona=filled(f"{user} (the user): {job.user_description}") if job.user_description else "",
        scenario=filled(f"Scenario: {scenario}") if scenario else "",
        lore=lore,
        lore_budget=book.token_budget if book else None,
        examples=[filled(block) for block in split_examples(character.mes_example)] if roleplay else [],
        older_turns=conversation[:-1],
        newest_turn=[Message(role=m.role, content=m.content) for m in conversation[-1]],
        after_history=[text for text in after_history if text],
    )


def stop_sequences(user_name: str) -> list[str]:
    names = dict.fromkeys([user_name, "User"])
    return [f"\n{name}:" for name in names]  # an engine's own limit is applied where the request is sent


def _system_text(pieces: ContextPieces, lore: list[LorePiece], examples: list[str]) -> str:
    parts = [
        pieces.prompt,
        *(p.text for p in lore if p.before_character),
        pieces.character,
        *(p.text for p in lore if not p.before_character),
        pieces.persona,
        pieces.scenario,
    ]
    if examples:
        parts.append(f"{EXAMPLES_HEADER}\n" + "\n\n".join(examples))
    return "\n\n".join(part for part in parts if part)


def assemble(pieces: ContextPieces, *, user_name: str, budget: int, count: TokenCounter) -> BuiltContext:
    def cost(text: str) -> int:
        return count(text) + 1 if text else 0  # +1: the blank line joining parts

    def turn_cost(turn: list[Message]) -> int:
        return sum(count(m.content) + MESSAGE_OVERHEAD for m in turn)

    fixed = (
        MESSAGE_OVERHEAD
        + REPLY_PRIMER
        + sum(cost(t) for t in (pieces.prompt, pieces.character, pieces.persona, pieces.scenario))
        + turn_cost(pieces.newest_turn)
        + sum(count(t) + MESSAGE_OVERHEAD for t in pieces.after_history)
    )
    if fixed > budget:
        raise ContextTooLarge(
            f"context_too_large: the system prompt, character, persona, scenario and newest message need "
            f"{fixed} tokens; the budget is {budget}"
        )
    used = fixed

    chosen: set[int] = set()
    lore_used = 0
    for index in sorted(range(len(pieces.lore)), key=lambda i: -pieces.lore[i].priority):
        price = cost(pieces.lore[index].text)
        within_book = pieces.lore_budget is None or lore_used + price <= pieces.lore_budget
        if within_book and used + price <= budget:
            chosen.add(index)
            lore_used += price
            used += price
    lore = [piece for index, piece in enumerate(pieces.lore) if index in chosen]  # insertion order

    kept: list[list[Message]] = []
    for turn in reversed(pieces.older_turns):
        price = turn_cost(turn)
        if used + price > budget:
            break
        kept.insert(0, turn)
        used += price

    examples: list[str] = []
    header = count(EXAMPLES_HEADER) + 1
    for block in pieces.examples:
        price = cost(block) + (header if not examples else 0)
        if used + price > budget:
            break
        examples.append(block)
        used += price

    history = [m for turn in [*kept, pieces.newest_turn] for m in turn]
    messages = [
        Message(role="system", content=_system_text(pieces, lore, examples)),
        *history,
        *(Message(role="system", content=text) for text in pieces.after_history),
    ]
    return BuiltContext(
        messages=messages,
        prompt_tokens=used,
        budget=budget,
        lorebook=[p.label for p in lore],
        dropped=Dropped(
            history_messages=sum(len(t) for t in pieces.older_turns) - sum(len(t) for t in kept),
            examples=len(pieces.examples) - len(examples),
            lorebook_entries=len(pieces.lore) - len(lore),
        ),
        stop=stop_sequences(user_name),
    )


class TextsCounter(Protocol):
    """A tokenizer at the edge (engine endpoint, local vocabulary): counts for many texts at once."""

    async def count_many(self, texts: list[str]) -> dict[str, int]: ...


async def budgeted_context(
    job: ChatJob, character: Character | None, limits: EngineLimits, counter: TextsCounter, budget_share: float = 1.0
) -> BuiltContext:
    """The job's context within the engine's budget (times `budget_share`), every piece counted once.

    The lorebook scan and the assembly run in a thread: with a thousand entries and a long history they would
    stall the event loop that the worker's other jobs share."""
    pieces = await asyncio.to_thread(context_pieces, job, character)
    counts = await counter.count_many(pieces.texts())
    budget = token_budget(
        limits.max_input_tokens,
        limits.max_total_tokens,
        max_tokens_for(job.job_type, job.sampling),
        limits.margin_tokens,
    )
    return await asyncio.to_thread(
        assemble, pieces, user_name=job.user_name, budget=int(budget * budget_share), count=counts.__getitem__
    )


def build_context(job: ChatJob, character: Character | None, *, budget: int, count: TokenCounter) -> BuiltContext:
    return assemble(context_pieces(job, character), user_name=job.user_name, budget=budget, count=count)
