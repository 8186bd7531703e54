"""A llama.cpp server of its own (the same command line as the dev stack's, from `services()`), on a port of
its own, that a test can stop and start again on that port: the session's shared engine is never touched."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from orchestrator.devstack import LLAMA_SERVER, Service, free_port, launched, services, stopped, waited_until_ready
from orchestrator.settings import Settings


def llama_service(settings: Settings, port: int, log_file: Path) -> Service:
    wired = settings.model_copy(update={"inference_base_url": f"http://127.0.0.1:{port}"})
    service = next(s for s in services(wired) if s.name == LLAMA_SERVER)
    return Service(service.name, service.command, service.ready_url, log_file)


class ServiceProcess:
    """One of the dev stack's services as a process a test owns: `start()` (returns the seconds until it
    answered), `stop()` with SIGTERM (as an orchestrator stops a container), `kill()` with SIGKILL, and `start()`
    again on the same ports and files. Every wait is bounded."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        self._process = launched(self._service)
        try:
            return waited_until_ready(self._service, self._process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is not None:
            stopped([(self._service, self._process)], progress=print)
            self._process = None

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class EngineProcess(ServiceProcess):
    """`with EngineProcess(settings, log_dir) as engine:` a running llama.cpp server at `engine.base_url`, on a
    port of its own."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(llama_service(settings, self.port, log_dir / f"llama-{self.port}.log"))
