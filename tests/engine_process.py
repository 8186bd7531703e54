"""A llama.cpp server of its own (the same command line as the dev stack's, from `services()`), on a port of
its own, that a test can stop and start again on that port: the session's shared engine is never touched."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

from orchestrator.devstack import LLAMA_SERVER, Service, free_port, launched, services, stopped, waited_until_ready
from orchestrator.settings import Settings


def llama_service(settings: Settings, port: int, log_file: Path) -> Service:
    wired = settings.model_copy(update={"inference_base_url": f"http://127.0.0.1:{port}"})
    service = next(s for s in services(wired) if s.name == LLAMA_SERVER)
    return Service(service.name, service.command, service.ready_url, log_file)


class EngineProcess:
    """`with EngineProcess(settings, log_dir) as engine:` a running llama.cpp server at `engine.base_url`;
    `stop()` ends it with SIGTERM (as an orchestrator stops a container), `start()` brings it back on the same
    port. Every wait is bounded."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._service = llama_service(settings, self.port, log_dir / f"llama-{self.port}.log")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = launched(self._service)
        try:
            waited_until_ready(self._service, self._process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is not None:
            stopped([(self._service, self._process)], progress=print)
            self._process = None

    def __enter__(self) -> EngineProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
