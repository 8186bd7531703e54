"""Time to first token of the next turn of a long chat against a fresh short chat, on the local engine through
the real workflow: `python -m bench.long_chat` (and a row of `python -m bench`).

A throwaway stack (the same `DevStack` as `make dev`: llama.cpp with its prompt cache, one thread, a context
for the budget) and the real worker with one attempt per job. The long chat is the prefix-reuse benchmark's
roleplay (Mira with a 42-entry lorebook) from the first turn whose history no longer fits the budget (that
job primes the engine and is not measured); then, for each of `turns` turns, a fresh short chat (a greeting
and one message, under a user name of its own, so its system message is new to the engine) and the long
chat's next turn, one after the other. Each time is the workflow's own (`ChatResult.timings.first_token_ms`:
the request sent to the engine until its first token). Turns at a sawtooth drop lay the prompt anew and are
counted apart."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from bench.prefix_reuse import bench_character, engine_limits, roleplay
from bench.stats import median, percentile
from characters import Character
from orchestrator.client import ChatClient, connect
from orchestrator.devstack import DevStack, settings_on_free_ports
from orchestrator.tokens import offline_counter
from orchestrator.worker import workers_running
from workflows.context import TextsCounter, budgeted_context
from workflows.models import ChatJob, ChatResult, JobType, Message

MARGIN = 32
MAX_TOKENS = 16  # the time to the first token is what is measured
DEADLINE_SECONDS = 600  # a cold 4,096-token prompt on one shared CPU thread takes minutes


class LongChatResult(BaseModel):
    budget: int
    turns: int  # long-chat turns measured (and as many short chats)
    first_turn: int  # the long chat's first job past the budget (the one that primes the engine)
    drops: int  # measured turns at a sawtooth drop (the prompt laid anew)
    long_p50_ms: float  # the long chat's next turn, turns between drops
    long_p10_ms: float
    long_p90_ms: float
    drop_p50_ms: float | None  # turns at a drop
    short_p50_ms: float  # a fresh short chat
    short_p10_ms: float
    short_p90_ms: float
    ratio: float  # long p50 / short p50
    long_prompt_tokens: float  # mean
    short_prompt_tokens: float  # mean


def roleplay_job(character: Character, messages: list[Message], user: str) -> ChatJob:
    return ChatJob(
        job_id=f"bench-long-{uuid.uuid4().hex[:12]}",
        job_type=JobType.roleplay,
        messages=messages,
        character=character,
        user_name=user,
        sampling={"max_tokens": MAX_TOKENS, "seed": 7},  # type: ignore[arg-type]
        deadline_seconds=DEADLINE_SECONDS,
    )


async def first_kept(budget: int, character: Character, messages: list[Message], counter: TextsCounter) -> int:
    """Where the job's window starts: the index of the first history message kept (the `context` command's
    view, which is the worker's `prepare`'s: the same pure function, the same GGUF counting)."""
    job = roleplay_job(character, messages, "Tam")
    built = await budgeted_context(job, character, engine_limits(budget, JobType.roleplay, None), counter)
    assert built.window is not None
    return built.window.first_message


async def first_turn_past(budget: int, character: Character, messages: list[Message], counter: TextsCounter) -> int:
    """The first turn whose context drops history."""
    turn = 0
    while await first_kept(budget, character, messages[: 2 * turn + 2], counter) == 0:
        turn += 1
    return turn


async def timed(chat: ChatClient, job: ChatJob) -> ChatResult:
    await chat.submit(job)
    return await chat.result(job.job_id)


async def measure_long_chat(budget: int, turns: int, progress: Callable[[str], None]) -> LongChatResult:
    character = bench_character(None)
    messages = roleplay(character, "Tam", turns=400)
    with tempfile.TemporaryDirectory(prefix="chat-worker-long-chat-") as state:
        settings = settings_on_free_ports(
            Path(state),
            local_threads=1,
            max_input_tokens=budget + MARGIN,
            max_total_tokens=budget + MARGIN + 512,
            max_attempts=1,
            inference_timeout_seconds=DEADLINE_SECONDS,
            job_deadline_seconds=DEADLINE_SECONDS,
            task_queue="bench-long-chat",
        )
        counter = offline_counter(settings)
        first = await first_turn_past(budget, character, messages, counter)
        progress(f"long chat: budget {budget}, history over budget from turn {first}; {turns} turns")
        with DevStack(settings, progress=progress):
            client = await connect(settings)
            chat = ChatClient(client, settings)
            async with workers_running(client, settings):
                await timed(chat, roleplay_job(character, messages[: 2 * first + 2], "Tam"))  # primes the engine
                long, drops, short, long_tokens, short_tokens = [], [], [], [], []
                start = await first_kept(budget, character, messages[: 2 * first + 2], counter)
                for turn in range(first + 1, first + turns + 1):
                    guest = f"Guest{turn}"
                    fresh = await timed(chat, roleplay_job(character, messages[:2], guest))
                    result = await timed(chat, roleplay_job(character, messages[: 2 * turn + 2], "Tam"))
                    window = await first_kept(budget, character, messages[: 2 * turn + 2], counter)
                    dropped = window != start
                    start = window
                    if fresh.timings.first_token_ms is None or result.timings.first_token_ms is None:
                        raise RuntimeError("a generation streamed no token")
                    short.append(fresh.timings.first_token_ms)
                    short_tokens.append(fresh.prompt_tokens)
                    (drops if dropped else long).append(result.timings.first_token_ms)
                    long_tokens.append(result.prompt_tokens)
                    progress(
                        f"long chat turn {turn}: {result.timings.first_token_ms:,.0f} ms"
                        f"{' (drop)' if dropped else ''}; short chat {fresh.timings.first_token_ms:,.0f} ms"
                    )
    if not long:
        raise RuntimeError("every measured turn was a drop: measure more turns")
    return LongChatResult(
        budget=budget,
        turns=turns,
        first_turn=first,
        drops=len(drops),
        long_p50_ms=median(long),
        long_p10_ms=percentile(long, 0.1),
        long_p90_ms=percentile(long, 0.9),
        drop_p50_ms=median(drops) if drops else None,
        short_p50_ms=median(short),
        short_p10_ms=percentile(short, 0.1),
        short_p90_ms=percentile(short, 0.9),
        ratio=median(long) / median(short),
        long_prompt_tokens=sum(long_tokens) / len(long_tokens),
        short_prompt_tokens=sum(short_tokens) / len(short_tokens),
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m bench.long_chat", description=__doc__)
    root.add_argument("--turns", type=int, default=10, help="long-chat turns measured, each after a short chat")
    root.add_argument("--budget", type=int, default=4096, help="the context's token budget (default 4096)")
    return root


def main() -> int:
    args = parser().parse_args()
    result = asyncio.run(
        measure_long_chat(args.budget, args.turns, lambda line: print(line, file=sys.stderr, flush=True))
    )
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
