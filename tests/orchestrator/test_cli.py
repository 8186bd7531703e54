"""`python -m orchestrator` as a user runs it: real subprocesses, real stack."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from orchestrator.devstack import DevStack, free_port, port_is_free, settings_on_free_ports
from orchestrator.settings import Settings
from orchestrator.worker import connect
from tests.conftest import stack_env

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def arun(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`run` without blocking the event loop, which the session's in-process worker shares."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("chat", ["--character", "--scenario", "--message", "--user-name", "Mira", "chat_roleplay"]),
        ("dev", ["Temporal dev server", "llama.cpp", "8233", ".state", "Ctrl-C"]),
        ("worker", ["chat-generate", "SIGTERM"]),
        ("demo", ["roleplay", ".state"]),
    ],
)
def test_help_explains_each_command(command: str, says: list[str]) -> None:
    done = run(command, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for phrase in says:
        assert phrase in text


def test_commands_that_need_no_server_do_not_load_temporal() -> None:
    probe = "import sys, orchestrator.__main__ as cli; cli.parser(); print('temporalio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "False"


def test_invalid_setting_fails_at_start_naming_it(settings: Settings) -> None:
    env = stack_env(settings) | {"CHAT_WORKER_GENERATION_SLOTS": "zero"}
    done = run("chat", "--message", "hi", env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: invalid settings: CHAT_WORKER_GENERATION_SLOTS")


def test_out_of_range_sampling_is_refused_naming_the_field(settings: Settings) -> None:
    done = run("chat", "--message", "hi", "--temperature", "3", env=stack_env(settings))
    assert done.returncode == 2 and "job.sampling.temperature" in done.stderr


def test_no_temporal_is_one_clear_line(tmp_path: Path) -> None:
    env = stack_env(settings_on_free_ports(tmp_path))  # free ports: nothing listens there
    done = run("chat", "--message", "hi", env=env)
    assert done.returncode == 1
    assert "cannot reach Temporal" in done.stderr and "Traceback" not in done.stderr


async def test_chat_prints_a_real_reply(chat: object, settings: Settings) -> None:
    done = await arun(
        "chat",
        "--character",
        "mira",
        "--message",
        "Evening! One ale, please.",
        "--max-tokens",
        "40",
        "--seed",
        "4",
        "--user-name",
        "Tam",
        env=stack_env(settings),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Mira: ") and len(done.stdout) > len("Mira: ") + 10
    assert "attempt(s)" in done.stderr
    reply = done.stdout.removeprefix("Mira: ").strip()
    assert reply not in done.stderr and "One ale" not in done.stderr  # no chat text in the logs


async def test_chat_with_an_unknown_character_is_refused(chat: object, settings: Settings) -> None:
    done = await arun("chat", "--character", "Nobody", "--message", "hi", env=stack_env(settings))
    assert done.returncode == 2 and "unknown character 'Nobody'" in done.stderr and "Mira" in done.stderr


def test_dev_stack_names_a_taken_port_and_the_setting_to_change(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = settings_on_free_ports(tmp_path, temporal_ui_port=taken)
        done = run("dev", env=stack_env(settings))
    assert done.returncode == 1
    assert f"port {taken} (Temporal Web UI) is taken" in done.stderr
    assert "CHAT_WORKER_TEMPORAL_UI_PORT" in done.stderr


async def test_demo_prints_a_reply_and_keeps_the_job_in_history(tmp_path: Path) -> None:
    settings = settings_on_free_ports(tmp_path / "state")
    done = run("demo", env=stack_env(settings), timeout=300)
    assert done.returncode == 0, done.stderr
    reply_line = next(line for line in done.stdout.splitlines() if line.startswith("Mira: "))
    assert len(reply_line) > len("Mira: ") + 10
    assert reply_line.removeprefix("Mira: ") not in done.stderr
    assert f"http://127.0.0.1:{settings.temporal_ui_port}" in done.stderr
    job_id = next(word for word in done.stderr.split() if word.startswith("demo-"))

    # The next start of the stack (new ports, same state dir) still has the job.
    later = settings_on_free_ports(tmp_path / "state", inference_base_url=f"http://127.0.0.1:{free_port()}")
    with DevStack(later, progress=lambda _: None):
        client = await connect(later)
        description = await client.get_workflow_handle(f"chat-{job_id}").describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED


async def wait_for_line(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    while True:
        line = (await asyncio.wait_for(stream.readline(), timeout=120)).decode()
        assert line, f"stream closed before {needle!r}; saw:\n{''.join(seen)}"
        seen.append(line)
        if needle in line:
            return


async def started(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_worker_stops_gracefully_on_sigterm(stack: DevStack, settings: Settings) -> None:
    worker = await started("worker", env=stack_env(settings) | {"CHAT_WORKER_TASK_QUEUE": "sigterm-test"})
    assert worker.stderr is not None
    seen: list[str] = []
    await wait_for_line(worker.stderr, "worker polling", seen)
    worker.send_signal(signal.SIGTERM)
    await wait_for_line(worker.stderr, "shutting down workers", seen)
    assert await asyncio.wait_for(worker.wait(), timeout=60) == 0


async def test_dev_stops_the_whole_stack_on_ctrl_c(tmp_path: Path) -> None:
    settings = settings_on_free_ports(tmp_path)
    dev = await started("dev", env=stack_env(settings))
    assert dev.stderr is not None
    seen: list[str] = []
    await wait_for_line(dev.stderr, "dev stack up", seen)
    assert not port_is_free(settings.inference_host, settings.inference_port)
    dev.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(dev.wait(), timeout=60) == 0
    assert port_is_free(settings.temporal_host, settings.temporal_port)
    assert port_is_free(settings.inference_host, settings.inference_port)
