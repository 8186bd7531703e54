"""`python -m orchestrator models pull` as ops run it, in a subprocess. This machine has no internet, so
the download itself is not run here (README.md, "Production"); its arguments, its progress lines, and
what it says when the Hub cannot be used are."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.devstack import free_port
from orchestrator.models_pull import Pull, remove_partial_downloads
from tests.helpers import ROOT, run


def hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No CHAT_WORKER_* or HF_* from the machine; a private HF_HOME, so no saved login is found."""
    return {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf-home"), **extra}


def as_in_a_terminal() -> None:
    """The child gets Ctrl-C as a terminal's foreground command does, whatever the test runner inherited (a
    runner started in the background by a non-interactive shell has SIGINT ignored, and exec keeps that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def signal_lines(pid: int) -> list[str]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return [line for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]


def pull(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run("models", "pull", *args, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_help_says_what_it_does_and_where_defaults_come_from(tmp_path: Path) -> None:
    done = pull("--help", env=hub_env(tmp_path))
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for phrase in ("HF_HUB_OFFLINE=1", "progress bar", "rerunning continues", "HF_TOKEN", "$MODEL_ID"):
        assert phrase in text
    assert "Qwen/Qwen2.5-7B-Instruct" in text and "--revision" in text and "--cache-dir" in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "not a/repo id!"], "error: --model: "),
        (["--model", "org/name", "--revision"], "expected one argument"),
        (["--models", "org/name"], "unrecognized arguments: --models"),
    ],
)
def test_bad_arguments_are_refused_naming_the_flag(tmp_path: Path, args: list[str], says: str) -> None:
    done = pull(*args, "--cache-dir", str(tmp_path / "cache"), env=hub_env(tmp_path))
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr


def test_a_cache_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = pull("--cache-dir", str(blocker / "hub"), env=hub_env(tmp_path))
    assert done.returncode == 2
    assert error_lines(done.stderr) == [f"error: --cache-dir: cannot create {blocker / 'hub'}: Not a directory"]


def test_offline_the_plan_is_shown_then_one_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = pull("--cache-dir", str(cache), env=hub_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"pulling Qwen/Qwen2.5-7B-Instruct (revision main) into {cache}"
    assert "token: none (public models only)" in lines[1]
    assert error_lines(done.stderr) == [
        f"error: HF_HUB_OFFLINE is set and Qwen/Qwen2.5-7B-Instruct@main is not in {cache}: "
        "run with HF_HUB_OFFLINE=0 to download"
    ]
    assert "Traceback" not in done.stderr


def test_defaults_come_from_tgis_variables(tmp_path: Path) -> None:
    env = hub_env(
        tmp_path,
        HF_HUB_OFFLINE="1",
        MODEL_ID="org/some-model",
        REVISION="v2",
        HUGGINGFACE_HUB_CACHE=str(tmp_path / "data" / "hub"),
    )
    done = pull(env=env)
    assert done.stderr.splitlines()[0] == f"pulling org/some-model (revision v2) into {tmp_path / 'data' / 'hub'}"
    assert (tmp_path / "data" / "hub").is_dir()


def test_an_unreachable_hub_is_one_clear_error(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = pull("--model", "org/name", "--cache-dir", str(tmp_path / "c"), env=hub_env(tmp_path, HF_ENDPOINT=endpoint))
    assert done.returncode == 1
    [line] = error_lines(done.stderr)
    assert line.startswith(f"error: cannot reach the Hub at {endpoint} (ConnectError: ")
    assert line.endswith(
        "org/name@main is not in " + str(tmp_path / "c") + ": check the network, proxy or HF_ENDPOINT and rerun"
    )
    assert "Traceback" not in done.stderr


@dataclass
class FakeHub:
    """A FAKE Hugging Face Hub for two faults the real one cannot be made to produce here (no internet):
    refusing a token (HTTP 401), and not answering at all. It records the Authorization of each call to the
    model API; anything else (huggingface_hub's best-effort registry fetch) gets a 404."""

    mode: str  # "refuse" or "hang"
    authorizations: list[str | None] = field(default_factory=list)
    asked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith("/api/models/"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                hub.authorizations.append(self.headers.get("Authorization"))
                hub.asked.set()
                if hub.mode == "hang":
                    hub.release.wait()
                    return
                body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def fake_hub(request: pytest.FixtureRequest) -> Iterator[tuple[FakeHub, str]]:
    hub = FakeHub(mode=request.param)
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield hub, f"http://127.0.0.1:{server.server_address[1]}"
    hub.release.set()
    server.shutdown()


@pytest.mark.parametrize("fake_hub", ["refuse"], indirect=True)
def test_hf_token_is_sent_and_a_refused_token_says_so(tmp_path: Path, fake_hub: tuple[FakeHub, str]) -> None:
    hub, endpoint = fake_hub
    env = hub_env(tmp_path, HF_ENDPOINT=endpoint, HF_TOKEN="hf_test_token_123")
    done = pull("--model", "org/private", "--cache-dir", str(tmp_path / "c"), env=env)
    assert hub.authorizations == ["Bearer hf_test_token_123"]
    assert done.returncode == 1
    assert "token: HF_TOKEN" in done.stderr and "hf_test_token_123" not in done.stderr + done.stdout
    assert error_lines(done.stderr) == [
        "error: the Hub refused the token (HTTP 401) for org/private@main: check HF_TOKEN"
    ]


@pytest.mark.parametrize("fake_hub", ["hang"], indirect=True)
async def test_ctrl_c_stops_a_pull_at_once_and_says_how_to_continue(
    tmp_path: Path, fake_hub: tuple[FakeHub, str]
) -> None:
    hub, endpoint = fake_hub
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "orchestrator", "models", "pull", "--model", "org/name", "--cache-dir", str(tmp_path / "c")),
        cwd=ROOT,
        env=hub_env(tmp_path, HF_ENDPOINT=endpoint),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=as_in_a_terminal,
    )
    assert await asyncio.to_thread(hub.asked.wait, 60), "the pull never reached the Hub"
    dispositions = signal_lines(process.pid)
    process.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)  # a hang guard, not a timing assert
    except TimeoutError:
        process.kill()
        raise AssertionError(f"the pull ignored Ctrl-C for 60 s; its signal state when sent: {dispositions}") from None
    assert process.returncode == 130
    assert "interrupted: 0 unfinished file(s) removed; rerun to continue" in err.decode()
    assert "Traceback" not in err.decode()


def test_an_interrupted_pull_removes_only_its_own_unfinished_files(tmp_path: Path) -> None:
    blobs = tmp_path / "models--org--name" / "blobs"
    blobs.mkdir(parents=True)
    finished, older, ours = blobs / "aaa", blobs / "bbb.1234abcd.incomplete", blobs / "ccc.5678abcd.incomplete"
    for path in (finished, older, ours):
        path.write_bytes(b"x")
    os.utime(older, (1_000_000, 1_000_000))  # written before this pull started: not ours
    removed = remove_partial_downloads(Pull(model="org/name", revision="main", cache_dir=tmp_path), since=2_000_000)
    assert removed == 1 and not ours.exists() and older.exists() and finished.exists()


def test_pulling_does_not_load_temporal(tmp_path: Path) -> None:
    probe = (
        "import sys; from orchestrator.cli import main; "
        f"code = main(['models', 'pull', '--cache-dir', {str(tmp_path / 'c')!r}]); "
        "print(code, 'temporalio' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=hub_env(tmp_path, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == "1 False"
