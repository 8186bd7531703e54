"""What a result was measured on, and CPU time of processes, read from /proc (Linux; no psutil)."""

from __future__ import annotations

import bisect
import math
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]


class Machine(BaseModel):
    timestamp: str  # UTC, ISO 8601
    git_commit: str  # with "-dirty" when the checkout has uncommitted changes
    cpu_count: int
    cpu_model: str
    python: str
    temporalio: str
    load_average: tuple[float, float, float]  # 1, 5, 15 minutes, at the start of the run

    def describe(self) -> str:
        load = " ".join(f"{value:.2f}" for value in self.load_average)
        return (
            f"{self.timestamp} · commit {self.git_commit} · {self.cpu_count} × {self.cpu_model} · "
            f"load average {load} · python {self.python} · temporalio {self.temporalio}"
        )


def cpu_model(cpuinfo: str) -> str:
    """The first `model name` in /proc/cpuinfo's text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return f"{commit}-dirty" if git("status", "--porcelain", "--untracked-files=no") else commit


def this_machine() -> Machine:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return Machine(
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        git_commit=git_commit(),
        cpu_count=os.cpu_count() or 0,
        cpu_model=cpu_model(cpuinfo) if cpuinfo else platform.processor() or "unknown",
        python=platform.python_version(),
        temporalio=version("temporalio"),
        load_average=os.getloadavg(),
    )


def cpu_seconds_in_stat(stat: str, ticks_per_second: int) -> float:
    """User + system CPU seconds from the text of /proc/<pid>/stat. The command name (field 2) may hold
    spaces and parentheses, so fields are counted after its closing parenthesis: utime and stime are fields
    14 and 15 of the line, the 12th and 13th after it."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used so far, all its threads."""
    return cpu_seconds_in_stat(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def busy_and_total(proc_stat: str) -> tuple[int, int]:
    """(busy, total) CPU ticks of all cores from the text of /proc/stat: idle and iowait are not busy."""
    fields = [int(value) for value in proc_stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far: every process, this benchmark's and others'."""
    return busy_and_total(Path("/proc/stat").read_text())


class CpuSampler:
    """CPU seconds of some processes, each read every `period` seconds on a thread, so that the CPU used between
    two wall-clock instants (e.g. a history's event times) can be read afterwards, of all of them or of some:
    `with CpuSampler(pids) as cpu: ...; cpu.used(begin, end)` or `cpu.used(begin, end, [pid])`. /proc counts in
    ticks (10 ms): a short span is off by up to a tick or so."""

    def __init__(self, pids: Sequence[int], period: float = 0.01) -> None:
        self._period = period
        # Per process: (time.time(), its CPU seconds), all read at the same instants.
        self._samples: dict[int, list[tuple[float, float]]] = {pid: [] for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for pid, samples in self._samples.items():
                samples.append((now, cpu_seconds(pid)))
            self._stop.wait(self._period)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def used(self, begin: float, end: float, pids: Iterable[int] | None = None) -> float:
        """CPU seconds the processes (all, or those in `pids`) used between two wall-clock instants."""
        chosen = self._samples if pids is None else pids
        return sum(cpu_at(self._samples[pid], end) - cpu_at(self._samples[pid], begin) for pid in chosen)


def cpu_at(samples: Sequence[tuple[float, float]], instant: float) -> float:
    """CPU seconds at `instant`, interpolated between the samples around it (the first or last outside them)."""
    if not samples:
        raise ValueError("no CPU samples")
    after = bisect.bisect_left(samples, (instant, -math.inf))
    if after == 0:
        return samples[0][1]
    if after == len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[after - 1], samples[after]
    return c0 + (c1 - c0) * (instant - t0) / (t1 - t0) if t1 > t0 else c1
