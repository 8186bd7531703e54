"""How big the fault suite's scenarios are: CI-sized by default (the whole suite in a few minutes on 2 cores),
the sizes of issue 12's probes with CHAT_WORKER_FAULTS=full (`make test-faults-full`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

FAULTS_ENV = "CHAT_WORKER_FAULTS"


@dataclass(frozen=True)
class Scale:
    name: str
    # The jobs of the Temporal and worker scenarios: reply length (shorter replies are cut off and rejected, and
    # regenerated), and a deadline that only a stuck job reaches (on a shared machine the engine's speed varies
    # ten-fold).
    reply_tokens: int
    deadline_seconds: float
    # Temporal dev server stopped (SIGTERM), killed (SIGKILL), or down for a while, then restarted on its file.
    temporal_jobs: int
    temporal_down_seconds: float
    # Workers killed or stopped mid-generation.
    worker_jobs: int
    sigterm_jobs: int
    sigterm_max_tokens: int
    sigterm_deadline_seconds: float
    # Many jobs at once on the real model.
    burst_jobs: int
    burst_deadline_seconds: float
    burst_max_tokens: int
    # The engine (a llama.cpp server of the test's own) stopped mid-run for each of these, then restarted.
    engine_jobs: int
    engine_outages_seconds: tuple[float, ...]
    engine_deadline_seconds: float
    # The fault-injecting fake engine.
    fake_jobs: int
    storm_429s: int


CI = Scale(
    name="ci",
    reply_tokens=48,
    deadline_seconds=300.0,
    temporal_jobs=4,
    temporal_down_seconds=15.0,
    worker_jobs=4,
    sigterm_jobs=4,
    sigterm_max_tokens=48,
    sigterm_deadline_seconds=300.0,
    burst_jobs=30,
    burst_deadline_seconds=20.0,
    burst_max_tokens=40,
    engine_jobs=4,
    engine_outages_seconds=(15.0,),
    engine_deadline_seconds=90.0,
    fake_jobs=6,
    storm_429s=12,
)
FULL = Scale(
    name="full",
    reply_tokens=48,
    deadline_seconds=300.0,
    temporal_jobs=12,
    temporal_down_seconds=60.0,
    worker_jobs=12,
    sigterm_jobs=10,
    sigterm_max_tokens=400,
    # Room for generations cut at the 30 s grace to run again from zero on the new worker.
    sigterm_deadline_seconds=400.0,
    burst_jobs=200,
    burst_deadline_seconds=120.0,
    burst_max_tokens=48,
    engine_jobs=10,
    # The probes: restarted after 8.6 s, down 40 s, down 3 minutes.
    engine_outages_seconds=(8.6, 40.0, 180.0),
    engine_deadline_seconds=300.0,
    fake_jobs=20,
    storm_429s=60,
)


def scale() -> Scale:
    wanted = os.environ.get(FAULTS_ENV, CI.name)
    sizes = {s.name: s for s in (CI, FULL)}
    if wanted not in sizes:
        raise ValueError(f"{FAULTS_ENV} must be one of {', '.join(sizes)}, not {wanted!r}")
    return sizes[wanted]


SCALE = scale()
