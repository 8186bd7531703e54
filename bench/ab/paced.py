"""A paced stand-in (bench/ab/cost.py --paced): the first chunk after --ttft-ms, then one word a chunk every
--token-ms, up to --tokens chunks (or the request's max_tokens).
Prints 'stand-in listening on URL' first. Reuses bench.standin's server and stats."""

import argparse
import asyncio
import signal
import time
from typing import Any

from bench.standin import StandIn, StandInRequest, marker_in, reply_events


class Paced(StandIn):
    def __init__(self, ttft: float, token: float, tokens: int) -> None:
        super().__init__(ttft)
        self.token = token
        words = [f"word{i}" for i in range(tokens)]
        self._chunks = [reply_events(w)[0] if i == 0 else reply_events(" " + w)[0] for i, w in enumerate(words)]
        tail = reply_events("x")
        self._tail = tail[-2:]

    async def _chat(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        arrived = time.monotonic()
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            await asyncio.sleep(self.delay_seconds)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            n = int(body.get("max_tokens") or len(self._chunks))
            for i, chunk in enumerate(self._chunks[:n]):
                if i:
                    await asyncio.sleep(self.token)
                writer.write(f"data: {chunk}\n\n".encode())
                await writer.drain()
            writer.write(b"".join(f"data: {e}\n\n".encode() for e in self._tail))
            await writer.drain()
        finally:
            self._in_flight -= 1
            self._requests.append(StandInRequest(marker=marker_in(body), arrived=arrived, finished=time.monotonic()))


async def serve(args) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Paced(args.ttft_ms / 1000, args.token_ms / 1000, args.tokens) as s:
        print(f"stand-in listening on {s.base_url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--ttft-ms", type=float, default=50)
    p.add_argument("--token-ms", type=float, default=15)
    p.add_argument("--tokens", type=int, default=1000)
    asyncio.run(serve(p.parse_args()))
