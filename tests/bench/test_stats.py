"""The benchmark's own arithmetic: percentiles, requests in flight, slot use under a backlog, the tally, where
a job's added time went."""

import os
import time

import pytest
from temporalio.api.enums.v1 import EventType as E

from bench.capacity import clipped, once_all_queued, slot_use_between, tally
from bench.critical_path import added_parts, first_task_wait, history_figures, overlap
from bench.machine import CpuSampler, cpu_at
from bench.stats import Request, max_in_flight, median, percentile, slot_use, spread


def test_percentiles_interpolate_between_ranks() -> None:
    samples = [40.0, 10.0, 30.0, 20.0]
    assert median(samples) == 25.0
    assert percentile(samples, 0.0) == 10.0 and percentile(samples, 1.0) == 40.0
    assert percentile(list(range(1, 101)), 0.95) == pytest.approx(95.05)
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_requests_that_touch_do_not_overlap() -> None:
    back_to_back = [Request(0, 0, 1), Request(0, 1, 2), Request(0, 2, 3)]
    assert max_in_flight(back_to_back) == 1
    assert max_in_flight([Request(0, 0, 2), Request(0, 1, 3), Request(0, 1.5, 4), Request(0, 3.5, 5)]) == 3


def test_slot_use_counts_only_time_with_work_waiting() -> None:
    # Two slots. Three requests queued at 0; two start at once, the third waits until 1.5 (one slot idle
    # from 1.0 to 1.5 while it waits). Later a lone request with nothing waiting does not count.
    requests = [Request(0, 0, 1), Request(0, 0, 2), Request(0, 1.5, 2.5), Request(10, 10, 11)]
    use = slot_use(requests, cap=2)
    assert use.backlog_seconds == pytest.approx(1.5)
    assert use.full_seconds == pytest.approx(1.0)
    assert use.share == pytest.approx(1.0 / 1.5)
    assert use.occupancy == pytest.approx((2 * 1.0 + 1 * 0.5) / (2 * 1.5))


def test_no_backlog_counts_as_full_use() -> None:
    assert slot_use([Request(0, 0, 1)], cap=8).share == 1.0
    assert slot_use([], cap=8).occupancy == 1.0


def test_tally_finds_lost_and_duplicated_jobs() -> None:
    counted = tally(["a", "b", "c"], replied=["a", "b"], generated=["a", "b", "b", "c", "zz"])
    assert counted.lost == 1  # c never replied
    assert counted.duplicated == 2  # b generated twice, zz is no job of this run
    assert tally(["a"], replied=["a", "a"], generated=["a"]).duplicated == 1
    assert tally(["a", "b"], replied=["a", "b"], generated=["a", "b"]) == type(counted)(lost=0, duplicated=0)


def test_added_parts_cover_the_time_beyond_the_engine() -> None:
    # One job: submitted at 0.000, result at the client at 1.100; the engine worked 0.950 s of it.
    events = [
        (E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, 0.010),
        (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, 0.010),
        (E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 0.020),
        (E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 0.040),
        (E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, 0.040),
        (E.EVENT_TYPE_ACTIVITY_TASK_STARTED, 0.050),
        (E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, 1.010),
        (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, 1.010),
        (E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 1.060),
        (E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 1.090),
        (E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, 1.090),
    ]
    parts = added_parts(events, submitted=0.0, received=1.100, engine_ms=950.0)
    assert parts.start == pytest.approx(20)
    assert parts.workflow_tasks == pytest.approx(50)
    assert parts.activity_dispatch == pytest.approx(10)
    assert parts.activity_beyond_engine == pytest.approx(10)
    assert parts.back_to_workflow == pytest.approx(50)
    assert parts.behind_stream_task == pytest.approx(0)
    assert parts.result == pytest.approx(10)
    assert parts.other == pytest.approx(0)


# The same job with the stream's signals: two batches during the generation, each a workflow task of 40 ms
# (the second still running when the generation completes at 1.010, until 1.030).
STREAMED = [
    (E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, 0.010),
    (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, 0.010),
    (E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 0.020),
    (E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 0.040),
    (E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, 0.040),
    (E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, 0.300),
    (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, 0.300),
    (E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 0.310),
    (E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 0.350),
    (E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, 0.980),
    (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, 0.980),
    (E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 0.990),
    (E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 1.030),
    (E.EVENT_TYPE_ACTIVITY_TASK_STARTED, 0.050),  # written when the activity ends, with its start time
    (E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, 1.010),
    (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, 1.030),
    (E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 1.060),
    (E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 1.090),
    (E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, 1.090),
]


