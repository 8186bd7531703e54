"""`keys new`, `codec-server`, and the refusals around keys, as an operator runs them: real subprocesses."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
from pathlib import Path

from temporalio.api.common.v1 import Payload

from orchestrator.codec import EncryptionCodec, parse_keys
from orchestrator.devstack import free_port
from tests.helpers import run, started


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_WORKER_")}
    return env | extra


def test_keys_new_prints_one_usable_line() -> None:
    done = run("keys", "new", "--id", "prod-2026.1", env=clean_env())
    assert done.returncode == 0 and done.stderr == ""
    key_id, key = done.stdout.split()
    assert key_id == "prod-2026.1" and len(base64.b64decode(key)) == 32
    ring = parse_keys(done.stdout, "stdout")
    assert ring.encrypting == "prod-2026.1"
    other = run("keys", "new", env=clean_env())
    assert other.stdout.split()[1] != key  # random each time
    assert other.stdout.startswith("k-")


def test_a_bad_key_id_is_one_error_line() -> None:
    done = run("keys", "new", "--id", "no spaces", env=clean_env())
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: keys new: argument --id: 'no spaces' is not a key id (1-64 characters of A-Z a-z 0-9 . _ -)"
    ]


def test_a_malformed_keys_file_stops_the_worker_naming_the_line_never_the_key(tmp_path: Path) -> None:
    good = run("keys", "new", "--id", "good", env=clean_env()).stdout
    secret = good.split()[1]
    keys = tmp_path / "keys"
    keys.write_text(f"# rotated 2026-11\n{good}bad-one {secret[:-8]}\n")
    env = clean_env(CHAT_WORKER_PAYLOAD_KEYS_FILE=str(keys), CHAT_WORKER_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    done = run("worker", env=env, timeout=60)
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert f"{keys}:3:" in line and secret not in done.stderr and secret[:-8] not in done.stderr


def test_without_keys_a_private_by_default_worker_refuses_to_start() -> None:
    env = clean_env(CHAT_WORKER_ALLOW_PLAINTEXT="0", CHAT_WORKER_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    done = run("worker", env=env, timeout=60)
    assert done.returncode == 1
    assert "CHAT_WORKER_PAYLOAD_KEYS_FILE is not set" in done.stderr and "CHAT_WORKER_ALLOW_PLAINTEXT=1" in done.stderr


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def test_the_codec_server_command_decodes_for_a_token_holder_and_stops_on_sigterm(tmp_path: Path) -> None:
    line = run("keys", "new", "--id", "ops", env=clean_env()).stdout
    keys, token = tmp_path / "keys", tmp_path / "token"
    keys.write_text(line)
    token.write_text("s3cret-token\n")
    port = free_port()
    env = clean_env(CHAT_WORKER_PAYLOAD_KEYS_FILE=str(keys))
    server = await started(
        "codec-server",
        "--port",
        str(port),
        "--cors-origin",
        "http://127.0.0.1:8233",
        "--token-file",
        str(token),
        env=env,
    )
    try:
        encrypted = EncryptionCodec(parse_keys(line, "test")).encrypted(
            [Payload(metadata={"encoding": b"json/plain"}, data=b'{"said": "a private thing"}')]
        )
        body = json.dumps(
            {
                "payloads": [
                    {
                        "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                        "data": base64.b64encode(p.data).decode(),
                    }
                    for p in encrypted
                ]
            }
        ).encode()
        for _ in range(100):  # until it listens
            try:
                status, _ = await asyncio.to_thread(post, port, "/decode", body, {"Content-Type": "application/json"})
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.1)
        assert status == 401
        headers = {"Content-Type": "application/json", "Authorization": "Bearer s3cret-token"}
        status, answer = await asyncio.to_thread(post, port, "/decode", body, headers)
        assert status == 200
        [decoded] = json.loads(answer)["payloads"]
        assert base64.b64decode(decoded["data"]) == b'{"said": "a private thing"}'
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(server.communicate(), timeout=30)
    assert server.returncode == 0, err.decode()
    assert b"s3cret-token" not in err and line.split()[1].encode() not in err


def test_no_help_shows_a_key(tmp_path: Path) -> None:
    line = run("keys", "new", env=clean_env()).stdout
    keys = tmp_path / "keys"
    keys.write_text(line)
    env = clean_env(CHAT_WORKER_PAYLOAD_KEYS_FILE=str(keys))
    for command in (["--help"], ["keys", "new", "--help"], ["codec-server", "--help"], ["worker", "--help"]):
        done = run(*command, env=env)
        assert done.returncode == 0 and done.stdout
        assert line.split()[1] not in done.stdout + done.stderr
