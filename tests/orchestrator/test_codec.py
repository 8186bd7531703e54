"""Payload encryption: the pinned wire format (checked by an independent decryption here), key rotation, tamper
detection, keys-file errors that never show a key, and a real Temporal dev server storing only ciphertext."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orchestrator.codec import (
    PYDANTIC_DATA_CONVERTER,
    DecryptionError,
    EncryptionCodec,
    KeyRing,
    KeysFileError,
    PayloadConverter,
    TamperedPayload,
    UnknownKeyId,
    data_converter,
    new_key_line,
    parse_keys,
    read_keys,
)
from orchestrator.devstack import temporal_binary
from tests.helpers import job
from workflows.models import ChatJob

PHRASE = "the lighthouse keeper hums in violet"
KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def secret_job() -> ChatJob:
    return job(messages=[{"role": "user", "content": f"Whisper it: {PHRASE}."}])


def job_payloads() -> list[Payload]:
    return pydantic_data_converter.payload_converter.to_payloads([secret_job(), "and a plain string"])


async def test_round_trip_restores_the_converters_payloads() -> None:
    codec = EncryptionCodec(KeyRing.of(("a", KEY_A)))
    original = job_payloads()
    encrypted = await codec.encode(original)
    assert await codec.decode(encrypted) == original
    [decoded_job, text] = pydantic_data_converter.payload_converter.from_payloads(
        await codec.decode(encrypted), [ChatJob, str]
    )
    assert decoded_job == ChatJob.model_validate_json(original[0].data) and text == "and a plain string"


async def test_encrypted_payloads_carry_the_pinned_metadata_and_no_plaintext() -> None:
    [encrypted] = await EncryptionCodec(KeyRing.of(("k-1", KEY_A))).encode(job_payloads()[:1])
    assert dict(encrypted.metadata) == {"encoding": b"binary/encrypted", "encryption-key-id": b"k-1"}
    assert PHRASE.encode() not in encrypted.SerializeToString()
    assert b"json/plain" not in encrypted.data


async def test_the_wire_format_decrypts_independently() -> None:
    """What another language's codec does: split the nonce, AES-256-GCM without associated data, parse Payload."""
    original = job_payloads()[0]
    [encrypted] = await EncryptionCodec(KeyRing.of(("k-1", KEY_A))).encode([original])
    nonce, sealed = encrypted.data[:12], encrypted.data[12:]
    assert len(sealed) == len(original.SerializeToString()) + 16  # ciphertext, then the 16-byte tag
    assert Payload.FromString(AESGCM(KEY_A).decrypt(nonce, sealed, None)) == original


async def test_a_payload_encrypted_independently_decodes() -> None:
    original = job_payloads()[0]
    nonce = secrets.token_bytes(12)
    foreign = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"k-1"},
        data=nonce + AESGCM(KEY_A).encrypt(nonce, original.SerializeToString(), None),
    )
    assert await EncryptionCodec(KeyRing.of(("k-1", KEY_A))).decode([foreign]) == [original]


async def test_every_encoding_draws_a_fresh_nonce() -> None:
    codec = EncryptionCodec(KeyRing.of(("a", KEY_A)))
    payload = job_payloads()[0]
    [first] = await codec.encode([payload])
    [second] = await codec.encode([payload])
    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


async def test_unencrypted_payloads_pass_through_unchanged() -> None:
    plain = job_payloads()
    assert await EncryptionCodec(KeyRing.of(("a", KEY_A))).decode(plain) == plain


async def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    original = job_payloads()
    under_a = await EncryptionCodec(KeyRing.of(("A", KEY_A))).encode(original)

    rotated = EncryptionCodec(KeyRing.of(("B", KEY_B), ("A", KEY_A)))
    assert await rotated.decode(under_a) == original
    under_b = await rotated.encode(original)
    assert {p.metadata["encryption-key-id"] for p in under_b} == {b"B"}
    assert await rotated.decode(under_b) == original

    with pytest.raises(UnknownKeyId, match="'A'") as refused:
        await EncryptionCodec(KeyRing.of(("B", KEY_B))).decode(under_a)
    assert refused.value.key_id == "A"
    assert isinstance(refused.value, DecryptionError)


