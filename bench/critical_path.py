"""Where one job's time went, from its history: what lay on the job's critical path beyond the engine, what ran
beside the generation (the stream's signals and their workflow tasks), and the history's size. Pure: the
history comes in as (EventType, seconds) pairs (the server's clock), the client's times as seconds (the same
machine's wall clock)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType as E
from temporalio.api.history.v1 import HistoryEvent

Event = tuple[int, float]  # (EventType, seconds since the epoch)

ACTIVITY_ENDED = (
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
)
TASK_ENDED = (
    E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    E.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    E.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
)
CLOSED = (
    E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
)


class AddedParts(BaseModel):
    """A job's latency beyond the engine's time, in ms, split along its critical path: each instant between
    submit and result counts once, for the first of these that holds then. The parts add up to job latency
    minus the engine's time; work that ran beside the generation is not here but in `Overlap`."""

    start: float  # submit → the first workflow task picked up by the worker (start call, persistence, dispatch)
    workflow_tasks: float  # in workflow tasks while no generation is outstanding: prepare, check, metrics, code
    activity_dispatch: float  # generate scheduled → picked up by the generation worker
    activity_beyond_engine: float  # generate picked up → completed at the server, minus the engine's time
    back_to_workflow: float  # no generation outstanding and no workflow task running: waiting for one
    behind_stream_task: float  # generate done, but a workflow task begun during it (a signal's) still running
    result: float  # workflow closed → its result at the client
    other: float  # latency − engine − the parts above: ~0 (clock jitter) unless the history is not as expected


class Overlap(BaseModel):
    """Work that ran while the generation was outstanding (scheduled → completed), beside it, not after it."""

    signals: int  # the stream's publishes (one signal per batch of deltas)
    updates: int  # subscribers' polls accepted
    workflow_tasks: int  # workflow tasks begun while the generation was outstanding
    workflow_task_ms: float  # their time in the worker (started → completed)


class HistoryFigures(BaseModel):
    events: int
    bytes: int  # the history's serialized size (what Temporal stores and replays)
    workflow_tasks: int  # completed
    signals: int
    updates: int  # accepted
    upserts: int = 0  # search-attribute upserts (each a visibility write on the server); 0 in runs before it


@dataclass(frozen=True)
class Span:
    begin: float
    end: float

    def holds(self, instant: float) -> bool:
        return self.begin <= instant < self.end


def times(events: Sequence[Event], *kinds: int) -> list[float]:
    return [seconds for kind, seconds in events if kind in kinds]


def history_events(events: Iterable[HistoryEvent]) -> list[Event]:
    return [(event.event_type, event.event_time.ToNanoseconds() / 1e9) for event in events]


def first_task_wait(events: Sequence[Event]) -> float:
    """Seconds from the job's start (written by the server) to its first workflow task picked up by a worker."""
    started = times(events, E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)[0]
    return times(events, E.EVENT_TYPE_WORKFLOW_TASK_STARTED)[0] - started


def spans(begins: list[float], ends: list[float]) -> list[Span]:
    """Pairs in order: Temporal runs one workflow task of a workflow at a time, and the bench's jobs make one
    generation at a time. A begin without an end (still running) is left out."""
    return [Span(begin, end) for begin, end in zip(begins, ends, strict=False)]


@dataclass(frozen=True)
class JobSpans:
    first_task: float
    closed: float
    tasks: list[Span]  # workflow task started → ended
    queued: list[Span]  # generate scheduled → started
    running: list[Span]  # generate started → ended
    outstanding: list[Span]  # generate scheduled → ended


def job_spans(events: Sequence[Event]) -> JobSpans:
    scheduled = times(events, E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    started = times(events, E.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    ended = times(events, *ACTIVITY_ENDED)
    task_started = times(events, E.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    return JobSpans(
        first_task=task_started[0],
        closed=times(events, *CLOSED)[0],
        tasks=spans(task_started, times(events, *TASK_ENDED)),
        queued=spans(scheduled, started),
        running=spans(started, ended),
        outstanding=spans(scheduled, ended),
    )


def during(instant: float, among: list[Span]) -> Span | None:
    return next((span for span in among if span.holds(instant)), None)


def critical_part(instant: float, job: JobSpans) -> str:
    """What the job was waiting on at `instant`, between its first workflow task and its close."""
    if during(instant, job.running):
        return "activity"
    if during(instant, job.queued):
        return "activity_dispatch"
    task = during(instant, job.tasks)
    if task is None:
        return "back_to_workflow"
    return "behind_stream_task" if during(task.begin, job.outstanding) else "workflow_tasks"


def added_parts(events: Sequence[Event], submitted: float, received: float, engine_ms: float) -> AddedParts:
    """`events`: (EventType, seconds) of one job's history; `submitted`, `received`: the client's clock."""
    job = job_spans(events)
    spent = dict.fromkeys(
        ("activity", "activity_dispatch", "workflow_tasks", "back_to_workflow", "behind_stream_task"), 0.0
    )
    edges = sorted(
        {job.first_task, job.closed}
        | {t for span in [*job.tasks, *job.queued, *job.running] for t in (span.begin, span.end)}
    )
    inside = [t for t in edges if job.first_task <= t <= job.closed]
    for begin, end in zip(inside, inside[1:], strict=False):
        spent[critical_part((begin + end) / 2, job)] += end - begin
    parts = {
        "start": job.first_task - submitted,
        "workflow_tasks": spent["workflow_tasks"],
        "activity_dispatch": spent["activity_dispatch"],
        "activity_beyond_engine": spent["activity"] - engine_ms / 1000,
        "back_to_workflow": spent["back_to_workflow"],
        "behind_stream_task": spent["behind_stream_task"],
        "result": received - job.closed,
    }
    other = (received - submitted) - engine_ms / 1000 - sum(parts.values())
    return AddedParts(**{name: seconds * 1000 for name, seconds in {**parts, "other": other}.items()})


def overlap(events: Sequence[Event]) -> Overlap:
    job = job_spans(events)
    beside = [task for task in job.tasks if during(task.begin, job.outstanding)]
    return Overlap(
        signals=len(times(events, E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)),
        updates=len(times(events, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)),
        workflow_tasks=len(beside),
        workflow_task_ms=sum(task.end - task.begin for task in beside) * 1000,
    )


def history_figures(events: Sequence[Event], size_bytes: int) -> HistoryFigures:
    return HistoryFigures(
        events=len(events),
        bytes=size_bytes,
        workflow_tasks=len(times(events, E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)),
        signals=len(times(events, E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)),
        updates=len(times(events, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)),
        upserts=len(times(events, E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)),
    )


def generation_spans(events: Sequence[Event]) -> list[Span]:
    """When the job's generations ran (generate started → ended), for the CPU used meanwhile."""
    return job_spans(events).running
