"""A whole benchmark run with made-up figures, for the tests of the report (test_report.py, test_quality.py)."""

from __future__ import annotations

from bench.capacity import CapacityResult
from bench.context_build import ContextResult, CounterTimings
from bench.critical_path import AddedParts
from bench.machine import Machine
from bench.overhead import (
    FirstTokenResult,
    GrowthResult,
    LengthFigures,
    OverheadResult,
)
from bench.report import BenchConfig, BenchRun
from bench.stats import Spread, spread


def flat(value: float) -> Spread:
    return spread([value, value])


def growth(tokens: int, events: int) -> LengthFigures:
    history = {
        "events": events,
        "bytes": events * 200,
        "workflow_tasks": events // 4,
        "signals": 3,
        "updates": 0,
        "upserts": 4,
    }
    return LengthFigures(
        max_tokens=tokens,
        repeats=2,
        completion_tokens=flat(tokens),
        added=flat(150),
        history={name: flat(value) for name, value in history.items()},
    )


def sample_run(
    ratio: float = 1.2, max_in_flight: int = 8, lost: int = 0, duplicated: int = 2, throughput: float = 3.0
) -> BenchRun:
    return BenchRun(
        machine=Machine(
            timestamp="2025-01-02T03:04:05+00:00",
            git_commit="abc123",
            cpu_count=2,
            cpu_model="Test CPU",
            python="3.11.7",
            temporalio="1.35.0",
            load_average=(0.5, 0.4, 0.3),
        ),
        config=BenchConfig(
            quick=False, pairs=2, max_tokens=100, jobs=3, slots=8, delay_ms=500, context_turns=200, context_repeats=2
        ),
        context=ContextResult(
            turns=200,
            messages=399,
            lore_entries=42,
            budget=1504,
            repeats=2,
            counters={
                "estimate": CounterTimings(
                    cold_ms=0.5,
                    warm_ms=0.4,
                    tokens_counted=20000,
                    tokens_per_second=9e7,
                    prompt_tokens=1480,
                    kept_messages=14,
                    lorebook_entries=9,
                )
            },
        ),
        overhead=OverheadResult(
            pairs=2,
            max_tokens=100,
            direct_ms=[1000, 1000],
            workflow_ms=[1200, 1200],
            engine_ms=[1000, 1000],
            same_generation=2,
            completion_tokens=100,
            direct_median_ms=1000,
            workflow_median_ms=1000 * ratio,
            ratio=ratio,
            added_p50_ms=45.0,
            added_p95_ms=80.0,
            added_parts=AddedParts(
                start=10,
                workflow_tasks=20,
                activity_dispatch=5,
                activity_beyond_engine=3,
                back_to_workflow=5,
                behind_stream_task=0,
                result=2,
                other=0,
            ),
            direct=spread([1000, 1000]),
            workflow=spread([1200, 1200]),
            pair_ratio=spread([1.2, 1.2]),
            added=spread([40, 50]),
            parts={},
            overlap={"signals": flat(8), "cpu_ms": flat(30)},
            cpu={"job_worker": flat(60), "job_temporal": flat(70), "beyond_direct": flat(110)},
            history={"events": flat(60)},
        ),
        first_token=FirstTokenResult(
            pairs=2, direct=flat(40), backend=flat(430), added=flat(390), added_p50_ms=390, added_p95_ms=400
        ),
        growth=GrowthResult(
            lengths={"100": growth(100, 60), "300": growth(300, 100)},
            per_100_tokens={
                "events": 20.0,
                "bytes": 4000.0,
                "workflow_tasks": 5.0,
                "signals": 0.0,
                "updates": 0.0,
                "upserts": 0.0,
            },
        ),
        capacity=CapacityResult(
            jobs=3,
            slots=8,
            delay_ms=500,
            drain_seconds=1.0,
            ideal_drain_seconds=0.2,
            jobs_per_second=throughput,
            ideal_jobs_per_second=16.0,
            latency_p50_ms=700,
            latency_p95_ms=900,
            worker_cpu_seconds_per_job=0.05,
            temporal_cpu_seconds_per_job=0.04,
            standin_cpu_seconds_per_job=0.01,
            machine_busy_share=0.9,
            slots_full_share=0.5,
            slot_occupancy=0.9,
            backlog_seconds=0.5,
            intake_seconds=0.2,
            slots_full_share_after_intake=0.8,
            starts_seconds=0.1,
            starts_slots_full_share=0.3,
            starts_worker_cpu_share=0.2,
            starts_temporal_cpu_share=1.1,
            first_task_wait=spread([1.5, 2.0, 2.5, 3.0, 6.0]),
            max_in_flight=max_in_flight,
            replies=3,
            failed={},
            lost=lost,
            duplicated=duplicated,
        ),
        load_average_end=(1.0, 0.5, 0.2),
    )