async def test_altered_data_fails_naming_the_key_id() -> None:
    codec = EncryptionCodec(KeyRing.of(("k-7", KEY_A)))
    [encrypted] = await codec.encode(job_payloads()[:1])
    altered = bytearray(encrypted.data)
    altered[20] ^= 0x01
    tampered = Payload(metadata=encrypted.metadata, data=bytes(altered))
    with pytest.raises(TamperedPayload, match="'k-7'") as failed:
        await codec.decode([tampered])
    assert failed.value.key_id == "k-7"


async def test_the_right_id_with_the_wrong_key_fails_authentication() -> None:
    [encrypted] = await EncryptionCodec(KeyRing.of(("k", KEY_A))).encode(job_payloads()[:1])
    with pytest.raises(TamperedPayload, match="'k'"):
        await EncryptionCodec(KeyRing.of(("k", KEY_B))).decode([encrypted])


async def test_encrypted_payload_without_key_id_or_too_short_is_refused() -> None:
    codec = EncryptionCodec(KeyRing.of(("a", KEY_A)))
    with pytest.raises(DecryptionError, match="encryption-key-id"):
        await codec.decode([Payload(metadata={"encoding": b"binary/encrypted"}, data=b"x" * 40)])
    with pytest.raises(DecryptionError, match="too short"):
        await codec.decode([Payload(metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"a"}, data=b"x")])


def test_keys_file_first_line_encrypts_all_decrypt(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026-01-02\n\nnew {b64(KEY_B)}\n  old {b64(KEY_A)}  \n# retired\n")
    ring = read_keys(path)
    assert ring.encrypting == "new"
    assert ring.ids == ("new", "old")
    assert ring.key("old") == KEY_A


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        (f"good {b64(KEY_A)}\nbad/id {b64(KEY_B)}\n", 2, "key id is not"),
        (f"# comment\n\nk1 {b64(KEY_B)[:-3]}!!!\n", 3, "not valid base64"),
        (f"k1 {b64(KEY_B[:16])}\n", 1, "is 16 bytes, must be 32"),
        (f"k1 {b64(KEY_A)}\nk2 {b64(KEY_A)}\nk1 {b64(KEY_B)}\n", 3, "already used on line 1"),
        (f"{b64(KEY_B)}\n", 1, "found 1 field"),
        (f"k1 {b64(KEY_B)} extra\n", 1, "found 3 field"),
        (f"{b64(KEY_B)} k1\n", 1, "key id is not"),  # swapped: the key must not be quoted as a bad id
    ],
)
def test_keys_file_errors_name_the_line_and_never_the_key(tmp_path: Path, text: str, line: int, why: str) -> None:
    path = tmp_path / "chat.keys"
    path.write_text(text)
    with pytest.raises(KeysFileError) as refused:
        read_keys(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:{line}: ")
    assert why in message
    for key in (KEY_A, KEY_B, KEY_B[:16]):
        assert b64(key) not in message and b64(key)[:12] not in message


def test_keys_file_without_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.keys"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(KeysFileError, match="no keys"):
        read_keys(path)
    with pytest.raises(KeysFileError, match="cannot read"):
        read_keys(tmp_path / "missing.keys")


def test_key_ring_repr_and_str_hide_the_keys() -> None:
    ring = parse_keys(f"a {b64(KEY_A)}\nb {b64(KEY_B)}\n", "inline")
    for shown in (repr(ring), str(ring), repr(EncryptionCodec(ring)), f"{ring}"):
        assert "'a'" in shown and "'b'" in shown
        for key in (KEY_A, KEY_B):
            assert b64(key) not in shown and repr(key) not in shown and key.hex() not in shown


def test_key_ring_refuses_bad_keys_without_showing_them() -> None:
    with pytest.raises(ValueError, match="must be 32") as refused:
        KeyRing.of(("a", KEY_A[:31]))
    assert repr(KEY_A[:31]) not in str(refused.value)
    with pytest.raises(ValueError, match="twice"):
        KeyRing.of(("a", KEY_A), ("a", KEY_B))
    with pytest.raises(ValueError, match="at least one"):
        KeyRing.of()


def test_new_key_line_parses_back() -> None:
    line = new_key_line()
    ring = parse_keys(line, "generated")
    assert ring.encrypting.startswith("k-") and len(ring.key(ring.encrypting)) == 32
    assert parse_keys(new_key_line("prod-2026.1"), "generated").encrypting == "prod-2026.1"
    assert new_key_line("x").split()[1] != new_key_line("x").split()[1]
    with pytest.raises(ValueError, match="key id"):
        new_key_line("has space")


def test_data_converter_without_keys_is_the_projects_converter() -> None:
    assert data_converter(None) is PYDANTIC_DATA_CONVERTER
    assert PYDANTIC_DATA_CONVERTER.payload_converter_class is PayloadConverter


def test_payload_converters_share_their_type_adapters_and_write_the_sdks_json() -> None:
    # The SDK builds a payload converter per workflow run: a TypeAdapter per type and converter was built per job.
    job = secret_job()
    ours = PayloadConverter().to_payloads([job])
    assert ours == pydantic_data_converter.payload_converter.to_payloads([job])
    PayloadConverter().from_payloads(ours, [ChatJob])
    built = []
    original = pydantic.TypeAdapter.__init__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydantic.TypeAdapter, "__init__", lambda *a, **kw: built.append(1) or original(*a, **kw))
        for _ in range(3):
            assert PayloadConverter().from_payloads(ours, [ChatJob]) == [job]
    assert built == []


