"""The worker's Prometheus metrics, end to end: a worker on the session's real stack (Temporal dev server,
llama.cpp with SmolLM2) runs real jobs on a task queue of its own with CHAT_WORKER_METRICS_ADDRESS set; Debian's
`prometheus` (started here) scrapes it and the dev server's own metrics; PromQL answers with what the jobs did.

The worker's metrics runtime is its own (one per address and process, orchestrator/metrics.py): the session's
other clients and workers stay on the SDK's default runtime, so nothing else in the run is touched, and the counts
here are this module's jobs alone."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from orchestrator.client import ChatClient, workflow_id
from orchestrator.devstack import free_port
from orchestrator.metrics import DEV_METRICS_ADDRESS, dev_settings
from orchestrator.settings import Settings, SettingsError, load_settings
from orchestrator.worker import workers_running
from tests.helpers import USER_TEXT, generate_tries, job
from tests.workflows.test_bad_inputs import raw_payload
from workflows.models import ChatResult

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "chat-worker.json"
JOBS = 3
SCRAPE_SECONDS = 1

# TGI's metric names, read in its source at the tag compose pins (3.3.7), for the dashboard's TGI panels (TGI
# cannot run here): backends/v3/src/queue.rs `gauge!("tgi_queue_size")`; backends/v3/src/backend.rs
# `gauge!("tgi_batch_current_size")`, `gauge!("tgi_batch_current_max_tokens")`; router/src/server.rs
# `histogram!("tgi_request_queue_duration")` (a histogram with buckets: its Matcher::Suffix("duration") sets them),
# `counter!("tgi_request_success")`, and on the main port's router `.route("/metrics", get(metrics))`.
TGI_METRICS = {
    "tgi_queue_size",
    "tgi_batch_current_size",
    "tgi_batch_current_max_tokens",
    "tgi_request_success",
    "tgi_request_queue_duration_bucket",
    "tgi_request_queue_duration_sum",
    "tgi_request_queue_duration_count",
}


@dataclass(frozen=True)
class Scraped:
    prometheus: str
    metrics_url: str
    settings: Settings
    results: list[ChatResult]
    failed: list[str]
    job_ids: list[str]
    generation_tries: int  # Temporal's tries of every generation (a try that timed out on a busy machine is retried)

    def query(self, promql: str) -> list[dict[str, object]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])  # type: ignore[index]


def prometheus_config(path: Path, worker: str, temporal: str) -> None:
    scrape = [
        {"job_name": "chat-worker", "static_configs": [{"targets": [worker]}]},
        {"job_name": "temporal", "static_configs": [{"targets": [temporal]}]},
    ]
    config = {"global": {"scrape_interval": f"{SCRAPE_SECONDS}s"}, "scrape_configs": scrape}
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def prometheus_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Debian's prometheus on a free port; its config is written by the caller before it reads it (reload)."""
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": f"{SCRAPE_SECONDS}s"}}))
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(directory / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}", config
    finally:
        process.terminate()
        process.wait(timeout=30)


async def http(url: str, method: str = "GET") -> str:
    """The body at `url`, fetched off the event loop (the in-process worker shares it)."""

    def fetched() -> str:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.read().decode()

    return await asyncio.to_thread(fetched)


