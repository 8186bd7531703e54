"""The jobs' metrics: one structured log record per returned reply (`log_job_metrics`), and the jobs' own
Prometheus metrics (prefix `chat_worker_`), recorded through the Temporal SDK's metric meter so
that they are served on the same `/metrics` as the SDK's own `temporal_*` metrics (orchestrator/metrics.py).

- Per returned reply, once (`log_job_metrics`): the loguru record "job done" with the `JobMetrics` in its
  `extra.metrics` (numbers and codes, never chat text) and the original worker's quality warnings. Written by the
  workflow itself, never while it replays (runs begun before release-2026-12: by the `record_metrics` local
  activity, whose marker keeps replay from writing it again).
- Per job, once, when it ends (`record_job_end`, from the workflow's one ending place through
  `workflow.metric_meter()`, which records nothing while the workflow replays): every outcome, failures and
  cancellations included, which the metrics record (returned replies only) would miss.
- Per generation, live (`generation_metrics`, in the generate activity through `activity.metric_meter()`): the
  generations in flight and how each try ended.

Labels are codes only (job type, outcome, error type, reason, purpose) and the SDK's own (namespace, task queue,
workflow or activity type): never chat text, never a job id (one series per job would grow without end)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from loguru import logger
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError, is_cancelled_exception

from workflows.models import ChatResult, JobMetrics
from workflows.results import Attempt, tokens_per_second
from workflows.validation import SHORT_CHARS

JOBS = "chat_worker_jobs_total"
ATTEMPTS = "chat_worker_job_attempts"
REASONS = "chat_worker_reasons_total"
RESPONSE = "chat_worker_response_seconds"
FIRST_TOKEN = "chat_worker_first_token_seconds"
QUEUE_WAIT = "chat_worker_queue_wait_seconds"
PROMPT_TOKENS = "chat_worker_prompt_tokens_total"
COMPLETION_TOKENS = "chat_worker_completion_tokens_total"
TOKENS_PER_SECOND = "chat_worker_tokens_per_second"
GENERATIONS_IN_FLIGHT = "chat_worker_generations_in_flight"
GENERATIONS = "chat_worker_generations_total"
# Set by the worker at start (orchestrator/metrics.py): what the in-flight generations are measured against.
GENERATION_SLOTS = "chat_worker_generation_slots"
ENGINE_MAX_CONCURRENT_REQUESTS = "chat_worker_engine_max_concurrent_requests"

SLOW_SECONDS = 20.0

# A job that ended before its type was known (it did not parse).
UNKNOWN_JOB_TYPE = "unknown"
NO_ERROR = "none"

SECONDS_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180, 300, 600]
HISTOGRAM_BUCKETS: dict[str, Sequence[float]] = {
    ATTEMPTS: [1, 2, 3, 4, 5, 6, 8, 10],
    RESPONSE: SECONDS_BUCKETS,
    FIRST_TOKEN: [0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60],
    QUEUE_WAIT: [0.01, 0.05, *SECONDS_BUCKETS],
    TOKENS_PER_SECOND: [1, 2, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500],
}


def quality_warnings(metrics: JobMetrics) -> list[str]:
    """The original worker's quality monitoring: slow, short, out of character."""
    warnings = []
    if metrics.timings.total_ms > SLOW_SECONDS * 1000:
        warnings.append("slow")
    if metrics.response_length < SHORT_CHARS:
        warnings.append("short")
    if "out_of_character" in metrics.reasons:
        warnings.append("out_of_character")
    return warnings


def log_job_metrics(metrics: JobMetrics) -> None:
    """The job's one structured record, with its quality warnings."""
    metrics = metrics.model_copy(update={"warnings": quality_warnings(metrics)})
    logger.bind(metrics=metrics.model_dump(mode="json")).info(
        "job done job={} type={} outcome={} attempts={} reasons={} warnings={} tokens={}+{} total_ms={:.0f}",
        metrics.job_id,
        metrics.job_type.value,
        metrics.outcome,
        metrics.attempts,
        ",".join(metrics.reasons),
        ",".join(metrics.warnings),
        metrics.prompt_tokens,
        metrics.completion_tokens,
        metrics.timings.total_ms,
    )