def test_data_converter_with_keys_encrypts_payloads_and_failures() -> None:
    converter = data_converter(KeyRing.of(("a", KEY_A)))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    assert converter.payload_converter_class is PayloadConverter
    assert PYDANTIC_DATA_CONVERTER.payload_codec is None  # the shared converter is left alone


# A real Temporal dev server: what it stores is what an operator (or a leaked backup) sees.


@workflow.defn(sandboxed=False)
class WhisperWorkflow:
    @workflow.run
    async def run(self, job: ChatJob) -> str:
        content = job.messages[-1].content
        if job.user_name == "Refuser":
            raise ApplicationError(f"refused: {content}", type="Refused", non_retryable=True) from ValueError(content)
        return content.upper()


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()), data_converter=data_converter(KeyRing.of(("k-test", KEY_A)))
    ) as env:
        yield env


def plain_client(env: WorkflowEnvironment) -> Client:
    """A client without the keys: it sees what Temporal stores."""
    return Client(env.client.service_client, namespace=env.client.namespace, data_converter=pydantic_data_converter)


async def stored_history(env: WorkflowEnvironment, workflow_id: str) -> bytes:
    history = await plain_client(env).get_workflow_handle(workflow_id).fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


async def test_temporal_stores_only_ciphertext(temporal: WorkflowEnvironment) -> None:
    task_queue, workflow_id = f"codec-{uuid.uuid4().hex[:8]}", f"whisper-{uuid.uuid4().hex[:8]}"
    async with Worker(temporal.client, task_queue=task_queue, workflows=[WhisperWorkflow]):
        result = await temporal.client.execute_workflow(
            WhisperWorkflow.run,
            secret_job(),
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )
    assert PHRASE.upper() in result

    history = await plain_client(temporal).get_workflow_handle(workflow_id).fetch_history()
    [started] = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
    [stored_input] = started.workflow_execution_started_event_attributes.input.payloads
    assert stored_input.metadata["encoding"] == b"binary/encrypted"
    assert stored_input.metadata["encryption-key-id"] == b"k-test"
    everything = await stored_history(temporal, workflow_id)
    assert PHRASE.encode() not in everything and PHRASE.upper().encode() not in everything


async def test_temporal_stores_failure_messages_encoded(temporal: WorkflowEnvironment) -> None:
    task_queue, workflow_id = f"codec-{uuid.uuid4().hex[:8]}", f"refuse-{uuid.uuid4().hex[:8]}"
    async with Worker(temporal.client, task_queue=task_queue, workflows=[WhisperWorkflow]):
        handle = await temporal.client.start_workflow(
            WhisperWorkflow.run,
            secret_job().model_copy(update={"user_name": "Refuser"}),
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    # With the keys, the message and its cause read as raised.
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.message == f"refused: Whisper it: {PHRASE}."
    assert failed.value.cause.type == "Refused"

    history = await plain_client(temporal).get_workflow_handle(workflow_id).fetch_history()
    [ended] = [e for e in history.events if e.HasField("workflow_execution_failed_event_attributes")]
    failure = ended.workflow_execution_failed_event_attributes.failure
    assert failure.message == "Encoded failure"
    assert failure.application_failure_info.type == "Refused"  # the error type stays readable
    assert failure.encoded_attributes.metadata["encoding"] == b"binary/encrypted"
    assert PHRASE.encode() not in await stored_history(temporal, workflow_id)
