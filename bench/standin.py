"""An inference STAND-IN for the capacity benchmark: not an engine, no model. It answers the OpenAI streaming
chat API that `InferenceClient` speaks (POST /v1/chat/completions with `stream: true`, server-sent events)
after a fixed delay with a fixed reply, and 404 to anything else (so the worker's /tokenize probe falls back
to its local tokenizer). Its delay stands for a GPU generation, so what the benchmark measures beyond it is
the orchestration: Temporal, the worker, the HTTP client.

It records every chat request — when it arrived, when it was answered, and the job marker found in its
messages (`job_marker(job_id)`, put into each job's user message by the benchmark) — and the most requests
it ever had in flight. GET /bench/stats returns that record; POST /bench/reset clears it.

Run in its own process (`python -m bench.standin --delay-ms 500`, prints its URL on the first line) so that
its CPU time is not the worker's; `StandInProcess` does that for the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel

STANDIN_REPLY = (
    "The harbour wakes slowly at dawn. Fishing boats knock against the pier while gulls argue over the nets, "
    "and the first baker on the quay opens her shutters to the smell of salt and warm bread."
)
WORDS_PER_CHUNK = 3
_MARKER = re.compile(r"\[bench-job ([A-Za-z0-9._:-]+)\]")
_READY_PREFIX = "stand-in listening on "


def job_marker(job_id: str) -> str:
    return f"[bench-job {job_id}]"


def marker_in(body: dict[str, Any]) -> str | None:
    """The job id of the last marker in the request's messages, or None."""
    found = [m for message in body.get("messages", []) for m in _MARKER.findall(str(message.get("content", "")))]
    return found[-1] if found else None


def reply_events(text: str) -> list[str]:
    """The SSE `data:` payloads of a streamed chat completion of `text`, as llama.cpp and TGI send them."""
    words = text.split(" ")
    pieces = [" ".join(words[i : i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]
    pieces = [piece if i == 0 else " " + piece for i, piece in enumerate(pieces)]

    def chunk(content: str, finish_reason: str | None) -> str:
        delta = {"role": "assistant", "content": content}
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return json.dumps(
            {
                "id": "stand-in",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "stand-in",
                "system_fingerprint": "stand-in",
                "choices": [choice],
            }
        )

    return [*(chunk(piece, None) for piece in pieces), chunk("", "stop"), "[DONE]"]


class StandInRequest(BaseModel):
    marker: str | None
    arrived: float  # time.monotonic(): one clock for every process on this machine (Linux CLOCK_MONOTONIC)
    finished: float


class StandInStats(BaseModel):
    delay_ms: float
    max_in_flight: int
    requests: list[StandInRequest]


class StandIn:
    """The stand-in server in this event loop: `async with StandIn(0.5) as standin: standin.base_url`."""

    def __init__(self, delay_seconds: float, *, port: int = 0, reply: str = STANDIN_REPLY) -> None:
        self.delay_seconds = delay_seconds
        self._port = port
        self._events = reply_events(reply)
        self._server: asyncio.Server | None = None
        self._in_flight = 0
        self._max_in_flight = 0
        self._requests: list[StandInRequest] = []

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the stand-in is not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        # A listen backlog above the default 100: a burst opens many connections at once.
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port, backlog=1024)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> StandInStats:
        return StandInStats(
            delay_ms=self.delay_seconds * 1000, max_in_flight=self._max_in_flight, requests=list(self._requests)
        )

    def reset(self) -> None:
        self._max_in_flight = self._in_flight
        self._requests.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *headers = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            if method == "POST" and path == "/v1/chat/completions":
                await self._chat(json.loads(body), writer)
            elif method == "GET" and path == "/bench/stats":
                self._respond(writer, 200, self.stats().model_dump_json().encode())
            elif method == "POST" and path == "/bench/reset":
                self.reset()
                self._respond(writer, 200, b"{}")
            else:
                self._respond(writer, 404, b'{"error": "not found"}')
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()

    async def _chat(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        arrived = time.monotonic()
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            await asyncio.sleep(self.delay_seconds)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            writer.write(b"".join(f"data: {event}\n\n".encode() for event in self._events))
            await writer.drain()
        finally:
            self._in_flight -= 1
            self._requests.append(StandInRequest(marker=marker_in(body), arrived=arrived, finished=time.monotonic()))

    @staticmethod
    def _respond(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )


class StandInProcess:
    """The stand-in in its own process, for the benchmark: `with StandInProcess(0.5) as standin: ...`."""

    def __init__(self, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> StandInProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.standin", "--delay-ms", str(self.delay_seconds * 1000)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith(_READY_PREFIX):
            self._process.kill()
            raise RuntimeError(f"the inference stand-in did not start (it printed {line!r})")
        self.base_url = line.removeprefix(_READY_PREFIX)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def _call(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(
            f"{self.base_url}{path}", method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def stats(self) -> StandInStats:
        return StandInStats.model_validate_json(self._call("GET", "/bench/stats"))

    def reset(self) -> None:
        self._call("POST", "/bench/reset")


async def serve(delay_seconds: float, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with StandIn(delay_seconds, port=port) as standin:
        print(f"{_READY_PREFIX}{standin.base_url}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.standin",
        description="An inference STAND-IN (not an engine): answers the OpenAI streaming chat API after a fixed "
        "delay with a fixed reply; 404 to everything else. Prints its URL on the first line.",
    )
    parser.add_argument("--delay-ms", type=float, default=500.0, help="delay before each reply (default: 500)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args()
    asyncio.run(serve(args.delay_ms / 1000, args.port))


if __name__ == "__main__":
    main()