def record_job_end(
    meter: MetricMeter,
    *,
    job_type: str,
    outcome: str,
    error_type: str,
    seconds: float,
    attempts: list[Attempt],
    result: ChatResult | None,
) -> None:
    """One ended job: `outcome` ok, flagged, failed or cancelled; `error_type` the failure's type (NO_ERROR
    unless failed); `seconds` from the job's start to its end; `attempts` the replies that reached their check;
    `result` the returned one's (ok, flagged), whose tokens and timings are recorded."""
    job = {"job_type": job_type}
    ended = job | {"outcome": outcome}
    meter.create_counter(JOBS, "Jobs ended, by job type, outcome and the failure's error type", "1").add(
        1, ended | {"error_type": error_type}
    )
    meter.create_histogram_float(RESPONSE, "Time from a job's start to its end", "s").record(seconds, ended)
    meter.create_histogram(ATTEMPTS, "Generations per job that reached the reply check", "1").record(
        len(attempts), ended
    )
    reasons = meter.create_counter(REASONS, "Reasons named by reply checks, once per attempt naming it", "1")
    for reason in (r for a in attempts for r in a.verdict.reasons):
        reasons.add(1, job | {"reason": reason})
    if result is not None:
        record_returned(meter, job, result)


def record_returned(meter: MetricMeter, job: dict[str, str], result: ChatResult) -> None:
    """The tokens and timings of a job that returned a reply (totals over its attempts, as ChatResult has them)."""
    timings = result.timings
    meter.create_counter(PROMPT_TOKENS, "Prompt tokens of returned jobs' generations", "1").add(
        result.prompt_tokens, job
    )
    meter.create_counter(COMPLETION_TOKENS, "Completion tokens of returned jobs' generations", "1").add(
        result.completion_tokens, job
    )
    meter.create_histogram_float(QUEUE_WAIT, "Time a job's generations waited for a generation slot", "s").record(
        timings.queue_ms / 1000, job
    )
    if timings.first_token_ms is not None:
        meter.create_histogram_float(
            FIRST_TOKEN, "Time from the returned reply's request to its first token at the engine", "s"
        ).record(timings.first_token_ms / 1000, job)
    if timings.engine_ms > 0:
        meter.create_histogram_float(TOKENS_PER_SECOND, "Completion tokens per second of engine time", "1/s").record(
            tokens_per_second(result), job
        )


# Generations running in this process, by task queue and purpose: the gauge is set to the process's count, so
# several generation workers in one process (one metrics runtime) do not overwrite each other's.
_in_flight: Counter[tuple[str, str]] = Counter()


def try_result(error: BaseException | None) -> str:
    """How a generation try ended, as a label: ok, cancelled, or the failure's type."""
    if error is None:
        return "ok"
    if is_cancelled_exception(error):
        return "cancelled"
    if isinstance(error, ApplicationError) and error.type:
        return error.type
    return type(error).__name__


@contextmanager
def generation_metrics(meter: MetricMeter, task_queue: str, purpose: str) -> Iterator[None]:
    """Around one try of the generate activity: counted in flight while it runs, then by how it ended."""
    labels = {"purpose": purpose}
    gauge = meter.create_gauge(GENERATIONS_IN_FLIGHT, "Generations running in this worker process", "1")
    key = (task_queue, purpose)
    _in_flight[key] += 1
    gauge.set(_in_flight[key], labels)
    error: BaseException | None = None
    try:
        yield
    except BaseException as raised:
        error = raised
        raise
    finally:
        _in_flight[key] -= 1
        gauge.set(_in_flight[key], labels)
        meter.create_counter(GENERATIONS, "Generation tries, by purpose and how they ended", "1").add(
            1, labels | {"result": try_result(error)}
        )
