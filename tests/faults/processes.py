"""The processes the fault suite breaks: a Temporal dev server of the test's own (the same command line as the
dev stack's, from `services()`) that can be stopped, killed and started again on its ports and SQLite file, and
`python -m orchestrator worker` as a subprocess, as production runs it. The session's servers are never touched."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from orchestrator.devstack import TEMPORAL_DEV_SERVER, services
from orchestrator.settings import Settings
from tests.engine_process import ServiceProcess
from tests.helpers import ROOT, stack_env

# Guards against a hang, not timing assertions.
WORKER_READY_WITHIN_SECONDS = 90.0
WORKER_EXITS_WITHIN_SECONDS = 90.0
# What the worker logs once both its workers poll (orchestrator.worker.run_workers).
POLLING = "worker polling task queues"


class TemporalProcess(ServiceProcess):
    """`with TemporalProcess(settings) as temporal:` a dev server on `settings`' ports with its SQLite file in
    `settings.state_dir`; `stop()` (SIGTERM), `kill()` (SIGKILL) and `start()` again on the same ports and file."""

    def __init__(self, settings: Settings) -> None:
        service = next(s for s in services(settings) if s.name == TEMPORAL_DEV_SERVER)
        service.log_file.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(service)


class WorkerProcess:
    """`python -m orchestrator worker` with `env`, its output in `log_file`. Start with `await start()`; it
    returns once the worker polls."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self._env = env
        self.log_file = log_file
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_file.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "orchestrator",
                "worker",
                cwd=ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await asyncio.wait_for(self._polling(), timeout=WORKER_READY_WITHIN_SECONDS)

    async def _polling(self) -> None:
        assert self._process is not None
        while POLLING not in self.log():
            if self._process.returncode is not None:
                raise AssertionError(f"the worker exited with {self._process.returncode}:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.2)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL, as when a node dies: nothing is finished or reported."""
        assert self._process is not None
        self._process.kill()
        await self._process.wait()

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM, as an orchestrator stops a container: its exit code and the seconds it took to exit."""
        assert self._process is not None
        began = time.monotonic()
        self._process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self._process.wait(), timeout=WORKER_EXITS_WITHIN_SECONDS)
        return code, time.monotonic() - began

    async def ensure_stopped(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


@asynccontextmanager
async def worker_process(env: dict[str, str], log_file: Path) -> AsyncIterator[WorkerProcess]:
    """A started WorkerProcess, killed at the end of the block if it still runs."""
    worker = WorkerProcess(env, log_file)
    try:
        await worker.start()
        yield worker
    finally:
        await worker.ensure_stopped()


GENERATED = re.compile(r"^(\d\d):(\d\d):(\d\d) .*generated job=(\S+) attempt=(\d+) try=\d+", re.MULTILINE)


def finished_generations(worker_log: str) -> Counter[tuple[str, int]]:
    """How often each (job id, attempt) generation finished, from the worker's `generated job=… attempt=…`
    lines (orchestrator logs ids and counts only)."""
    return Counter((m[4], int(m[5])) for m in GENERATED.finditer(worker_log))


def finished_before(worker_log: str, moment: datetime, seconds: float) -> set[tuple[str, int]]:
    """The generations the log says finished at least `seconds` before `moment` (the log's clock: local time,
    whole seconds)."""
    at = moment.hour * 3600 + moment.minute * 60 + moment.second
    found = set()
    for m in GENERATED.finditer(worker_log):
        ago = (at - (int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]))) % 86400  # across midnight too
        if seconds <= ago < 43200:
            found.add((m[4], int(m[5])))
    return found


def worker_env(settings: Settings) -> dict[str, str]:
    """`stack_env` for a worker in the settings' namespace."""
    return stack_env(settings) | {"CHAT_WORKER_TEMPORAL_NAMESPACE": settings.temporal_namespace}


class FinishedWorkRedone(AssertionError):
    """A generation finished and was then done again: its reply was thrown away."""


def check_none_finished_twice(
    generations: Counter[tuple[str, int]], in_flight: frozenset[tuple[str, int]] = frozenset()
) -> None:
    """`in_flight`: generations whose completion may not have left a killed worker (see finished_before)."""
    redone = sorted(key for key, count in generations.items() if count > 1 and key not in in_flight)
    if redone:
        raise FinishedWorkRedone(f"{len(redone)} finished generations were done again: {redone}")
