"""Can the compose suite run here? It needs a Docker engine, Compose v2.20+ (optional `depends_on`, used to
switch engines) and an NVIDIA GPU. `make test-compose` runs this first (`python -m tests.deploy.preflight`,
standard library only): where something is missing it prints one line saying what, and exits 1 before
installing or starting anything. The suite's fixture skips with the same reason."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

MIN_COMPOSE = (2, 20)

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def run_probe(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return subprocess.CompletedProcess(command, 127, "", f"{command[0]}: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", "no answer in 60 s")


def _first_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0].strip() if lines else f"exit status {done.returncode}"


def _version(text: str) -> tuple[int, int]:
    """(2, 29) from "Docker Compose version v2.29.1"; (0, 0) when there is none."""
    found = re.search(r"(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def unavailable_reason(run: Runner = run_probe) -> str | None:
    """Why the compose suite cannot run here, or None when it can."""
    probes = [
        (["docker", "--version"], "no Docker CLI"),
        (["docker", "compose", "version"], "no Docker Compose v2 plugin"),
        (["docker", "info", "--format", "{{.ServerVersion}}"], "no Docker engine"),
        (["nvidia-smi", "-L"], "no NVIDIA GPU or driver"),
    ]
    for command, missing in probes:
        done = run(command)
        if done.returncode != 0:
            return f"{missing} (`{' '.join(command)}`: {_first_line(done)})"
        if command[1:3] == ["compose", "version"] and _version(done.stdout) < MIN_COMPOSE:
            wanted = ".".join(map(str, MIN_COMPOSE))
            return f"{done.stdout.strip()} is older than {wanted} (needed for optional depends_on)"
        if command[0] == "nvidia-smi" and "GPU" not in done.stdout:
            return "no NVIDIA GPU (`nvidia-smi -L` lists none)"
    return None


def main() -> int:
    reason = unavailable_reason()
    if reason:
        print(f"test-compose cannot run here: {reason}", file=sys.stderr)
        return 1
    print("test-compose: Docker engine, Compose and an NVIDIA GPU found", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
