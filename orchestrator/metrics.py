"""The worker's Prometheus endpoint: a Temporal runtime whose Prometheus exporter serves, on one `/metrics` at
CHAT_WORKER_METRICS_ADDRESS, the SDK's own metrics (`temporal_*`) and the jobs' (`chat_worker_*`,
workflows/metrics.py), which the workflows and activities record through the SDK's metric meter.

A worker's metrics come from the runtime of the connection its workers use, so the workers get a connection of
their own on the metrics runtime (`metrics_client`), whatever runtime the caller's client is on. One runtime per
address and process: every worker started in the process with that address shares it (a port is bound once),
and the process's default runtime, which other clients use, is left alone."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import ServiceClient

from orchestrator.errors import StartupError
from orchestrator.settings import Settings
from workflows.metrics import ENGINE_MAX_CONCURRENT_REQUESTS, GENERATION_SLOTS, HISTOGRAM_BUCKETS

# Where `python -m orchestrator dev` serves metrics unless CHAT_WORKER_METRICS_ADDRESS says otherwise
# (9464: the default port of OpenTelemetry's Prometheus exporter).
DEV_METRICS_ADDRESS = "127.0.0.1:9464"

_runtimes: dict[str, Runtime] = {}


class MetricsAddressError(StartupError):
    pass


def metrics_runtime(address: str) -> Runtime:
    """The process's runtime serving Prometheus metrics at `address` (host:port), made on first use."""
    if address not in _runtimes:
        config = PrometheusConfig(
            bind_address=address, durations_as_seconds=True, histogram_bucket_overrides=HISTOGRAM_BUCKETS
        )
        try:
            _runtimes[address] = Runtime(telemetry=TelemetryConfig(metrics=config))
        except Exception as error:  # the SDK's error for a port that is taken or an address it cannot bind
            raise MetricsAddressError(
                f"cannot serve metrics on {address} ({error}): free it, or set CHAT_WORKER_METRICS_ADDRESS"
            ) from None
    return _runtimes[address]


async def metrics_client(client: Client, runtime: Runtime) -> Client:
    """`client`'s connection settings, namespace and converter on `runtime` (a new connection unless it is on it)."""
    config = client.service_client.config
    if config.runtime is runtime:
        return client
    service = await ServiceClient.connect(dataclasses.replace(config, runtime=runtime))
    return Client(service, namespace=client.namespace, data_converter=client.data_converter)


def record_capacity(runtime: Runtime, settings: Settings) -> None:
    """What the generations in flight are measured against: this worker's slots and, when known, the engine's
    max concurrent requests (TGI's MAX_CONCURRENT_REQUESTS from its env file)."""
    meter = runtime.metric_meter.with_additional_attributes({"task_queue": settings.generate_task_queue})
    meter.create_gauge(GENERATION_SLOTS, "Generation slots of this worker", "1").set(settings.generation_slots)
    if settings.engine_max_concurrent_requests is not None:
        meter.create_gauge(ENGINE_MAX_CONCURRENT_REQUESTS, "The engine's max concurrent requests", "1").set(
            settings.engine_max_concurrent_requests
        )


async def worker_client_serving_metrics(client: Client, settings: Settings) -> Client:
    """The client the workers use: `client`, or with CHAT_WORKER_METRICS_ADDRESS set, its like on the runtime that
    serves metrics there."""
    if settings.metrics_address is None:
        return client
    runtime = metrics_runtime(settings.metrics_address)
    record_capacity(runtime, settings)
    return await metrics_client(client, runtime)


def dev_settings(settings: Settings) -> Settings:
    """`dev`'s settings: metrics on DEV_METRICS_ADDRESS unless CHAT_WORKER_METRICS_ADDRESS was given (empty: off)."""
    if "metrics_address" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"metrics_address": DEV_METRICS_ADDRESS})
