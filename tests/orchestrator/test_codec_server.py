"""The codec server through a real uvicorn on 127.0.0.1 and a real HTTP client, spoken to as the Temporal UI and
CLI do: Payloads as protobuf JSON, X-Namespace, CORS for the UI's origin only, a bearer token when configured."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from orchestrator.codec import EncryptionCodec, KeyRing
from orchestrator.codec_server import MAX_BODY_BYTES, CodecServerError, codec_app, codec_server_running
from tests.helpers import job

PHRASE = "the lighthouse keeper hums in violet"
UI_ORIGIN = "http://127.0.0.1:8233"
TOKEN = "codec-test-token"
KEYS = KeyRing.of(("k-server", bytes(range(32))))
CODEC = EncryptionCodec(KEYS)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def request(
    base_url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    def call() -> Answer:
        parts = urlsplit(base_url)
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    return await asyncio.to_thread(call)


def ui_headers(**more: str) -> dict[str, str]:
    """What the Temporal UI's fetch sends (src/lib/services/data-encoder.ts), plus our token."""
    return {
        "Content-Type": "application/json",
        "X-Namespace": "default",
        "Origin": UI_ORIGIN,
        "Authorization": f"Bearer {TOKEN}",
        **more,
    }


def body_of(payloads: list[Payload]) -> bytes:
    return json.dumps({"payloads": [json_format.MessageToDict(p) for p in payloads]}).encode()


def payloads_in(answer: Answer) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in answer.json()["payloads"]]


def job_payloads() -> list[Payload]:
    secret = job(messages=[{"role": "user", "content": f"Whisper it: {PHRASE}."}])
    return pydantic_data_converter.payload_converter.to_payloads([secret, 42])


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[str]:
    async with codec_server_running(KEYS, port=0, cors_origins=[UI_ORIGIN], token=TOKEN) as url:
        yield url


async def test_decode_as_the_ui_asks(server: str) -> None:
    original = job_payloads()
    encrypted = await CODEC.encode(original)
    answer = await request(server, "POST", "/decode?preserveStorageRefs=true", body_of(encrypted), ui_headers())
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert payloads_in(answer) == original
    assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
    assert answer.headers["access-control-allow-credentials"] == "true"


async def test_encode_then_decode_under_a_path_prefix(server: str) -> None:
    original = job_payloads()
    encoded = await request(server, "POST", "/default/encode", body_of(original), ui_headers())
    assert encoded.status == 200
    assert PHRASE.encode() not in encoded.body
    encrypted = payloads_in(encoded)
    assert [p.metadata["encoding"] for p in encrypted] == [b"binary/encrypted"] * 2
    assert [p.metadata["encryption-key-id"] for p in encrypted] == [b"k-server"] * 2
    assert await CODEC.decode(encrypted) == original

    decoded = await request(server, "POST", "/default/decode", body_of(encrypted), ui_headers())
    assert decoded.status == 200
    assert payloads_in(decoded) == original


async def test_decode_passes_unencrypted_payloads_and_empty_lists(server: str) -> None:
    plain = job_payloads()
    answer = await request(server, "POST", "/decode", body_of(plain), ui_headers())
    assert payloads_in(answer) == plain
    empty = await request(server, "POST", "/decode", b"{}", ui_headers())
    assert (empty.status, empty.json()) == (200, {"payloads": []})


