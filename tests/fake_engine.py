"""A FAKE inference engine, for faults the real llama.cpp server cannot be made to produce: HTTP 429
(TGI over max-concurrent-requests), 401, and errors that TGI sends inside a 200 stream. Everything else
is tested against the real llama.cpp server.

It answers POST /v1/chat/completions with scripted responses, one per request, in order (then `then`, if
given, to every later request), and 404 to anything else. Made with `held=True`, it also stands in for an
engine that is busy until the test says otherwise: requests are recorded as they arrive and answered only once
`release()` was called, so that a backlog can build behind them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Scripted:
    status: int = 200
    body: object | None = None  # JSON body for a plain response
    events: list[object] = field(default_factory=list)  # SSE `data:` payloads for a 200 stream
    delay_seconds: float = 0.0  # before answering: a slow stand-in for an engine busy past the job's deadline


def delta(text: str, finish_reason: str | None = None) -> dict[str, object]:
    return {
        "id": "fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "system_fingerprint": "fake",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
    }


def text_deltas(text: str) -> list[object]:
    words = text.split(" ")
    return [delta(w if i == 0 else " " + w) for i, w in enumerate(words)]


def reply_stream(text: str) -> Scripted:
    return Scripted(events=[*text_deltas(text), delta("", "stop"), "[DONE]"])


def overloaded() -> Scripted:
    """TGI's answer over its max concurrent requests."""
    return Scripted(status=429, body={"error": "Model is overloaded", "error_type": "overloaded"})


def broken_stream(text: str, error: str, error_type: str) -> Scripted:
    """A 200 stream that sends `text` as deltas and then an error event, as TGI does when generation fails
    after it began (e.g. error_type "generation" for a CUDA OOM, "overloaded")."""
    return Scripted(events=[*text_deltas(text), {"error": error, "error_type": error_type}])


EXHAUSTED = Scripted(status=500, body={"error": "script exhausted"})


class FakeEngine:
    def __init__(self, script: list[Scripted], then: Scripted | None = None, *, held: bool = False) -> None:
        self.script = list(script)
        self.then = then
        self.requests: list[dict[str, object]] = []  # chat requests, in the order they arrived
        self._server: asyncio.Server | None = None
        self._released = asyncio.Event()
        if not held:
            self._released.set()

    def release(self) -> None:
        """Every chat request held so far, and every later one, is answered."""
        self._released.set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> FakeEngine:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        body = json.loads(await reader.readexactly(length)) if length else {}
        if not head.startswith(b"POST /v1/chat/completions "):
            response = Scripted(status=404, body={"error": "not found"})  # e.g. the worker probing /tokenize
        else:
            self.requests.append(body)
            await self._released.wait()
            response = self.script.pop(0) if self.script else self.then or EXHAUSTED
        await asyncio.sleep(response.delay_seconds)
        if response.events:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for event in response.events:
                payload = event if isinstance(event, str) else json.dumps(event)
                writer.write(f"data: {payload}\n\n".encode())
                await writer.drain()
        else:
            body = json.dumps(response.body).encode()
            writer.write(
                f"HTTP/1.1 {response.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        await writer.drain()
        writer.close()