async def until(seen: Callable[[], object], wanted: Callable[[object], bool], what: str, within: float = 90) -> None:
    """Guard against a hang: what `seen()` returns (run in a thread) must be `wanted` within `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    last: object = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await asyncio.to_thread(seen)
            if wanted(last):
                return
        except Exception as error:  # not up yet
            last = error
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {within} s (last seen: {last!r})")


async def ran(chat: ChatClient, client: Client, settings: Settings) -> tuple[list[ChatResult], list[str], list[str]]:
    """JOBS real roleplay jobs, and one raw start that is not a job (it fails InvalidJob before its type is known)."""
    jobs = [job(sampling={"max_tokens": 24, "seed": seed}) for seed in range(JOBS)]
    handles = [await chat.submit(chat_job) for chat_job in jobs]
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=240)
    bad = await client.start_workflow(
        "ChatWorkflow", raw_payload(b"{}"), id=f"raw-{uuid.uuid4().hex[:10]}", task_queue=settings.task_queue
    )
    failed: list[str] = []
    try:
        await asyncio.wait_for(bad.result(), timeout=60)
    except WorkflowFailureError as error:
        assert isinstance(error.cause, ApplicationError)
        failed.append(error.cause.type or "")
    return list(results), failed, [j.job_id for j in jobs]


@pytest.fixture(scope="module")
async def scraped(
    client: Client, settings: Settings, stack: object, prometheus_process: tuple[str, Path]
) -> AsyncIterator[Scraped]:
    prometheus, config = prometheus_process
    wired = settings.model_copy(
        update={
            "task_queue": f"metrics-{uuid.uuid4().hex[:8]}",
            "metrics_address": f"127.0.0.1:{free_port()}",
            "engine_max_concurrent_requests": settings.generation_slots,
        }
    )
    async with workers_running(client, wired):
        chat = ChatClient(client, wired)
        results, failed, job_ids = await ran(chat, client, wired)
        tries = sum([sum(await generate_tries(client, workflow_id(job_id))) for job_id in job_ids])
        prometheus_config(config, wired.metrics_address or "", f"127.0.0.1:{settings.temporal_metrics_port}")
        ready = f"{prometheus}/-/ready"
        await until(lambda: urllib.request.urlopen(ready, timeout=5).status, lambda s: s == 200, "prometheus up")
        await http(f"{prometheus}/-/reload", method="POST")
        found = Scraped(prometheus, f"http://{wired.metrics_address}/metrics", wired, results, failed, job_ids, tries)
        ended = f'sum(chat_worker_jobs_total{{task_queue="{wired.task_queue}"}})'
        await until(lambda: found.query(ended), lambda r: bool(r) and found.value(ended) == JOBS + 1, "jobs scraped")
        temporal_up = 'up{job="temporal"}'
        await until(
            lambda: found.query(temporal_up), lambda r: bool(r) and found.value(temporal_up) == 1, "temporal up"
        )
        # The server emits its backlog gauges about a minute after it loads a task queue (a fresh dev server has
        # none before): the dashboard's backlog panel reads one.
        backlog = 'approximate_backlog_count{namespace="default"}'
        await until(lambda: found.query(backlog), bool, "the server's backlog gauge", within=180)
        yield found


def by_labels(scraped: Scraped, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(str(row["metric"].get(label, "")) for label in labels): float(row["value"][1])  # type: ignore[index, union-attr]
        for row in scraped.query(promql)
    }


def test_promql_counts_the_jobs_by_type_outcome_and_error(scraped: Scraped) -> None:
    queue = scraped.settings.task_queue
    counted = by_labels(
        scraped,
        f'sum by (job_type, outcome, error_type) (chat_worker_jobs_total{{task_queue="{queue}"}})',
        "job_type",
        "outcome",
        "error_type",
    )
    expected = Counter(("chat_roleplay", r.outcome, "none") for r in scraped.results)
    expected.update(("unknown", "failed", error_type) for error_type in scraped.failed)
    assert scraped.failed == ["InvalidJob"]
    assert counted == {key: float(count) for key, count in expected.items()}


def test_promql_sums_the_jobs_tokens_attempts_and_reasons(scraped: Scraped) -> None:
    where = f'{{task_queue="{scraped.settings.task_queue}"}}'
    returned = scraped.results
    assert scraped.value(f"sum(chat_worker_completion_tokens_total{where})") == sum(
        r.completion_tokens for r in returned
    )
    assert scraped.value(f"sum(chat_worker_prompt_tokens_total{where})") == sum(r.prompt_tokens for r in returned)
    assert scraped.value(f"sum(chat_worker_job_attempts_sum{where})") == sum(r.attempts for r in returned)
    reasons = Counter(reason for r in returned for a in r.attempt_details for reason in a.reasons)
    counted = by_labels(scraped, f"sum by (reason) (chat_worker_reasons_total{where})", "reason")
    assert counted == {(reason,): float(n) for reason, n in reasons.items()}
    assert scraped.value(f"sum(chat_worker_response_seconds_count{where})") == JOBS + 1
    for histogram in ("response_seconds", "first_token_seconds", "queue_wait_seconds", "tokens_per_second"):
        count = scraped.value(f"sum(chat_worker_{histogram}_count{where})")
        assert count == (JOBS + 1 if histogram == "response_seconds" else JOBS), histogram
    p50 = scraped.value(f"histogram_quantile(0.5, sum by (le) (chat_worker_response_seconds_bucket{where}))")
    assert p50 > 0


def test_promql_sees_the_generations_and_the_slots_they_are_measured_against(scraped: Scraped) -> None:
    where = f'{{task_queue="{scraped.settings.generate_task_queue}"}}'
    tries = by_labels(scraped, f"sum by (purpose, result) (chat_worker_generations_total{where})", "purpose", "result")
    assert tries[("reply", "ok")] == sum(r.attempts for r in scraped.results)
    assert sum(tries.values()) == scraped.generation_tries
    assert scraped.value(f"sum(chat_worker_generations_in_flight{where})") == 0
    assert scraped.value(f"sum(chat_worker_generation_slots{where})") == scraped.settings.generation_slots
    assert scraped.value(f"max(chat_worker_engine_max_concurrent_requests{where})") == scraped.settings.generation_slots


def test_the_sdks_own_metrics_keep_their_temporal_names_on_the_same_endpoint(scraped: Scraped) -> None:
    queue = scraped.settings.task_queue
    completed = scraped.value(f'sum(temporal_workflow_completed{{task_queue="{queue}"}})')
    failed = scraped.value(f'sum(temporal_workflow_failed{{task_queue="{queue}"}})')
    assert (completed, failed) == (JOBS, 1)
    assert scraped.query('up{job="chat-worker"} == 1')


async def test_labels_carry_codes_only_never_chat_text_or_job_ids(scraped: Scraped) -> None:
    text = await http(scraped.metrics_url)
    ours = [line for line in text.splitlines() if line.startswith("chat_worker_")]
    assert ours
    labels = {name for line in ours for name in re.findall(r'[{,](\w+)="', line)}
    allowed = {"job_type", "outcome", "error_type", "reason", "purpose", "result", "le"}
    sdk = {"namespace", "task_queue", "workflow_type", "activity_type", "service_name"}
    assert labels <= allowed | sdk, labels - allowed - sdk
    for job_id in scraped.job_ids:
        assert job_id not in text
    for result in scraped.results:
        assert result.content not in text
    assert USER_TEXT[:20] not in text and "Mira" not in text


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers not followed by `(` (functions, `by (...)`), once
    label matchers, ranges, strings and grouping clauses are taken out."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expression)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    keywords = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
    return {name for name in re.findall(r"\b[A-Za-z_:][\w:]*\b(?!\s*\()", bare) if name.lower() not in keywords}


async def test_the_dashboard_reads_only_metrics_that_exist(scraped: Scraped) -> None:
    names = set(json.loads(await http(f"{scraped.prometheus}/api/v1/label/__name__/values"))["data"])
    expressions = dashboard_expressions()
    assert expressions
    wanted = set().union(*map(metric_names, expressions))
    assert wanted - names - TGI_METRICS == set()
    for expression in expressions:  # and Prometheus accepts each query, Grafana's interval variable filled in
        scraped.query(expression.replace("$__rate_interval", "1m"))
    # Every panel's metric is one this stack serves: the worker's, the Temporal server's or TGI's.
    assert {n for n in wanted if n.startswith("chat_worker_")} and wanted & TGI_METRICS
    # The backlog panel groups the server's gauge by these labels.
    backlog = scraped.query('approximate_backlog_count{namespace="default"}')
    assert backlog and all({"taskqueue", "task_type"} <= row["metric"].keys() for row in backlog)  # type: ignore[union-attr]


def test_dev_serves_metrics_on_its_default_address_unless_told() -> None:
    unset = Settings(_env_file=None)  # type: ignore[call-arg]
    assert dev_settings(unset).metrics_address == DEV_METRICS_ADDRESS
    told = Settings(_env_file=None, metrics_address="127.0.0.1:9999")  # type: ignore[call-arg]
    assert dev_settings(told).metrics_address == "127.0.0.1:9999"
    off = Settings(_env_file=None, metrics_address="")  # type: ignore[call-arg]
    assert dev_settings(off).metrics_address is None


def test_a_metrics_address_that_is_not_host_and_port_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_WORKER_METRICS_ADDRESS", "9464")
    with pytest.raises(SettingsError, match="CHAT_WORKER_METRICS_ADDRESS"):
        load_settings()
    monkeypatch.setenv("CHAT_WORKER_METRICS_ADDRESS", "")
    assert load_settings().metrics_address is None
