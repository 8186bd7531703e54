"""A run's results: the JSON saved in bench/results/, the targets, and the table printed beside the previous
run's values. Everything but `write_run` and `previous_run` is pure."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.capacity import CapacityResult
from bench.context_build import ContextResult
from bench.long_chat import LongChatResult
from bench.machine import Machine
from bench.overhead import FirstTokenResult, GrowthResult, OverheadResult, SubscribersResult
from bench.prefix_reuse import ReuseResult
from bench.quality import QualityResult
from workflows.validation import REASONS


class BenchConfig(BaseModel):
    quick: bool
    pairs: int
    max_tokens: int
    jobs: int
    slots: int
    delay_ms: float
    context_turns: int
    context_repeats: int
    encrypted: bool = False  # payloads through the AES-GCM codec (--encrypt)
    fairness: bool = True  # the Temporal dev server's fair matcher (--fairness)
    first_token_pairs: int = 10
    growth_repeats: int = 3
    reply_lengths: list[int] = [100, 300]  # max_tokens of the history-growth jobs (--long-replies adds 1,000)
    subscribers: list[int] = [0, 1, 3]  # subscriber counts measured (--subscribers)
    subscriber_repeats: int = 3
    long_chat_turns: int = 0
    long_chat_budget: int = 4096
    quality: int = 0  # prompts of the quality section (--quality; 0: skipped)


class TargetCheck(BaseModel):
    name: str
    value: float
    target: str
    met: bool


class BenchRun(BaseModel):
    machine: Machine
    config: BenchConfig
    context: ContextResult
    overhead: OverheadResult
    capacity: CapacityResult
    prefix_reuse: ReuseResult | None = None  # issue 15 (None in runs saved before it)
    long_chat: LongChatResult | None = None
    quality: QualityResult | None = None
    load_average_end: tuple[float, float, float]
    first_token: FirstTokenResult | None = None
    growth: GrowthResult | None = None
    subscribers: SubscribersResult | None = None
    duration_seconds: float | None = None  # the whole run, stack start-up included
    targets: list[TargetCheck] = []


@dataclass(frozen=True)
class Target:
    text: str
    met: Callable[[float], bool]


def targets(config: BenchConfig) -> dict[str, Target]:
    """The issue's targets, by the result path they judge."""
    return {
        "overhead.ratio": Target("≤ 1.03", lambda v: v <= 1.03),
        "overhead.added_p50_ms": Target("≤ 60 ms", lambda v: v <= 60),
        "first_token.added_p50_ms": Target("≤ 100 ms", lambda v: v <= 100),
        "capacity.orchestration_cpu_seconds_per_job": Target("≤ 100 ms", lambda v: v <= 0.1),
        "capacity.throughput_share": Target("≥ 80 %", lambda v: v >= 0.8),
        "capacity.slots_full_share": Target("≥ 90 %", lambda v: v >= 0.9),
        "capacity.max_in_flight": Target(f"= {config.slots}", lambda v: v == config.slots),
        "capacity.lost": Target("0", lambda v: v == 0),
        "capacity.duplicated": Target("0", lambda v: v == 0),
        "prefix_reuse.mean_reuse": Target("≥ 85 %", lambda v: v >= 0.85),
        "long_chat.ratio": Target("≤ 1.5", lambda v: v <= 1.5),
    }


def value_at(data: dict[str, Any] | None, path: str) -> Any:
    """data["a"]["b"] for "a.b"; None where anything is missing."""
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def checked(run: BenchRun) -> BenchRun:
    """The run with its target checks filled in."""
    data = run.model_dump()
    checks = [
        TargetCheck(name=path, value=value_at(data, path), target=target.text, met=target.met(value_at(data, path)))
        for path, target in targets(run.config).items()
        if isinstance(value_at(data, path), int | float)
    ]
    return run.model_copy(update={"targets": checks})


