"""Benchmark 5: building one job's context — a long conversation with a lorebook — with the workflow's own pure
functions (`context_pieces`, `assemble`) and a real token counter: the local GGUF's vocabulary (what the
worker counts with on the embedded stack) and the estimate. No servers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from bench.stats import Spread, median, spread
from characters import Character, bundled_character
from characters.profile import BookEntry, CharacterBook
from orchestrator.tokens import CachedCounter, GgufCounter
from workflows.context import ReplayCache, assemble, context_pieces, token_budget
from workflows.models import BuiltContext, ChatJob, JobType, Message
from workflows.sampling import max_tokens_for

PLACES = [
    "Saltmere", "the Drowned Lantern", "Gull Rock", "the Tidewall", "Harrow Quay", "the Brine Market",
    "Kelp Street", "the Old Lighthouse", "Fenwick's Yard", "the Smugglers' Stair", "Widow's Point",
    "the Copper Bell", "Netmender's Row", "the Custom House", "Blackwater Inlet", "the Chapel of Storms",
    "Gannet Hill", "the Rope Walk", "Driftwood Lane", "the Harbourmaster's Tower",
]  # fmt: skip
PEOPLE = [
    "Captain Orrin", "old Hesk", "Tally the cooper", "Sister Maud", "the harbourmaster", "Brannock",
    "Lise the net-mender", "young Pip", "Madame Corvel", "the excise man", "Dunstan", "Wren",
    "the lamplighter", "Hollis", "Agathe", "the ferryman", "Rook", "Merrit", "the twins", "Fennel",
]  # fmt: skip
VERBS = ["heard about", "asked after", "walked past", "argued with", "remembered", "bargained with", "spied on"]


def lorebook() -> CharacterBook:
    """One entry per place and person (keyed on its name), two always-on entries, and a token budget that
    not every triggered entry fits in."""
    entries = [
        BookEntry(
            keys=[name],
            content=f"{name}: a fixture of Saltmere whom everyone in the taproom has an opinion about; "
            f"{{{{char}}}} knows its history, its debts and who to ask when something there goes wrong.",
            insertion_order=index,
            priority=index % 7,
            id=index,
        )
        for index, name in enumerate(PLACES + PEOPLE)
    ]
    entries += [
        BookEntry(content="Saltmere lives off fishing and quiet smuggling; the excise man is paid to look away.",
                  constant=True, id=100),
        BookEntry(content="Storm season: the harbour chain is raised at dusk and no boat leaves before dawn.",
                  constant=True, id=101),
    ]  # fmt: skip
    return CharacterBook(name="Saltmere", scan_depth=4, token_budget=400, entries=entries)


def conversation(turns: int, seed: int = 7) -> list[Message]:
    """`turns` user/assistant exchanges of varied text naming places and people, ending on the user's."""
    rng = random.Random(seed)
    messages: list[Message] = []
    for turn in range(turns):
        place, person, verb = rng.choice(PLACES), rng.choice(PEOPLE), rng.choice(VERBS)
        messages.append(
            Message(role="user", content=f"*leans on the bar* I {verb} {person} near {place} today. Turn {turn}.")
        )
        if turn < turns - 1:
            other = rng.choice(PLACES)
            messages.append(
                Message(
                    role="assistant",
                    content=f"*Mira snorts and sets down a mug.* {person}? Stay clear of {place} after dark, love. "
                    f"Last storm season they found a skiff upturned by {other}, and nobody has said whose it was. "
                    f"*She wipes the same spot on the bar twice.* Ask me again when the taproom is empty. "
                    f"({rng.randint(1000, 9999)})",
                )
            )
    return messages


def benchmark_job(turns: int) -> tuple[ChatJob, Character]:
    character = bundled_character("Mira").model_copy(update={"character_book": lorebook()})
    job = ChatJob(
        job_id="bench-context",
        job_type=JobType.roleplay,
        messages=conversation(turns),
        character=character,
        user_name="Tam",
    )
    return job, character


class CounterTimings(BaseModel):
    cold_ms: float  # per job, median: nothing cached (a worker's first job of this conversation)
    # per job, median: the previous turn's job built just before, its texts counted and its window replayed
    # (the next turn of the same conversation)
    warm_ms: float
    tokens_counted: int  # per job: every text that may go in
    tokens_per_second: float  # counting with nothing cached
    prompt_tokens: int  # what went in
    kept_messages: int
    lorebook_entries: int
    cold: Spread | None = None  # per job, over the repeats
    warm: Spread | None = None


class ContextResult(BaseModel):
    turns: int
    messages: int
    lore_entries: int
    budget: int
    repeats: int
    counters: dict[str, CounterTimings]  # by counter name


async def built_context(
    job: ChatJob, character: Character, budget: int, counter: CachedCounter, replays: ReplayCache
) -> tuple[BuiltContext, float]:
    """The job's context as `budgeted_context` builds it, and the seconds spent counting."""
    pieces = context_pieces(job, character)
    before_counting = time.perf_counter()
    counts = await counter.count_many(pieces.texts())
    counting = time.perf_counter() - before_counting
    built = assemble(pieces, budget=budget, count=counts.__getitem__, replays=replays)
    return built, counting


async def timed_counter(
    job: ChatJob, character: Character, budget: int, new_counter: Callable[[], CachedCounter], repeats: int
) -> CounterTimings:
    previous_turn = job.model_copy(update={"messages": job.messages[:-2]})
    cold, warm, counting = [], [], []
    for _ in range(repeats):
        # Outside the timing: a worker loads its tokenizer once, at start.
        counter, replays = new_counter(), ReplayCache()
        started = time.perf_counter()
        built, counted = await built_context(job, character, budget, counter, replays)
        cold.append(time.perf_counter() - started)
        counting.append(counted)
        counter, replays = new_counter(), ReplayCache()
        await built_context(previous_turn, character, budget, counter, replays)
        started = time.perf_counter()
        await built_context(job, character, budget, counter, replays)
        warm.append(time.perf_counter() - started)
    tokens = sum((await counter.count_many(context_pieces(job, character).texts())).values())
    return CounterTimings(
        cold_ms=median(cold) * 1000,
        warm_ms=median(warm) * 1000,
        tokens_counted=tokens,
        tokens_per_second=tokens / median(counting),
        prompt_tokens=built.prompt_tokens,
        kept_messages=len(built.messages),
        lorebook_entries=len(built.lorebook),
        cold=spread([seconds * 1000 for seconds in cold]),
        warm=spread([seconds * 1000 for seconds in warm]),
    )


async def measure_context(
    turns: int,
    repeats: int,
    gguf: Path | None,
    max_input_tokens: int,
    max_total_tokens: int,
    margin: int,
    progress: Callable[[str], None],
) -> ContextResult:
    job, character = benchmark_job(turns)
    budget = token_budget(max_input_tokens, max_total_tokens, max_tokens_for(job.job_type, job.sampling), margin)
    # gguf: the local model's vocabulary; estimate: 3.5 characters per token.
    counters: list[tuple[str, Callable[[], CachedCounter]]] = [("estimate", CachedCounter)]
    if gguf is not None:
        counters.insert(0, ("gguf", lambda: GgufCounter(gguf)))
    else:
        progress("context: no local GGUF installed; timing the estimate only")
    results = {}
    for name, new_counter in counters:
        progress(f"context: {turns} turns, {repeats} repeats, {name} counter")
        results[name] = await timed_counter(job, character, budget, new_counter, repeats)
    return ContextResult(
        turns=turns,
        messages=len(job.messages),
        lore_entries=len(lorebook().entries),
        budget=budget,
        repeats=repeats,
        counters=results,
    )
