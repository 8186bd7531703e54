"""`python -m bench` (`make bench`): every benchmark in one run on a throwaway dev stack, a table on stdout,
the run as JSON in bench/results/, progress on stderr."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from loguru import logger
from pydantic import BaseModel
from temporalio.client import Client

from bench.capacity import CapacityResult, measure_capacity
from bench.context_build import measure_context
from bench.long_chat import measure_long_chat
from bench.machine import ROOT, this_machine
from bench.overhead import (
    Arms,
    FirstTokenResult,
    GrowthResult,
    OverheadResult,
    Processes,
    SubscribersResult,
    measure_first_token,
    measure_growth,
    measure_overhead,
    measure_subscribers,
)
from bench.prefix_reuse import measure_prefix_reuse
from bench.quality import PROMPT_COUNT, QualityResult, measure_quality
from bench.report import BenchConfig, BenchRun, checked, previous_run, table, write_run
from bench.standin import StandInProcess
from orchestrator.client import ChatClient, connect
from orchestrator.codec import new_key_line
from orchestrator.devstack import (
    DEV_SERVER_DYNAMIC_CONFIG,
    DEV_SERVER_WITHOUT_FAIRNESS,
    TEMPORAL_DEV_SERVER,
    DevStack,
    settings_on_free_ports,
)
from orchestrator.settings import Settings
from orchestrator.tokens import installed_gguf, offline_counter
from orchestrator.worker import engine_client, job_activities, settings_engine, workers_running

RESULTS = ROOT / "bench" / "results"
FULL = {
    "pairs": 20,
    "jobs": 1000,
    "context_repeats": 20,
    "first_token_pairs": 10,
    "growth_repeats": 3,
    "subscriber_repeats": 3,
    "long_chat_turns": 10,
}
QUICK = {
    "pairs": 5,
    "jobs": 200,
    "context_repeats": 5,
    "first_token_pairs": 4,
    "growth_repeats": 2,
    "subscriber_repeats": 2,
    "long_chat_turns": 3,
}
REPLY_LENGTHS = [100, 300]
SUBSCRIBERS = [0, 1, 3]
LONG_REPLY = 1000


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark chat-worker on a throwaway embedded stack (Temporal dev server and llama.cpp with "
        "SmolLM2, free ports, state in a temp dir) with the real worker (run as `dev` runs it: no payload keys "
        "unless --encrypt) and ChatClient: (1) what orchestration adds to a real generation, along the job's "
        "critical path, and what runs beside the generation, (2) time to first token at the backend, (3) each "
        "job's history by reply length, (4) capacity against an inference stand-in with a fixed delay, (5) how "
        "full its slots stay under a backlog, (6) a burst of jobs draining with none lost or duplicated, (7) "
        "context building for a long conversation, (8) how much of each prompt the next turn of a long chat "
        "reuses, (9) the time to first token of a long chat's next turn against a fresh short chat (a stack of "
        "its own), (10) each job's history and CPU with 0, 1 and 3 subscribers following its stream. "
        "Prints a table beside the previous run's values, with each figure's spread over its repeats "
        "in this run, and saves the run as JSON in bench/results/. A default run takes about 7 minutes on 2 "
        "quiet cores (10 at most), --quick about 3.",
    )
    root.add_argument(
        "--quick",
        action="store_true",
        help=f"a fast check: {QUICK['pairs']} pairs, {QUICK['jobs']} jobs, {QUICK['context_repeats']} context "
        f"repeats, {QUICK['first_token_pairs']} first-token pairs, {QUICK['growth_repeats']} jobs per reply length, "
        f"{QUICK['subscriber_repeats']} jobs per subscriber count (flags below still win)",
    )
    root.add_argument("--pairs", type=int, help=f"direct/workflow pairs on the real model (default {FULL['pairs']})")
    root.add_argument("--max-tokens", type=int, default=100, help="max_tokens of each real generation (default 100)")
    root.add_argument("--jobs", type=int, help=f"jobs in the burst against the stand-in (default {FULL['jobs']})")
    root.add_argument("--slots", type=int, default=8, help="the worker's generation slots (default 8, TGI's cap)")
    root.add_argument("--delay-ms", type=float, default=500.0, help="the stand-in's delay per request (default 500)")
    root.add_argument("--context-turns", type=int, default=200, help="turns of the context benchmark (default 200)")
    root.add_argument(
        "--context-repeats", type=int, help=f"repeats of the context benchmark (default {FULL['context_repeats']})"
    )
    root.add_argument(
        "--first-token-pairs",
        type=int,
        help=f"direct/stream pairs timing the first token (default {FULL['first_token_pairs']})",
    )
    root.add_argument(
        "--growth-repeats",
        type=int,
        help=f"jobs per reply length for the history's growth (default {FULL['growth_repeats']})",
    )
    root.add_argument(
        "--long-replies",
        action="store_true",
        help=f"also measure the history's growth at max_tokens {LONG_REPLY:,} (default: "
        f"{', '.join(map(str, REPLY_LENGTHS))}; about 20 s more per repeat on 2 cores)",
    )
    root.add_argument(
        "--subscribers",
        type=subscriber_counts,
        default=SUBSCRIBERS,
        help=f"subscriber counts to measure, comma-separated (default {','.join(map(str, SUBSCRIBERS))})",
    )
    root.add_argument(
        "--subscriber-repeats",
        type=int,
        help=f"jobs per subscriber count (default {FULL['subscriber_repeats']}; about 3 s each on 2 quiet cores)",
    )
    root.add_argument(
        "--long-chat-turns",
        type=int,
        help=f"turns of a long chat past its budget timed to the first token, each after a fresh short chat "
        f"(default {FULL['long_chat_turns']}; about 10 s each on 2 quiet cores)",
    )
    root.add_argument(
        "--long-chat-budget", type=int, default=4096, help="the long chat's context budget in tokens (default 4096)"
    )
    root.add_argument(
        "--quality",
        type=int,
        default=0,
        help="fixed roleplay prompts through the real workflow with validation and retries, at most 50 (default 0: "
        "the section is skipped; make bench runs all 50, a few minutes on a quiet 2-core machine)",
    )
    root.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt every payload with a throwaway key (CHAT_WORKER_PAYLOAD_KEYS_FILE), to measure the codec's cost",
    )
    root.add_argument(
        "--fairness",
        choices=["on", "off"],
        default="on",
        help="the Temporal dev server's fair matcher (matching.enableFairness), on as `dev` and compose run it; off: "
        "the priority-aware matcher alone, to measure the fair matcher's cost (default on)",
    )
    root.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="where runs are saved and the previous one is read"
    )
    return root


def subscriber_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated counts: {text!r}") from None
    if any(count < 0 for count in counts):
        raise argparse.ArgumentTypeError(f"a subscriber count below 0: {text!r}")
    return counts


def config_from(args: argparse.Namespace, root: argparse.ArgumentParser) -> BenchConfig:
    defaults = QUICK if args.quick else FULL
    counts = {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in defaults.items()}
    wanted = [*counts.items(), ("slots", args.slots), ("max_tokens", args.max_tokens)]
    for key, value in [
        *wanted,
        ("context_turns", args.context_turns),
        ("delay_ms", args.delay_ms),
        ("long_chat_budget", args.long_chat_budget),
    ]:
        if value < 1:
            root.error(f"--{key.replace('_', '-')} must be at least 1 (got {value:g})")
    if not 0 <= args.quality <= PROMPT_COUNT:
        root.error(f"--quality must be 0-{PROMPT_COUNT} (got {args.quality})")
    return BenchConfig(
        quick=args.quick,
        max_tokens=args.max_tokens,
        slots=args.slots,
        delay_ms=args.delay_ms,
        context_turns=args.context_turns,
        long_chat_budget=args.long_chat_budget,
        encrypted=args.encrypt,
        fairness=args.fairness == "on",
        reply_lengths=[*REPLY_LENGTHS, LONG_REPLY] if args.long_replies else REPLY_LENGTHS,
        quality=args.quality,
        subscribers=args.subscribers,
        **counts,
    )


def progress_printer() -> Callable[[str], None]:
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", file=sys.stderr, flush=True)

    return progress


class StackResults(BaseModel):
    overhead: OverheadResult
    first_token: FirstTokenResult
    growth: GrowthResult
    subscribers: SubscribersResult
    capacity: CapacityResult
    quality: QualityResult | None = None


async def stack_benchmarks(
    stack: DevStack, settings: Settings, config: BenchConfig, progress: Callable[[str], None]
) -> StackResults:
    client = await connect(settings)
    run_id = f"bench{int(time.time())}"

    # One attempt per job: validation retries off, so both paths make exactly one generation.
    model = settings.model_copy(update={"task_queue": "bench-model", "max_attempts": 1})
    engine = await settings_engine(model)
    processes = Processes(worker=os.getpid(), temporal=stack.pids()[TEMPORAL_DEV_SERVER])
    async with workers_running(client, model):
        arms = Arms(ChatClient(client, model), await job_activities(model, engine), engine_client(model, engine))
        overhead = await measure_overhead(
            arms, processes, pairs=config.pairs, max_tokens=config.max_tokens, progress=progress
        )
        first_token = await measure_first_token(
            arms, pairs=config.first_token_pairs, max_tokens=config.max_tokens, progress=progress
        )
        growth = await measure_growth(
            arms, lengths=config.reply_lengths, repeats=config.growth_repeats, progress=progress
        )
        subscribers = await measure_subscribers(
            arms,
            processes,
            counts=config.subscribers,
            repeats=config.subscriber_repeats,
            max_tokens=config.max_tokens,
            progress=progress,
        )

    with StandInProcess(config.delay_ms / 1000) as standin:
        progress(f"inference stand-in (fixed {config.delay_ms:g} ms, no model) at {standin.base_url}")
        bursting = settings.model_copy(
            update={
                "task_queue": "bench-standin",
                "max_attempts": 1,
                "generation_slots": config.slots,
                "inference_base_url": standin.base_url,
            }
        )
        async with workers_running(client, bursting):
            capacity = await measure_capacity(
                ChatClient(client, bursting),
                standin,
                processes.temporal,
                jobs=config.jobs,
                slots=config.slots,
                run_id=run_id,
                progress=progress,
            )
    quality = await quality_benchmark(client, settings, config, run_id, progress)
    return StackResults(
        overhead=overhead,
        first_token=first_token,
        growth=growth,
        subscribers=subscribers,
        capacity=capacity,
        quality=quality,
    )


async def quality_benchmark(
    client: Client, settings: Settings, config: BenchConfig, run_id: str, progress: Callable[[str], None]
) -> QualityResult | None:
    if not config.quality:
        return None
    # The worker as deployed: validation with its retries (max_attempts from settings).
    quality = settings.model_copy(update={"task_queue": "bench-quality"})
    async with workers_running(client, quality):
        return await measure_quality(ChatClient(client, quality), config.quality, run_id, progress)


def keys_file(state: Path, config: BenchConfig) -> Path | None:
    if not config.encrypted:
        return None
    path = state / "payload-keys"
    path.write_text(new_key_line("bench") + "\n")
    return path


def run(config: BenchConfig, results: Path) -> BenchRun:
    started = time.monotonic()
    progress = progress_printer()
    machine = this_machine()
    progress(f"machine: {machine.describe()}")
    with tempfile.TemporaryDirectory(prefix="chat-worker-bench-") as state:
        # One llama.cpp thread: on 2 cores shared with Temporal and the worker, two threads spin-wait on each
        # other and the same 100-token generation took anywhere from 1 to 28 s; one thread takes a steady ~1.4 s.
        settings = settings_on_free_ports(
            Path(state), local_threads=1, payload_keys_file=keys_file(Path(state), config)
        )
        # The worker's per-job log lines go to a file beside the results, not between the progress lines.
        results.mkdir(parents=True, exist_ok=True)
        log_file = results / "last-run-worker.log"
        log_file.unlink(missing_ok=True)
        logger.remove()
        logger.add(log_file, level="INFO")
        logger.add(sys.stderr, level="WARNING")
        context = asyncio.run(
            measure_context(
                config.context_turns,
                config.context_repeats,
                installed_gguf(settings),
                settings.max_input_tokens,
                settings.max_total_tokens,
                settings.context_margin_tokens,
                progress,
            )
        )
        counter = offline_counter(settings)
        reuse = asyncio.run(measure_prefix_reuse(100, 4096, None, None, counter, counter.name, progress))
        dynamic_config = DEV_SERVER_DYNAMIC_CONFIG if config.fairness else DEV_SERVER_WITHOUT_FAIRNESS
        with DevStack(settings, progress=progress, dynamic_config=dynamic_config) as stack:
            measured = asyncio.run(stack_benchmarks(stack, settings, config, progress))
        long_chat = asyncio.run(measure_long_chat(config.long_chat_budget, config.long_chat_turns, progress))
    return checked(
        BenchRun(
            machine=machine,
            config=config,
            context=context,
            overhead=measured.overhead,
            first_token=measured.first_token,
            growth=measured.growth,
            subscribers=measured.subscribers,
            capacity=measured.capacity,
            prefix_reuse=reuse,
            long_chat=long_chat,
            quality=measured.quality,
            load_average_end=os.getloadavg(),
            duration_seconds=time.monotonic() - started,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    root = parser()
    args = root.parse_args(argv)
    config = config_from(args, root)
    previous, previous_name = previous_run(args.results_dir)
    result = run(config, args.results_dir)
    saved = write_run(result, args.results_dir)
    print(table(result, previous, previous_name))
    print(f"\nsaved {saved}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # temporalio's native runtime was seen to segfault at interpreter exit; leave without teardown.
    os._exit(code)