@dataclass(frozen=True)
class Metric:
    label: str
    path: str
    unit: str = ""
    scale: float = 1.0
    digits: int = 0
    spread: str = ""  # the path of the figure's Spread in this run (its repeats), if any

    def number(self, value: float) -> str:
        return f"{value * self.scale:,.{self.digits}f}"

    def shown(self, data: dict[str, Any] | None) -> str:
        value = value_at(data, self.path)
        if not isinstance(value, int | float):
            return ""
        return f"{self.number(value)}{' ' + self.unit if self.unit else ''}"

    def shown_spread(self, data: dict[str, Any]) -> str:
        """The quartiles over five repeats or more, else the range: "IQR 12–15" or "range 12–15"."""
        figures = value_at(data, self.spread) if self.spread else None
        if not isinstance(figures, dict):
            return ""
        if figures["n"] >= 5:
            return f"IQR {self.number(figures['p25'])}–{self.number(figures['p75'])}"
        return f"range {self.number(figures['low'])}–{self.number(figures['high'])}"


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    target: str = ""
    status: str = ""
    previous: str = ""
    spread: str = ""  # this run's repeats of the figure


Section = tuple[str, list[Row]]  # (heading, rows); format_table numbers the headings


def metric_rows(
    metrics: list[Metric], data: dict[str, Any], previous: dict[str, Any] | None, config: BenchConfig
) -> list[Row]:
    goals = targets(config)
    rows = []
    for metric in metrics:
        goal = goals.get(metric.path)
        value = value_at(data, metric.path)
        status = ("PASS" if goal.met(value) else "MISS") if goal and isinstance(value, int | float) else ""
        rows.append(
            Row(
                metric.label,
                metric.shown(data),
                goal.text if goal else "",
                status,
                metric.shown(previous),
                metric.shown_spread(data),
            )
        )
    return rows


MS: dict[str, Any] = {"unit": "ms", "digits": 0}

PART_LABELS = {
    "start": "submit → first workflow task",
    "workflow_tasks": "workflow tasks, no generation outstanding",
    "activity_dispatch": "generate queued → picked up",
    "activity_beyond_engine": "generate activity beyond the engine",
    "back_to_workflow": "waiting for a workflow task",
    "behind_stream_task": "behind a task begun during the generation",
    "result": "workflow closed → client",
    "other": "other (latency − engine − parts above)",
}
OVERLAP_LABELS: dict[str, tuple[str, dict[str, Any]]] = {
    "signals": ("stream signals", {"digits": 0}),
    "updates": ("subscribers' poll updates", {"digits": 0}),
    "workflow_tasks": ("workflow tasks", {"digits": 0}),
    "workflow_task_ms": ("their time in the worker", MS),
    "cpu_ms": ("CPU (worker + Temporal) beyond the direct request's", MS),
}
HISTORY_LABELS: dict[str, tuple[str, dict[str, Any]]] = {
    "events": ("history events", {"digits": 0}),
    "bytes": ("history size", {"unit": "KB", "scale": 1 / 1000, "digits": 1}),
    "workflow_tasks": ("workflow tasks", {"digits": 0}),
    "signals": ("signals", {"digits": 0}),
    "updates": ("updates", {"digits": 0}),
    "upserts": ("search-attribute upserts (visibility writes)", {"digits": 0}),
}


