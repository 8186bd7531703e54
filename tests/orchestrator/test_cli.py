"""`python -m orchestrator` as a user runs it: real subprocesses, real stack."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from orchestrator.client import ChatClient, connect
from orchestrator.devstack import DevStack, free_port, port_is_free, settings_on_free_ports
from orchestrator.settings import Settings
from tests.helpers import ROOT, arun, run, stack_env, started


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (
            "chat",
            [
                "--character",
                "--scenario",
                "--message",
                "--user-name",
                "Mira",
                "chat_roleplay",
                "--user-id",
                "--priority",
            ],
        ),
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
    probe = "import sys, orchestrator.cli as cli; cli.parser(); print('temporalio' in sys.modules)"
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


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--priority", "0"], "job.priority"),
        (["--priority", "6"], "job.priority"),
        (["--user-id", "a b"], "job.user_id"),
    ],
)
def test_a_bad_priority_or_user_id_is_refused_naming_the_field(
    settings: Settings, flags: list[str], field: str
) -> None:
    done = run("chat", "--message", "hi", *flags, env=stack_env(settings))
    assert done.returncode == 2 and done.stderr.startswith(f"error: invalid job: {field}:")


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


async def test_chat_queues_the_jobs_generation_with_its_priority_and_user_id(
    chat: ChatClient, settings: Settings
) -> None:
    job_id = f"cli-{uuid.uuid4().hex[:10]}"
    flags = ["--job-id", job_id, "--user-id", "tenant-7:u.42", "--priority", "2", "--max-tokens", "16"]
    done = await arun("chat", "--message", "Evening! One ale, please.", *flags, env=stack_env(settings))
    assert done.returncode == 0, done.stderr
    history = await chat.handle(job_id).fetch_history()
    [first, *_] = [
        e.activity_task_scheduled_event_attributes.priority
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert (first.priority_key, first.fairness_key) == (2, "tenant-7:u.42")


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
    # The reply runs to the end of stdout: it may span lines (SmolLM2 has opened one with "Mira," alone).
    reply = done.stdout.split("\nMira: ", 1)[1].strip()
    assert len(reply) > 10
    assert not [line for line in reply.splitlines() if len(line) > 10 and line in done.stderr]
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


async def test_worker_stops_gracefully_on_sigterm(stack: DevStack, settings: Settings) -> None:
    worker = await started("worker", env=stack_env(settings) | {"CHAT_WORKER_TASK_QUEUE": "sigterm-test"})
    assert worker.stderr is not None
    seen: list[str] = []
    await wait_for_line(worker.stderr, "worker polling", seen)
    worker.send_signal(signal.SIGTERM)
    await wait_for_line(worker.stderr, "shutting down workers", seen)
    assert await asyncio.wait_for(worker.wait(), timeout=60) == 0


async def test_dev_stops_the_whole_stack_on_ctrl_c(tmp_path: Path) -> None:
    settings = settings_on_free_ports(tmp_path, metrics_address=f"127.0.0.1:{free_port()}")
    dev = await started("dev", env=stack_env(settings))
    assert dev.stderr is not None
    seen: list[str] = []
    await wait_for_line(dev.stderr, "dev stack up", seen)
    # It prints where the worker serves its metrics, and serves them there.
    metrics_url = f"http://{settings.metrics_address}/metrics"
    await wait_for_line(dev.stderr, f"worker metrics (Prometheus): {metrics_url}", seen)
    await wait_for_line(dev.stderr, "worker polling", seen)
    scrape = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics_url, timeout=10).read().decode())
    assert "temporal_" in scrape and "chat_worker_generation_slots" in scrape
    assert not port_is_free(settings.inference_host, settings.inference_port)
    dev.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(dev.wait(), timeout=60) == 0
    assert port_is_free(settings.temporal_host, settings.temporal_port)
    assert port_is_free(settings.inference_host, settings.inference_port)


async def test_chat_stream_prints_the_reply_as_it_arrives(chat: object, settings: Settings) -> None:
    done = await arun(
        "chat",
        "--character",
        "Mira",
        "--message",
        "Evening! One ale, please.",
        "--stream",
        "--max-tokens",
        "40",
        "--user-name",
        "Tam",
        env=stack_env(settings),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Mira: ") and len(done.stdout.strip()) > len("Mira:") + 10
    assert "attempt(s)" in done.stderr


async def tmux(*args: str) -> str:
    process = await asyncio.create_subprocess_exec("tmux", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def screen_when(session: str, ready: object, what: str) -> str:
    for _ in range(600):
        screen = await tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session)
        if ready(screen):  # type: ignore[operator]
            return screen
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")


def replies(screen: str) -> int:
    return sum(1 for line in screen.splitlines() if line.startswith("Mira: "))


def waiting_for_input(screen: str) -> bool:
    return screen.rstrip().splitlines()[-1].startswith("Tam:") if screen.strip() else False


async def test_interactive_conversation_in_a_terminal(chat: object, settings: Settings) -> None:
    # Driven as a person would: tmux types into the real CLI and reads the screen.
    session = f"chat-{os.getpid()}-{settings.temporal_port}"
    env = [f"{key}={value}" for key, value in stack_env(settings).items() if key.startswith(("CHAT_WORKER_", "PATH"))]
    command = [
        "env",
        *env,
        sys.executable,
        "-m",
        "orchestrator",
        "chat",
        "--character",
        "Mira",
        "--user-name",
        "Tam",
        "--max-tokens",
        "40",
    ]
    await tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "50", "-c", str(ROOT), shlex.join(command))
    try:
        screen = await screen_when(session, waiting_for_input, "the greeting")
        assert "Sit by the fire, you look half drowned" in screen and replies(screen) == 1

        await tmux("send-keys", "-t", session, "Evening, Mira. Any rooms left?", "Enter")
        screen = await screen_when(session, lambda s: replies(s) >= 2 and waiting_for_input(s), "the first reply")

        await tmux("send-keys", "-t", session, "/regenerate", "Enter")
        screen = await screen_when(session, lambda s: replies(s) >= 3 and waiting_for_input(s), "the second reply")
        assert "Evening, Mira. Any rooms left?" in screen and "error:" not in screen

        await tmux("send-keys", "-t", session, "/quit", "Enter")
        for _ in range(100):
            alive = await asyncio.create_subprocess_exec(
                "tmux", "has-session", "-t", session, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if await alive.wait() != 0:  # the session ended with the program (or the tmux server with it)
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the chat did not end on /quit")
    finally:
        await asyncio.create_subprocess_exec("tmux", "kill-session", "-t", session, stderr=subprocess.DEVNULL)


async def test_jobs_list_shows_recent_jobs_by_type(chat: ChatClient, settings: Settings) -> None:
    from tests.helpers import job

    marker = f"jobs-list-{os.getpid()}"
    await (await chat.submit(job(job_id=marker, sampling={"max_tokens": 16}))).result()
    for _ in range(50):  # visibility is eventually consistent
        done = await arun("jobs", "list", "--job-type", "chat_roleplay", "--since", "1h", env=stack_env(settings))
        if f"chat-{marker}" in done.stdout:
            break
        await asyncio.sleep(0.2)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["workflow", "id", "type"]
    row = next(r for r in rows if f"chat-{marker}" in r)
    assert "chat_roleplay" in row and "Mira" in row and ("ok" in row or "flagged" in row)
    assert all("chat_roleplay" in r for r in rows)
    bad = await arun("jobs", "list", "--since", "yesterday", env=stack_env(settings))
    assert bad.returncode == 2 and bad.stderr.startswith("error: jobs list: argument --since")


async def test_a_group_conversation_in_a_terminal(chat: object, settings: Settings) -> None:
    # A group: each member's greeting, then `/as` makes one member reply after the user's line.
    session = f"group-{os.getpid()}-{settings.temporal_port}"
    env = [f"{key}={value}" for key, value in stack_env(settings).items() if key.startswith(("CHAT_WORKER_", "PATH"))]
    members = ["--character", "Mira", "--character", "Theo Marlowe"]
    command = ["env", *env, sys.executable, "-m", "orchestrator", "chat", *members, "--user-name", "Tam"]
    await tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "50", "-c", str(ROOT), shlex.join(command))

    def theo_after_the_question(screen: str) -> bool:
        _, _, after = screen.partition("Tam: /as theo Any news from the harbour?")
        spoke = any(line.startswith(("Theo Marlowe: ", "[left out] Theo Marlowe")) for line in after.splitlines())
        return spoke and waiting_for_input(after)

    try:
        screen = await screen_when(session, waiting_for_input, "the greetings")
        assert replies(screen) == 1 and "\nTheo Marlowe: *Theo peers" in screen
        await tmux("send-keys", "-t", session, "/as theo Any news from the harbour?", "Enter")
        screen = await screen_when(session, theo_after_the_question, "Theo's reply")
        after = screen.partition("Any news from the harbour?")[2]
        # Only Theo's round (what streams may hold another's lines, cut before it is kept).
        assert not any(line.startswith("Mira: ") for line in after.splitlines()) and "error:" not in screen
        await tmux("send-keys", "-t", session, "/quit", "Enter")
    finally:
        await asyncio.create_subprocess_exec("tmux", "kill-session", "-t", session, stderr=subprocess.DEVNULL)