async def test_preflight_from_the_ui_origin_is_allowed(server: str) -> None:
    preflight = {
        "Origin": UI_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    for path in ("/decode", "/encode"):
        answer = await request(server, "OPTIONS", path, headers=preflight)  # no token: preflights carry none
        assert answer.status == 200
        assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert "POST" in answer.headers["access-control-allow-methods"]
        allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
        assert {"content-type", "x-namespace", "authorization"} <= allowed


async def test_other_origins_get_no_cors_allowance(server: str) -> None:
    preflight = {
        "Origin": "http://evil.example:8233",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    answer = await request(server, "OPTIONS", "/decode", headers=preflight)
    assert "access-control-allow-origin" not in answer.headers
    posted = await request(
        server, "POST", "/decode", body_of(job_payloads()), ui_headers(Origin="http://evil.example:8233")
    )
    assert "access-control-allow-origin" not in posted.headers


async def test_the_token_is_required(server: str) -> None:
    body = body_of(await CODEC.encode(job_payloads()))
    headers = ui_headers()
    del headers["Authorization"]
    missing = await request(server, "POST", "/decode", body, headers)
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["access-control-allow-origin"] == UI_ORIGIN  # so the UI can tell why
    assert PHRASE.encode() not in missing.body
    wrong = await request(server, "POST", "/decode", body, ui_headers(Authorization=f"Bearer {TOKEN}x"))
    assert wrong.status == 401
    bare = await request(server, "POST", "/decode", body, ui_headers(Authorization=TOKEN))
    assert bare.status == 401
    right = await request(server, "POST", "/decode", body, ui_headers(Authorization=f"bearer {TOKEN}"))
    assert right.status == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json " + PHRASE.encode(), "body is not JSON"),
        (json.dumps([PHRASE]).encode(), '{"payloads": [...]}'),
        (json.dumps({"payloads": PHRASE}).encode(), '{"payloads": [...]}'),
        (json.dumps({"payloads": [{"data": "eA==", "note": PHRASE}]}).encode(), "payloads[0] is not a Payload"),
        (json.dumps({"payloads": [{"data": "eA=="}, PHRASE]}).encode(), "payloads[1] is not a Payload"),
        (json.dumps({"payloads": [{"metadata": {"encoding": 7}}]}).encode(), "payloads[0] is not a Payload"),
    ],
)
async def test_malformed_bodies_are_a_one_line_400(server: str, body: bytes, reason: str) -> None:
    answer = await request(server, "POST", "/decode", body, ui_headers())
    assert answer.status == 400
    text = answer.body.decode()
    assert reason in text and text.count("\n") == 1
    assert PHRASE not in text


async def test_a_body_over_the_limit_is_a_413(server: str) -> None:
    answer = await request(server, "POST", "/decode", b" " * (MAX_BODY_BYTES + 1), ui_headers())
    assert answer.status == 413 and str(MAX_BODY_BYTES) in answer.body.decode()


async def test_undecryptable_payloads_are_a_400_naming_the_key(server: str) -> None:
    foreign = await EncryptionCodec(KeyRing.of(("k-elsewhere", bytes(32)))).encode(job_payloads())
    unknown = await request(server, "POST", "/decode", body_of(foreign), ui_headers())
    assert unknown.status == 400 and "'k-elsewhere'" in unknown.body.decode()

    [encrypted] = await CODEC.encode(job_payloads()[:1])
    tampered = Payload(metadata=encrypted.metadata, data=encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1]))
    altered = await request(server, "POST", "/decode", body_of([tampered]), ui_headers())
    assert altered.status == 400 and "'k-server'" in altered.body.decode()


async def test_other_paths_and_health(server: str) -> None:
    assert (await request(server, "POST", "/download", b"{}", ui_headers())).status == 404
    health = await request(server, "GET", "/health")
    assert (health.status, health.body) == (200, b"ok\n")


async def test_without_a_token_no_authorization_is_needed() -> None:
    original = job_payloads()
    async with codec_server_running(KEYS, port=0, cors_origins=[UI_ORIGIN]) as url:
        answer = await request(url, "POST", "/decode", body_of(await CODEC.encode(original)))
    assert answer.status == 200
    assert payloads_in(answer) == original


async def test_leaving_the_block_stops_the_server() -> None:
    async with codec_server_running(KEYS, port=0) as url:
        assert (await request(url, "GET", "/health")).status == 200
    with pytest.raises(OSError):
        await request(url, "GET", "/health")


async def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CodecServerError, match=f"127.0.0.1:{port}"):
            async with codec_server_running(KEYS, port=port):
                pass


def test_configuration_is_checked() -> None:
    for origin in ("*", "http://127.0.0.1:8233/ui", "127.0.0.1:8233"):
        with pytest.raises(CodecServerError, match="CORS origin"):
            codec_app(KEYS, cors_origins=[origin])
    with pytest.raises(CodecServerError, match="token"):
        codec_app(KEYS, token="")
    codec_app(KEYS, cors_origins=["http://127.0.0.1:8233/"])  # a trailing slash is what people paste