def test_signal_tasks_during_the_generation_are_not_added_time() -> None:
    parts = added_parts(STREAMED, submitted=0.0, received=1.100, engine_ms=950.0)
    assert parts.workflow_tasks == pytest.approx(50)  # 20 before the generation, 30 after it: not the signals'
    assert parts.behind_stream_task == pytest.approx(20)  # 1.010 → 1.030: the second signal's task held it up
    assert parts.back_to_workflow == pytest.approx(30)  # 1.030 → 1.060
    assert parts.activity_beyond_engine == pytest.approx(10)
    assert parts.other == pytest.approx(0)
    beside = overlap(STREAMED)
    assert (beside.signals, beside.updates, beside.workflow_tasks) == (2, 0, 2)
    assert beside.workflow_task_ms == pytest.approx(80)


def test_first_task_wait_runs_from_the_start_to_the_first_task_picked_up() -> None:
    assert first_task_wait(STREAMED) == pytest.approx(0.010)  # started 0.010, its first task picked up at 0.020
    queued = [(E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, 3.0), (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, 3.0)]
    assert first_task_wait([*queued, (E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 9.5)]) == pytest.approx(6.5)


def test_history_figures_count_tasks_signals_updates_and_upserts() -> None:
    updated = [
        *STREAMED,
        (E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED, 0.5),
        *[(E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, 0.04)] * 2,
    ]
    figures = history_figures(updated, size_bytes=4321)
    assert figures.model_dump() == {
        "events": 22,
        "bytes": 4321,
        "workflow_tasks": 4,
        "signals": 2,
        "updates": 1,
        "upserts": 2,
    }


def test_spread_gives_quartiles_and_extremes() -> None:
    figures = spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (figures.n, figures.p50, figures.p25, figures.p75, figures.low, figures.high) == (5, 3, 2, 4, 1, 5)


def test_cpu_between_instants_is_interpolated_between_samples() -> None:
    samples = [(10.0, 1.0), (11.0, 1.5), (12.0, 1.5)]
    assert cpu_at(samples, 10.5) == pytest.approx(1.25)
    assert cpu_at(samples, 9.0) == 1.0 and cpu_at(samples, 13.0) == 1.5


def test_the_cpu_sampler_reads_each_process_and_their_sum() -> None:
    this, parent = os.getpid(), os.getppid()
    with CpuSampler([this, parent]) as cpu:
        begin = time.time()
        while time.time() < begin + 0.3:  # busy: this process's CPU grows
            pass
        end = time.time()
        time.sleep(0.05)  # a sample after `end`
    own = cpu.used(begin, end, [this])
    assert own > 0.1
    assert cpu.used(begin, end) == pytest.approx(own + cpu.used(begin, end, [parent]))
    assert cpu.used(begin, end, []) == 0


def test_a_window_sees_only_its_part_of_each_request() -> None:
    # Two slots. In the window [1, 2): one request waits from 0 to 1.5 while the other two run to 3.
    requests = [Request(0, 0, 3), Request(0, 0.5, 3), Request(0, 1.5, 4)]
    use = slot_use_between(requests, 2, 1.0, 2.0)
    assert use.backlog_seconds == pytest.approx(0.5)  # 1.0 → 1.5
    assert use.share == pytest.approx(1.0)
    outside = clipped(Request(5, 6, 7), 1.0, 2.0)
    assert (outside.scheduled, outside.started, outside.finished) == (2.0, 2.0, 2.0)


def test_once_all_queued_counts_only_the_drain() -> None:
    # One slot. The first request runs 0 → 1; the second is queued at 0.5 but starts only at 1.2 (a refill gap of
    # 0.2 s inside the drain); the third, queued last at 0.8, runs 2.2 → 3.
    requests = [Request(0, 0, 1), Request(0.5, 1.2, 2.2), Request(0.8, 2.2, 3)]
    queued, use = once_all_queued(requests, slots=1, since=0.0)
    assert queued == pytest.approx(0.8)
    assert use.backlog_seconds == pytest.approx(1.4)  # 0.8 → 2.2, while the third waits
    assert use.share == pytest.approx(1.2 / 1.4)  # busy 0.8 → 1 and 1.2 → 2.2
    whole = slot_use(requests, cap=1)
    assert whole.backlog_seconds == pytest.approx(1.7)  # from 0.5 on
    assert once_all_queued([], slots=1, since=5.0)[0] == 5.0
