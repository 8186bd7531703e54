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
from bench.machine import Machine
from bench.overhead import OverheadResult
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
    quality: QualityResult | None = None
    load_average_end: tuple[float, float, float]
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
        "capacity.slots_full_share": Target("≥ 95 %", lambda v: v >= 0.95),
        "capacity.max_in_flight": Target(f"= {config.slots}", lambda v: v == config.slots),
        "capacity.lost": Target("0", lambda v: v == 0),
        "capacity.duplicated": Target("0", lambda v: v == 0),
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
    ]
    return run.model_copy(update={"targets": checks})


@dataclass(frozen=True)
class Metric:
    label: str
    path: str
    unit: str = ""
    scale: float = 1.0
    digits: int = 0

    def shown(self, data: dict[str, Any] | None) -> str:
        value = value_at(data, self.path)
        if not isinstance(value, int | float):
            return ""
        return f"{value * self.scale:,.{self.digits}f}{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    target: str = ""
    status: str = ""
    previous: str = ""


Section = tuple[str, list[Row]]


def metric_rows(
    metrics: list[Metric], data: dict[str, Any], previous: dict[str, Any] | None, config: BenchConfig
) -> list[Row]:
    goals = targets(config)
    rows = []
    for metric in metrics:
        goal = goals.get(metric.path)
        status = ("PASS" if goal.met(value_at(data, metric.path)) else "MISS") if goal else ""
        rows.append(Row(metric.label, metric.shown(data), goal.text if goal else "", status, metric.shown(previous)))
    return rows


def sections(run: BenchRun, previous: dict[str, Any] | None) -> list[Section]:
    data, c = run.model_dump(), run.config
    o, k = run.overhead, run.capacity

    def rows(*metrics: Metric) -> list[Row]:
        return metric_rows(list(metrics), data, previous, c)

    ms = {"unit": "ms", "digits": 0}
    overhead = rows(
        Metric("direct to the engine, median", "overhead.direct_median_ms", **ms),
        Metric("through ChatWorkflow, median", "overhead.workflow_median_ms", **ms),
        Metric("ratio of medians", "overhead.ratio", digits=3),
        Metric("added per job, p50 (job − engine time)", "overhead.added_p50_ms", **ms),
        Metric("added per job, p95", "overhead.added_p95_ms", **ms),
    ) + [Row("same generation both ways", f"{o.same_generation}/{o.pairs} pairs ({o.completion_tokens} tokens)")]
    overhead += rows(
        *(
            Metric(f"  added, median: {label}", f"overhead.added_parts.{name}", **ms)
            for name, label in PART_LABELS.items()
        )
    )
    capacity = rows(
        Metric("throughput", "capacity.jobs_per_second", "jobs/s", digits=1),
        Metric("stand-in's ceiling (slots / delay)", "capacity.ideal_jobs_per_second", "jobs/s", digits=1),
        Metric("latency p50 (submit → reply, queue included)", "capacity.latency_p50_ms", **ms),
        Metric("latency p95", "capacity.latency_p95_ms", **ms),
        Metric("CPU per job: worker process (+ bench client)", "capacity.worker_cpu_seconds_per_job", "ms", 1000, 1),
        Metric("CPU per job: Temporal dev server", "capacity.temporal_cpu_seconds_per_job", "ms", 1000, 1),
        Metric("CPU per job: inference stand-in", "capacity.standin_cpu_seconds_per_job", "ms", 1000, 1),
        Metric("machine CPU busy (all processes, all cores)", "capacity.machine_busy_share", "%", 100, 0),
    )
    slots = rows(
        Metric("all slots busy while generations wait", "capacity.slots_full_share", "%", 100, 1),
        Metric("slots busy on average meanwhile", "capacity.slot_occupancy", "%", 100, 1),
        Metric("time with generations waiting", "capacity.backlog_seconds", "s", digits=1),
        Metric("max requests in flight at the stand-in", "capacity.max_in_flight"),
    )
    failed = ", ".join(f"{kind} {n}" for kind, n in k.failed.items())
    burst = rows(
        Metric("drain time", "capacity.drain_seconds", "s", digits=1),
        Metric("stand-in's floor (jobs × delay / slots)", "capacity.ideal_drain_seconds", "s", digits=1),
        Metric("lost (no reply)", "capacity.lost"),
        Metric("duplicated (extra generations or replies)", "capacity.duplicated"),
    ) + ([Row("failed", failed)] if failed else [])
    context = []
    for name in run.context.counters:
        context += rows(
            Metric(f"{name}: per job, nothing cached", f"context.counters.{name}.cold_ms", "ms", digits=2),
            Metric(f"{name}: per job, history cached", f"context.counters.{name}.warm_ms", "ms", digits=2),
            Metric(f"{name}: tokens counted per second", f"context.counters.{name}.tokens_per_second", digits=0),
        )
    return [
        (
            f"1. Orchestration overhead, real model (llama.cpp + SmolLM2-135M): {c.pairs} pairs alternating, "
            f"concurrency 1, max_tokens {c.max_tokens}, no validation retries",
            overhead,
        ),
        (
            f"2. Capacity: inference STAND-IN (fixed {c.delay_ms:g} ms per request, no model), {c.jobs} jobs, "
            f"{c.slots} slots",
            capacity,
        ),
        ("3. Slot use (same run)", slots),
        (f"4. Burst (same run): all {c.jobs} submitted at once", burst),
        (
            f"5. Context building: {run.context.turns} turns ({run.context.messages} messages), lorebook of "
            f"{run.context.lore_entries} entries, budget {run.context.budget} tokens",
            context,
        ),
        *quality_sections(run, data, previous),
    ]


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
        f"6. Reply quality, real model: {run.quality.prompts} fixed roleplay prompts (bench/quality.py), one at a "
        "time through ChatWorkflow with validation and up to max_attempts attempts"
    )
    return [(heading, metric_rows(metrics, data, previous, run.config))]


PART_LABELS = {
    "start": "submit → first workflow task",
    "workflow_tasks": "workflow tasks in the worker",
    "activity_dispatch": "generate queued → picked up",
    "activity_beyond_engine": "generate activity beyond the engine",
    "back_to_workflow": "generate done → workflow task",
    "result": "workflow closed → client",
    "other": "other",
}

HEADER = Row("measurement", "value", "target", "status", "previous")


def format_table(title: str, body: list[Section]) -> str:
    """Sections of aligned rows under one header: labels left, numbers right."""
    all_rows = [HEADER, *(row for _, rows in body for row in rows)]
    widths = [max(len(getattr(row, field)) for row in all_rows) for field in ("label", "value", "target", "status")]

    def line(row: Row) -> str:
        return "  ".join(
            [
                f"  {row.label:<{widths[0]}}",
                f"{row.value:>{widths[1]}}",
                f"{row.target:<{widths[2]}}",
                f"{row.status:<{widths[3]}}",
                row.previous,
            ]
        ).rstrip()

    lines = [title, "", line(HEADER)]
    for heading, rows in body:
        lines += ["", heading, *(line(row) for row in rows)]
    return "\n".join(lines)


def title(run: BenchRun, previous: dict[str, Any] | None, previous_name: str | None) -> str:
    load = " ".join(f"{value:.2f}" for value in run.load_average_end)
    quick = " (--quick)" if value_at(previous, "config.quick") else ""
    before = " (encrypted)" if value_at(previous, "config.encrypted") else ""
    now = " · payloads encrypted" if run.config.encrypted else ""
    return (
        f"chat-worker benchmark{now} · {run.machine.describe()} · load average at the end {load}\n"
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