def overhead_section(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> Section:
    c, o = run.config, run.overhead

    def rows(*metrics: Metric, before: dict[str, Any] | None = previous) -> list[Row]:
        return metric_rows(list(metrics), data, before, c)

    body = rows(
        Metric("direct to the engine, median", "overhead.direct_median_ms", **MS, spread="overhead.direct"),
        Metric("through ChatWorkflow, median", "overhead.workflow_median_ms", **MS, spread="overhead.workflow"),
        Metric("ratio of medians", "overhead.ratio", digits=3, spread="overhead.pair_ratio"),
        Metric("added per job, p50 (job − engine time)", "overhead.added_p50_ms", **MS, spread="overhead.added"),
        Metric("added per job, p95", "overhead.added_p95_ms", **MS),
    ) + [Row("same generation both ways", f"{o.same_generation}/{o.pairs} pairs ({o.completion_tokens} tokens)")]
    # Runs before the critical-path split counted the stream's workflow tasks as added: not comparable.
    comparable = previous if value_at(previous, "overhead.added_parts.behind_stream_task") is not None else None
    body += [Row("on the job's critical path, median per job:", "")]
    body += rows(
        *(
            Metric(f"  {label}", f"overhead.added_parts.{name}", **MS, spread=f"overhead.parts.{name}")
            for name, label in PART_LABELS.items()
        ),
        before=comparable,
    )
    body += [Row("beside the generation (not added), median per job:", "")]
    body += rows(
        *(
            Metric(f"  {label}", f"overhead.overlap.{name}.p50", **shown, spread=f"overhead.overlap.{name}")
            for name, (label, shown) in OVERLAP_LABELS.items()
        )
    )
    body += rows(
        Metric("CPU per job: worker process (+ bench client)", "overhead.cpu.job_worker.p50", **MS,
               spread="overhead.cpu.job_worker"),
        Metric("CPU per job: Temporal dev server", "overhead.cpu.job_temporal.p50", **MS,
               spread="overhead.cpu.job_temporal"),
        Metric("CPU per job beyond the direct request's", "overhead.cpu.beyond_direct.p50", **MS,
               spread="overhead.cpu.beyond_direct"),
    )  # fmt: skip
    heading = (
        f"Orchestration overhead, real model (llama.cpp + SmolLM2-135M): {c.pairs} pairs alternating, "
        f"concurrency 1, max_tokens {c.max_tokens}, no validation retries"
    )
    return heading, body


def first_token_section(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> Section:
    body = metric_rows(
        [
            Metric("engine's own first token, sent directly, median", "first_token.direct.p50", **MS,
                   spread="first_token.direct"),
            Metric("first delta at the backend (submit → ChatClient.stream), median", "first_token.backend.p50",
                   **MS, spread="first_token.backend"),
            Metric("added to the first token, p50", "first_token.added_p50_ms", **MS, spread="first_token.added"),
            Metric("added to the first token, p95", "first_token.added_p95_ms", **MS),
        ],
        data,
        previous,
        run.config,
    )  # fmt: skip
    pairs = run.first_token.pairs if run.first_token else 0
    return f"Time to first token, real model: {pairs} pairs alternating, same request as above", body


def growth_section(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> Section:
    growth = run.growth
    body: list[Row] = []
    for key, length in (growth.lengths if growth else {}).items():
        at = f"growth.lengths.{key}"
        metrics = [
            Metric(f"max_tokens {length.max_tokens:,}: completion tokens", f"{at}.completion_tokens.p50",
                   spread=f"{at}.completion_tokens"),
            *(
                Metric(f"  {label} per job", f"{at}.history.{name}.p50", **shown, spread=f"{at}.history.{name}")
                for name, (label, shown) in HISTORY_LABELS.items()
            ),
            Metric("  added per job (job − engine time)", f"{at}.added.p50", **MS, spread=f"{at}.added"),
        ]  # fmt: skip
        body += metric_rows(metrics, data, previous, run.config)
    if growth and growth.per_100_tokens:
        body += [Row("growth per 100 completion tokens (shortest → longest):", "")]
        body += metric_rows(
            [
                Metric(f"  {label}", f"growth.per_100_tokens.{name}", **{**shown, "digits": 1})
                for name, (label, shown) in HISTORY_LABELS.items()
            ],
            data,
            previous,
            run.config,
        )
    repeats = run.config.growth_repeats
    return f"History per job by reply length, real model: {repeats} jobs per max_tokens, a long-story prompt", body


def subscribers_section(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> Section:
    assert run.subscribers is not None
    body: list[Row] = []
    for key, figures in run.subscribers.counts.items():
        at = f"subscribers.counts.{key}"
        history = [
            Metric(f"  {label} per job", f"{at}.history.{name}.p50", **shown, spread=f"{at}.history.{name}")
            for name, (label, shown) in HISTORY_LABELS.items()
        ]
        cpu = [
            Metric("  CPU per job: worker process (+ bench client, subscribers)", f"{at}.cpu_worker.p50", **MS,
                   spread=f"{at}.cpu_worker"),
            Metric("  CPU per job: Temporal dev server", f"{at}.cpu_temporal.p50", **MS, spread=f"{at}.cpu_temporal"),
        ]  # fmt: skip
        body += [Row(f"{figures.subscribers} subscribers:", "")]
        body += metric_rows([*history, *cpu], data, previous, run.config)
    heading = (
        f"Subscribers, real model: {run.config.subscriber_repeats} jobs per count, each subscriber following "
        f"ChatClient.stream to the end, max_tokens {run.subscribers.max_tokens}, same request as above"
    )
    return heading, body


def capacity_sections(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> list[Section]:
    c, k = run.config, run.capacity

    def rows(*metrics: Metric) -> list[Row]:
        return metric_rows(list(metrics), data, previous, c)

    cpu: dict[str, Any] = {"unit": "ms", "scale": 1000, "digits": 1}
    capacity = rows(
        Metric("throughput", "capacity.jobs_per_second", "jobs/s", digits=1,
               spread="capacity.windows.jobs_per_second"),
        Metric("stand-in's ceiling (slots / delay)", "capacity.ideal_jobs_per_second", "jobs/s", digits=1),
        Metric("throughput, share of the ceiling", "capacity.throughput_share", "%", 100, 0),
        Metric("latency p50 (submit → reply, queue included)", "capacity.latency_p50_ms", **MS),
        Metric("latency p95", "capacity.latency_p95_ms", **MS),
        Metric("CPU per job: worker + Temporal dev server", "capacity.orchestration_cpu_seconds_per_job", **cpu),
        Metric("  per window of the burst", "capacity.windows.orchestration_cpu_ms_per_job.p50", "ms", digits=1,
               spread="capacity.windows.orchestration_cpu_ms_per_job"),
        Metric("CPU per job: worker process (+ bench client)", "capacity.worker_cpu_seconds_per_job", **cpu),
        Metric("CPU per job: Temporal dev server", "capacity.temporal_cpu_seconds_per_job", **cpu),
        Metric("CPU per job: inference stand-in", "capacity.standin_cpu_seconds_per_job", **cpu),
        Metric("machine CPU busy (all processes, all cores)", "capacity.machine_busy_share", "%", 100, 0),
    )  # fmt: skip
    slots = rows(
        Metric(
            "all slots busy while generations wait",
            "capacity.slots_full_share",
            "%",
            100,
            1,
            spread="capacity.windows.slots_full_share",
        ),
        Metric("slots busy on average meanwhile", "capacity.slot_occupancy", "%", 100, 1),
        Metric("time with generations waiting", "capacity.backlog_seconds", "s", digits=1),
        Metric("intake: every job's generation queued after", "capacity.intake_seconds", "s", digits=1),
        Metric("all slots busy from then on (the backlog draining)", "capacity.slots_full_share_after_intake", "%",
               100, 1),
        Metric("intake: every start written after (the last start call returned)", "capacity.starts_seconds", "s",
               digits=1),
        Metric("  all slots busy meanwhile", "capacity.starts_slots_full_share", "%", 100, 1),
        Metric("  CPU meanwhile: worker process (+ bench client), of one core", "capacity.starts_worker_cpu_share",
               "%", 100, 0),
        Metric("  CPU meanwhile: Temporal dev server, of one core", "capacity.starts_temporal_cpu_share", "%", 100, 0),
        Metric("intake: a job's first workflow task picked up after its start", "capacity.first_task_wait.p50", "s",
               digits=1, spread="capacity.first_task_wait"),
        Metric("  the longest of those", "capacity.first_task_wait.high", "s", digits=1),
        Metric("max requests in flight at the stand-in", "capacity.max_in_flight"),
    )  # fmt: skip
    failed = ", ".join(f"{kind} {n}" for kind, n in k.failed.items())
    burst = rows(
        Metric("drain time", "capacity.drain_seconds", "s", digits=1),
        Metric("stand-in's floor (jobs × delay / slots)", "capacity.ideal_drain_seconds", "s", digits=1),
        Metric("lost (no reply)", "capacity.lost"),
        Metric("duplicated (extra generations or replies)", "capacity.duplicated"),
    ) + ([Row("failed", failed)] if failed else [])
    windows = f"; spread over {k.window_seconds:.1f} s windows of the burst" if k.windows else ""
    return [
        (
            f"Capacity: inference STAND-IN (fixed {c.delay_ms:g} ms per request, no model), {c.jobs} jobs, "
            f"{c.slots} slots{windows}",
            capacity,
        ),
        ("Slot use (same run)", slots),
        (f"Burst (same run): all {c.jobs} submitted at once", burst),
    ]


def context_section(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> Section:
    body: list[Row] = []
    for name in run.context.counters:
        body += metric_rows(
            [
                Metric(
                    f"{name}: per job, nothing cached",
                    f"context.counters.{name}.cold_ms",
                    "ms",
                    digits=2,
                    spread=f"context.counters.{name}.cold",
                ),
                Metric(
                    f"{name}: per job, history cached",
                    f"context.counters.{name}.warm_ms",
                    "ms",
                    digits=2,
                    spread=f"context.counters.{name}.warm",
                ),
                Metric(f"{name}: tokens counted per second", f"context.counters.{name}.tokens_per_second", digits=0),
            ],
            data,
            previous,
            run.config,
        )
    heading = (
        f"Context building: {run.context.turns} turns ({run.context.messages} messages), lorebook of "
        f"{run.context.lore_entries} entries, budget {run.context.budget} tokens"
    )
    return heading, body


def quality_sections(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> list[Section]:
    """The quality section when the run has one; a row per reason seen in this run or the previous one."""
    if run.quality is None:
        return []
    seen = {*run.quality.reasons, *(value_at(previous, "quality.reasons") or {})}
    share = {"unit": "%", "scale": 100, "digits": 0}
    metrics = [
        Metric("valid at the first attempt", "quality.valid_first_share", **share),
        Metric("valid in the end", "quality.valid_end_share", **share),
        Metric("flagged (every attempt rejected, best one returned)", "quality.flagged_share", **share),
        Metric("failed (nothing returnable)", "quality.failed"),
        Metric("mean attempts per prompt", "quality.mean_attempts", digits=2),
        Metric("section wall time", "quality.seconds", "s", digits=0),
        *(
            Metric(f"  attempts whose verdict named {reason}", f"quality.reason_shares.{reason}", **share)
            for reason in REASONS
            if reason in seen
        ),
    ]
    heading = (
        f"Reply quality, real model: {run.quality.prompts} fixed roleplay prompts (bench/quality.py), one at a "
        "time through ChatWorkflow with validation and up to max_attempts attempts"
    )
    return [(heading, metric_rows(metrics, data, previous, run.config))]


def long_chat_section(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> Section:
    assert run.long_chat is not None
    c = run.config
    body = metric_rows(
        [
            Metric("next turn of the long chat, p50", "long_chat.long_p50_ms", **MS),
            Metric("  p10", "long_chat.long_p10_ms", **MS),
            Metric("  p90", "long_chat.long_p90_ms", **MS),
            Metric("  turns at a drop (prompt laid anew), p50", "long_chat.drop_p50_ms", **MS),
            Metric("fresh short chat, p50", "long_chat.short_p50_ms", **MS),
            Metric("  p10", "long_chat.short_p10_ms", **MS),
            Metric("  p90", "long_chat.short_p90_ms", **MS),
            Metric("ratio of p50s (long / short)", "long_chat.ratio", digits=2),
        ],
        data,
        previous,
        c,
    )
    heading = (
        f"Long chat, real model: time to first token of its next turn past a {c.long_chat_budget}-token budget "
        f"({c.long_chat_turns} turns, {run.long_chat.drops} at a drop) vs a fresh short chat"
    )
    return heading, body


def prefix_reuse_section(run: BenchRun, data: dict[str, Any], previous: dict[str, Any] | None) -> Section:
    body = metric_rows(
        [
            Metric("mean share of the previous prompt reused", "prefix_reuse.mean_reuse", "%", 100, 1),
            Metric("median turn", "prefix_reuse.median_reuse", "%", 100, 1),
            Metric("turns reusing under half (drops)", "prefix_reuse.turns_under_half"),
        ],
        data,
        previous,
        run.config,
    )
    return "Prefix reuse: 100 turns past a 4096-token budget (Mira, 42-entry lorebook)", body


def sections(run: BenchRun, previous: dict[str, Any] | None) -> list[Section]:
    """The table's sections in order; a new benchmark adds its own here."""
    data = run.model_dump()
    found = [overhead_section(run, data, previous)]
    if run.first_token is not None:
        found.append(first_token_section(run, data, previous))
    if run.growth is not None:
        found.append(growth_section(run, data, previous))
    if run.subscribers is not None:
        found.append(subscribers_section(run, data, previous))
    found += [*capacity_sections(run, data, previous), context_section(run, data, previous)]
    if run.prefix_reuse is not None:
        found.append(prefix_reuse_section(run, data, previous))
    if run.long_chat is not None:
        found.append(long_chat_section(run, data, previous))
    return [*found, *quality_sections(run, data, previous)]


HEADER = Row("measurement", "value", "target", "status", "previous", "spread in this run")
COLUMNS = ("label", "value", "spread", "target", "status")


def format_table(title: str, body: list[Section]) -> str:
    """Sections of aligned rows under one header, numbered in order: labels left, numbers right."""
    all_rows = [HEADER, *(row for _, rows in body for row in rows)]
    widths = {field: max(len(getattr(row, field)) for row in all_rows) for field in COLUMNS}

    def line(row: Row) -> str:
        return "  ".join(
            [
                f"  {row.label:<{widths['label']}}",
                f"{row.value:>{widths['value']}}",
                f"{row.spread:<{widths['spread']}}",
                f"{row.target:<{widths['target']}}",
                f"{row.status:<{widths['status']}}",
                row.previous,
            ]
        ).rstrip()

    lines = [title, "", line(HEADER)]
    for number, (heading, rows) in enumerate(body, start=1):
        lines += ["", f"{number}. {heading}", *(line(row) for row in rows)]
    return "\n".join(lines)


def title(run: BenchRun, previous: dict[str, Any] | None, previous_name: str | None) -> str:
    load = " ".join(f"{value:.2f}" for value in run.load_average_end)
    quick = " (--quick)" if value_at(previous, "config.quick") else ""
    before = " (encrypted)" if value_at(previous, "config.encrypted") else ""
    before += " (fair matcher off)" if value_at(previous, "config.fairness") is False else ""
    now = " · payloads encrypted" if run.config.encrypted else ""
    now += " · fair matcher off" if not run.config.fairness else ""
    took = f" · took {run.duration_seconds / 60:.1f} min" if run.duration_seconds is not None else ""
    return (
        f"chat-worker benchmark{now} · {run.machine.describe()} · load average at the end {load}{took}\n"
        f"previous: {previous_name or 'none'}{quick}{before}"
    )


def table(run: BenchRun, previous: dict[str, Any] | None, previous_name: str | None) -> str:
    return format_table(title(run, previous, previous_name), sections(run, previous))


def result_name(run: BenchRun) -> str:
    stamp = run.machine.timestamp.replace("-", "").replace(":", "").replace("+0000", "Z").replace("+00:00", "Z")
    return f"{stamp}-{run.machine.git_commit}.json"


def previous_run(results: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The newest saved run (names sort by time), or (None, None)."""
    saved = sorted(results.glob("*.json"))
    if not saved:
        return None, None
    return json.loads(saved[-1].read_text()), saved[-1].name


def write_run(run: BenchRun, results: Path) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / result_name(run)
    path.write_text(run.model_dump_json(indent=2) + "\n")
    return path
