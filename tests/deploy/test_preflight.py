"""The compose suite's preflight, from the answers of the probes it runs (docker, docker compose, docker
info, nvidia-smi), so each reason is tested whatever this machine has."""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.preflight import Runner, unavailable_reason

GPU_HOST = {
    "docker --version": (0, "Docker version 28.2.2, build e6534b4"),
    "docker compose version": (0, "Docker Compose version v2.29.1"),
    "docker info --format {{.ServerVersion}}": (0, "28.2.2"),
    "nvidia-smi -L": (0, "GPU 0: NVIDIA L40S (UUID: GPU-5d1c…)"),
}


def answering(answers: dict[str, tuple[int, str]]) -> Runner:
    """A probe runner that answers each command line from `answers` (output on stdout, errors on stderr)."""

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        code, text = answers[" ".join(command)]
        return subprocess.CompletedProcess(command, code, text if code == 0 else "", "" if code == 0 else text)

    return run


def test_a_gpu_host_with_compose_can_run_it() -> None:
    assert unavailable_reason(answering(GPU_HOST)) is None


@pytest.mark.parametrize(
    ("command", "answer", "reason"),
    [
        ("docker --version", (127, "docker: command not found"), "no Docker CLI (`docker --version`: docker: command"),
        (
            "docker compose version",
            (1, "docker: unknown command: docker compose\n\nRun 'docker --help' for more information"),
            "no Docker Compose v2 plugin (`docker compose version`: docker: unknown command: docker compose)",
        ),
        (
            "docker compose version",
            (0, "Docker Compose version v2.17.3"),
            "Docker Compose version v2.17.3 is older than 2.20",
        ),
        (
            "docker info --format {{.ServerVersion}}",
            (1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"),
            "no Docker engine (`docker info --format {{.ServerVersion}}`: Cannot connect to the Docker daemon",
        ),
        ("nvidia-smi -L", (127, "nvidia-smi: command not found"), "no NVIDIA GPU or driver (`nvidia-smi -L`"),
        ("nvidia-smi -L", (0, "No devices found."), "no NVIDIA GPU (`nvidia-smi -L` lists none)"),
    ],
)
def test_the_first_missing_piece_is_named(command: str, answer: tuple[int, str], reason: str) -> None:
    found = unavailable_reason(answering(GPU_HOST | {command: answer}))
    assert found is not None and found.startswith(reason)
