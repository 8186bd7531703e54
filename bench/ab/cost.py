"""A/B harness of the "Make it cheap" work (issue 14): per-job cost of the real worker (a `python -m orchestrator
worker` subprocess, so its CPU is its own):
history events and bytes, workflow tasks, signals, updates per job, worker and Temporal CPU per job.

  seq:   N jobs one at a time on the real model (llama.cpp + SmolLM2), S stream subscribers each
  burst: M jobs at once against the bench stand-in (fixed delay), slot use and CPU per job

python -m bench.ab.cost --seq 15 --subscribers 0,1,3 --paced 50,15 --variants A=/tmp/old,B=. --rounds 2
(a variant is a directory with the code its worker runs, e.g. `git archive COMMIT | tar -x -C /tmp/old`)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from loguru import logger
from temporalio.api.enums.v1 import EventType

from bench.capacity import engine_requests, tally
from bench.machine import cpu_seconds
from bench.standin import StandInProcess, job_marker
from bench.stats import max_in_flight, percentile, slot_use
from orchestrator.client import ChatClient, connect
from orchestrator.devstack import LLAMA_SERVER, TEMPORAL_DEV_SERVER, DevStack, settings_on_free_ports
from workflows.models import ChatJob, JobType

ROOT = Path(__file__).resolve().parents[2]
E = EventType


class PacedProcess(StandInProcess):
    """bench/ab/paced.py in its own process."""

    def __init__(self, ttft_ms: float, token_ms: float) -> None:
        super().__init__(ttft_ms / 1000)
        self.token_ms = token_ms

    def __enter__(self) -> PacedProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.ab.paced", "--ttft-ms", str(self.delay_seconds * 1000)]
            + ["--token-ms", str(self.token_ms)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        line = self._process.stdout.readline().strip()
        self.base_url = line.removeprefix("stand-in listening on ")
        return self


def env_for(settings, queue: str, base_url: str, slots: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    env.update(
        CHAT_WORKER_TEMPORAL_ADDRESS=settings.temporal_address,
        CHAT_WORKER_INFERENCE_BASE_URL=base_url,
        CHAT_WORKER_STATE_DIR=str(settings.state_dir),
        CHAT_WORKER_TASK_QUEUE=queue,
        COST_CODE_DIR=os.environ.get("COST_CODE_DIR", str(ROOT)),
        CHAT_WORKER_MAX_ATTEMPTS="1",
        CHAT_WORKER_ENGINE="llamacpp",
        CHAT_WORKER_GENERATION_SLOTS=str(slots),
        CHAT_WORKER_MAX_INPUT_TOKENS=str(settings.max_input_tokens),
        CHAT_WORKER_MAX_TOTAL_TOKENS=str(settings.max_total_tokens),
        **json.loads(os.environ.get("COST_WORKER_ENV", "{}")),
    )
    return env


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log

    def __enter__(self) -> Worker:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "worker"],
                cwd=self.env.get("COST_CODE_DIR", str(ROOT)),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        began = time.monotonic()
        while "worker polling" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() - began > 60:
                raise RuntimeError(self.log.read_text()[-3000:])
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def history_counts(history) -> dict[str, float]:
    kinds = Counter(event.event_type for event in history.events)
    return {
        "events": len(history.events),
        "bytes": sum(event.ByteSize() for event in history.events),
        "wf_tasks": kinds[E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED],
        "signals": kinds[E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED],
        "updates": kinds[E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED],
        "markers": kinds[E.EVENT_TYPE_MARKER_RECORDED],
        "upserts": kinds[E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES],
        "activities": kinds[E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED],
    }


def times(history, submitted: float, received: float, engine_ms: float) -> dict[str, float]:
    def at(kind):
        return [e.event_time.ToNanoseconds() / 1e9 for e in history.events if e.event_type == kind]

    started, completed = at(E.EVENT_TYPE_ACTIVITY_TASK_STARTED), at(E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    scheduled = at(E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    closed = at(E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)[0]
    first_task = at(E.EVENT_TYPE_WORKFLOW_TASK_STARTED)[0]
    after = [t for t in at(E.EVENT_TYPE_WORKFLOW_TASK_STARTED) if t >= completed[-1]]
    return {
        "added_ms": (received - submitted) * 1000 - engine_ms,
        "to_first_task_ms": (first_task - submitted) * 1000,
        "to_schedule_ms": (scheduled[0] - submitted) * 1000,
        "dispatch_ms": (started[0] - scheduled[0]) * 1000,
        "beyond_engine_ms": (completed[-1] - started[-1]) * 1000 - engine_ms,
        "after_generate_ms": (closed - completed[-1]) * 1000,
        "back_to_wf_ms": ((after[0] if after else closed) - completed[-1]) * 1000,
        "result_ms": (received - closed) * 1000,
    }


def job(job_id: str, max_tokens: int, marker: bool = False) -> ChatJob:
    text = "Describe a quiet harbour town at dawn."
    return ChatJob(
        job_id=job_id,
        job_type=JobType.conversation,
        messages=[{"role": "user", "content": f"{job_marker(job_id)} {text}" if marker else text}],
        sampling={"max_tokens": max_tokens, "seed": 7},
        deadline_seconds=600,
    )


async def one_job(chat: ChatClient, chat_job: ChatJob, subscribers: int) -> dict[str, float]:
    submitted = time.time()
    handle = await chat.submit(chat_job)
    first: list[float] = []
    deltas: list[int] = []

    async def subscribe(index: int) -> None:
        count = 0
        async for event in chat.stream(chat_job.job_id):
            if event.type == "delta":
                count += 1
                if index == 0 and not first:
                    first.append(time.time())
        deltas.append(count)

    subs = [asyncio.create_task(subscribe(i)) for i in range(subscribers)]
    result = await handle.result()
    received = time.time()
    await asyncio.gather(*subs)
    history = await handle.fetch_history()
    row = history_counts(history) | times(history, submitted, received, result.timings.engine_ms)
    row["tokens"] = result.completion_tokens
    row["engine_ms"] = result.timings.engine_ms
    if first:
        row["first_delta_ms"] = (first[0] - submitted) * 1000
        row["added_first_token_ms"] = row["first_delta_ms"] - (result.timings.first_token_ms or 0)
        row["delta_events_seen"] = deltas[0]
    return row


def summary(rows: list[dict[str, float]]) -> dict[str, str]:
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows if key in r]
        out[key] = (
            f"{statistics.mean(values):.1f} (p50 {percentile(values, 0.5):.1f}, p90 {percentile(values, 0.9):.1f})"
        )
    return out


async def sequential(settings, stack, label, jobs, subscribers, max_tokens, log, paced):
    queue = f"seq-{label}-{subscribers}-{int(time.time())}"
    with contextlib.ExitStack() as engines:
        base_url = settings.inference_base_url
        if paced:
            base_url = engines.enter_context(PacedProcess(*paced)).base_url
        return await sequential_on(settings, stack, queue, base_url, jobs, subscribers, max_tokens, log)


async def sequential_on(settings, stack, queue, base_url, jobs, subscribers, max_tokens, log):
    with Worker(env_for(settings, queue, base_url, 8), log) as worker:
        chat = ChatClient(await connect(settings), settings.model_copy(update={"task_queue": queue}))
        for i in range(2):
            await one_job(chat, job(f"{queue}-warm-{i}", max_tokens), subscribers)
        pids = [worker.process.pid, stack.pids()[TEMPORAL_DEV_SERVER], stack.pids()[LLAMA_SERVER]]
        before = [cpu_seconds(p) for p in pids]
        rows = []
        for i in range(jobs):
            rows.append(await one_job(chat, job(f"{queue}-{i}", max_tokens), subscribers))
        used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
        last = await chat.handle(f"{queue}-{jobs - 1}").fetch_history()
        (ROOT / "bench" / "results" / "ab" / f"history-{queue}.json").write_text(last.to_json())
    result = summary(rows)
    result["worker_cpu_ms_per_job"] = f"{used[0] / jobs * 1000:.1f}"
    result["temporal_cpu_ms_per_job"] = f"{used[1] / jobs * 1000:.1f}"
    result["llama_cpu_ms_per_job"] = f"{used[2] / jobs * 1000:.1f}"
    return result


async def burst(settings, label: str, jobs: int, slots: int, delay_ms: float, log: Path, temporal_pid: int):
    queue = f"burst-{label}-{int(time.time())}"
    with (
        StandInProcess(delay_ms / 1000) as standin,
        Worker(env_for(settings, queue, standin.base_url, slots), log) as w,
    ):
        chat = ChatClient(await connect(settings), settings.model_copy(update={"task_queue": queue}))
        await asyncio.gather(*(chat.submit(job(f"{queue}-warm-{i}", 100, True)) for i in range(slots)))
        for i in range(slots):
            await chat.result(f"{queue}-warm-{i}")
        await asyncio.to_thread(standin.reset)
        pids = [w.process.pid, temporal_pid, standin.pid]
        before = [cpu_seconds(p) for p in pids]
        started = time.monotonic()

        async def run(i: int):
            chat_job = job(f"{queue}-{i:05d}", 100, True)
            submitted = time.monotonic()
            result = await (await chat.submit(chat_job)).result()
            return chat_job.job_id, result, time.monotonic() - submitted

        runs = await asyncio.gather(*(run(i) for i in range(jobs)))
        drained = time.monotonic() - started
        used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
        stats = await asyncio.to_thread(standin.stats)

    class R:  # what engine_requests reads
        def __init__(self, job_id, result):
            self.job_id, self.result = job_id, result

    requests = engine_requests([R(j, r) for j, r, _ in runs], stats.requests)
    use = slot_use(requests, slots)
    counted = tally([j for j, _, _ in runs], [r.job_id for _, r, _ in runs], [q.marker for q in stats.requests])
    return {
        "jobs_per_s": f"{jobs / drained:.2f}",
        "ceiling": f"{slots / (delay_ms / 1000):.1f}",
        "all_slots_busy": f"{use.share * 100:.1f} %",
        "occupancy": f"{use.occupancy * 100:.1f} %",
        "max_in_flight": f"{stats.max_in_flight} (intervals {max_in_flight(requests)})",
        "worker_cpu_ms_per_job": f"{used[0] / jobs * 1000:.1f}",
        "temporal_cpu_ms_per_job": f"{used[1] / jobs * 1000:.1f}",
        "lost": counted.lost,
        "duplicated": counted.duplicated,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", default="run")
    parser.add_argument("--seq", type=int, default=0)
    parser.add_argument("--subscribers", default="0")
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--paced", help="TTFT_MS,TOKEN_MS: sequential jobs against the paced stand-in")
    parser.add_argument("--variants", default="", help="name=codedir,... alternated per round (seq only)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=500)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    out = ROOT / "bench" / "results" / "ab"
    out.mkdir(parents=True, exist_ok=True)
    pairs = [v.split("=") for v in args.variants.split(",")] if args.variants else [("", str(ROOT))]
    variants = {name: os.path.abspath(code) for name, code in pairs}
    with tempfile.TemporaryDirectory(prefix="perf-cost-") as state:
        settings = settings_on_free_ports(Path(state), local_threads=1)
        print(f"load {os.getloadavg()}", file=sys.stderr)
        with DevStack(settings, progress=lambda line: print(line, file=sys.stderr)) as stack:

            async def all_runs():
                results = {"label": args.label, "load_start": os.getloadavg()}
                for round_ in range(args.rounds):
                    for name, code in variants.items():
                        os.environ["COST_CODE_DIR"] = code
                        for subscribers in [int(s) for s in args.subscribers.split(",")] if args.seq else []:
                            log = Path(state) / f"worker-seq-{name}-{subscribers}.log"
                            key = f"seq {name} r{round_} subscribers={subscribers}"
                            results[key] = await sequential(
                                settings,
                                stack,
                                f"{args.label}{name}",
                                args.seq,
                                subscribers,
                                args.max_tokens,
                                log,
                                [float(x) for x in args.paced.split(",")] if args.paced else None,
                            )
                            results[key]["load"] = str(os.getloadavg())
                            print(key, json.dumps(results[key], indent=1), file=sys.stderr)
                for round_ in range(args.rounds if args.burst else 0):
                    for name, code in variants.items():
                        os.environ["COST_CODE_DIR"] = code
                        log = Path(state) / f"worker-burst-{name}.log"
                        key = f"burst {name} r{round_}"
                        results[key] = await burst(
                            settings,
                            f"{args.label}{name}",
                            args.burst,
                            args.slots,
                            args.delay_ms,
                            log,
                            stack.pids()[TEMPORAL_DEV_SERVER],
                        )
                        results[key]["load"] = str(os.getloadavg())
                        print(key, json.dumps(results[key], indent=1), file=sys.stderr)
                results["load_end"] = os.getloadavg()
                return results

            results = asyncio.run(all_runs())
    name = out / f"{time.strftime('%H%M%S')}-{args.label}.json"
    name.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
