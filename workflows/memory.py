"""Story memory: the summary step's prompt (the previous summary merged with the messages the window dropped),
and the memory a passed summary makes. Pure given a token counter.

The summary covers a prefix of the job's messages (`Memory.covers`). A step summarises the messages from there
up to `until` (where the window starts, or the end of the conversation for chat_summarize), as many of them,
oldest first, as fit the engine's budget beside the previous summary; the new `covers` says how far it got, so
a conversation longer than one prompt is summarised over several steps."""

from __future__ import annotations

from characters import Character, fill_macros
from workflows.context import MESSAGE_OVERHEAD, REPLY_PRIMER, TokenCounter, budget_beside, char_name
from workflows.models import (
    SUMMARY_MAX_TOKENS,
    ChatJob,
    EngineLimits,
    JobType,
    Memory,
    Message,
    SummaryPrompt,
)
from workflows.prompts import system_prompt

PREVIOUS_HEADER = "The summary so far:"
NOTHING_YET = "(nothing yet: this is the start of the story)"
NEXT_HEADER = "The messages that came next:"
REQUEST = "Write the updated summary of the whole story, in the third person and the past tense."
# A message too long to fit on its own is cut to this many characters per token of room left.
CHARS_PER_TOKEN = 3


def transcript_lines(job: ChatJob, character: Character | None, start: int, until: int) -> list[tuple[int, str]]:
    """Each chat message in `messages[start:until]` as a labelled line, with its index (system messages are the
    job's instructions, not the story)."""
    names = {"user": job.user_name, "assistant": char_name(character)}
    return [
        (index, f"{names[message.role]}: {message.content.strip()}")
        for index, message in enumerate(job.messages[start:until], start=start)
        if message.role != "system"
    ]


def summary_texts(job: ChatJob, character: Character | None, memory: Memory, until: int) -> list[str]:
    """Every text `summary_prompt` may count."""
    return [
        summary_instruction(job, character),
        previous_summary(memory),
        NEXT_HEADER,
        REQUEST,
        *(line for _, line in transcript_lines(job, character, memory.covers, until)),
    ]


def summary_instruction(job: ChatJob, character: Character | None) -> str:
    return fill_macros(system_prompt(JobType.summarize), char=char_name(character), user=job.user_name).strip()


def previous_summary(memory: Memory) -> str:
    return f"{PREVIOUS_HEADER}\n{memory.summary.strip() or NOTHING_YET}"


def summary_budget(limits: EngineLimits) -> int:
    return budget_beside(limits, SUMMARY_MAX_TOKENS)


def summary_prompt(
    job: ChatJob, character: Character | None, memory: Memory, until: int, *, budget: int, count: TokenCounter
) -> SummaryPrompt:
    """The summary step's messages: the instruction, then the previous summary and the next messages that fit
    `budget` (at least one, cut to fit when it alone does not), then the request."""
    instruction, previous = summary_instruction(job, character), previous_summary(memory)
    used = 2 * MESSAGE_OVERHEAD + REPLY_PRIMER + count(instruction) + count(previous) + count(REQUEST) + 2
    used += count(NEXT_HEADER) + 1
    kept: list[str] = []
    covers = memory.covers
    for index, line in transcript_lines(job, character, memory.covers, until):
        price = count(line) + 1
        if used + price > budget:
            if not kept:  # one message longer than the room: its beginning stands for it
                kept.append(line[: max(0, budget - used) * CHARS_PER_TOKEN])
                used = budget
                covers = index + 1
            break
        kept.append(line)
        used += price
        covers = index + 1
    else:
        covers = until  # system messages at the end of the range are covered too
    body = "\n\n".join([previous, NEXT_HEADER + "\n" + "\n".join(kept), REQUEST])
    return SummaryPrompt(
        messages=[Message(role="system", content=instruction), Message(role="user", content=body)],
        covers=covers,
        prompt_tokens=used,
        stop=summary_stops(job, character),
    )


def summary_stops(job: ChatJob, character: Character | None) -> list[str]:
    """Where a summary turns into the transcript's next line (small models continue the chat): a speaker's
    label of the character's or the user's."""
    names = list(dict.fromkeys([char_name(character), job.user_name]))
    return [*(f"\n{name}:" for name in names), *(f"\n**{name}" for name in names)]


def merged_memory(memory: Memory, summary: str, covers: int) -> Memory:
    """The memory after a passed summary: its facts stay pinned."""
    return Memory(summary=summary, facts=memory.facts, covers=covers)
