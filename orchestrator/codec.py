"""Payloads private at rest: every payload Temporal stores (job input, results, activity arguments, heartbeats,
signals, updates, queries, memos, failure messages and stack traces) is encrypted with AES-256-GCM before it
leaves this process, under keys from a keys file that Temporal never sees.

Keys file, one key a line: `<key-id> <base64 of 32 bytes>`; blank lines and `#` comments are ignored. The first
key encrypts, every key decrypts, so a key is rotated by putting a new line first and keeping the old ones for as
long as histories written under them are kept.

Wire format (pinned: a codec in another language must produce and accept exactly this):

- the encoded payload's metadata: `encoding: binary/encrypted` and `encryption-key-id: <key id>` (UTF-8);
- its data: `nonce || ciphertext || tag`, where nonce is 12 random bytes, the 16-byte GCM tag follows the
  ciphertext (as AES-GCM libraries return and take it), and the plaintext is the original
  `temporal.api.common.v1.Payload` protobuf, serialized (metadata and data together);
- AES-256-GCM with no associated data.

Decoding leaves payloads without `encoding: binary/encrypted` as they are: histories written before encryption
was turned on stay readable."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter, PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from workflows.models import ENCRYPTED_ENCODING as ENCODING
from workflows.models import KEY_ID_METADATA

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
KEY_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ -"


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file, the line at fault and why, never key material."""


class DecryptionError(ValueError):
    """A payload marked encrypted could not be decrypted; the message names the key id, never payload data."""


class UnknownKeyId(DecryptionError):
    """The payload was encrypted under a key id this key ring does not have."""

    def __init__(self, key_id: str, known: Sequence[str]) -> None:
        super().__init__(
            f"payload was encrypted under key id {key_id!r}, which is not in the keys file "
            f"(it has {', '.join(map(repr, known))}): add that key back to decrypt it"
        )
        self.key_id = key_id


class TamperedPayload(DecryptionError):
    """The GCM tag did not verify: the data was altered, or the key under that id is not the one used."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"payload encrypted under key id {key_id!r} failed authentication: its data was altered, "
            "or the key now under that id is not the one it was encrypted with"
        )
        self.key_id = key_id


def is_key_id(value: str) -> bool:
    return KEY_ID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True, repr=False)
class KeyRing:
    """Encryption keys by id, in order: the first encrypts, all decrypt. Neither repr nor str shows a key."""

    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        seen: set[str] = set()
        for key_id, key in self.keys:
            if not is_key_id(key_id):
                raise ValueError(f"key id must be {KEY_ID_RULE}")
            if key_id in seen:
                raise ValueError(f"key id {key_id!r} appears twice")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} is {len(key)} bytes, must be {KEY_BYTES} (AES-256)")
            seen.add(key_id)

    @classmethod
    def of(cls, *keys: tuple[str, bytes]) -> KeyRing:
        """`KeyRing.of(("new", key_b), ("old", key_a))`: "new" encrypts, both decrypt."""
        return cls(tuple(keys))

    @property
    def encrypting(self) -> str:
        """The id of the key new payloads are encrypted under."""
        return self.keys[0][0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id for key_id, _ in self.keys)

    def key(self, key_id: str) -> bytes:
        for known, key in self.keys:
            if known == key_id:
                return key
        raise UnknownKeyId(key_id, self.ids)

    def __repr__(self) -> str:
        return f"KeyRing(encrypting={self.encrypting!r}, ids={list(self.ids)!r})"

    __str__ = __repr__


def parse_keys(text: str, source: str) -> KeyRing:
    """The key ring in a keys file's text; `source` (the file's name) prefixes every error with its line number."""
    keys: list[tuple[str, bytes]] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, key = _key_line(line, f"{source}:{number}", first_line)
        first_line[key_id] = number
        keys.append((key_id, key))
    if not keys:
        raise KeysFileError(f"{source}: no keys (expected lines '<key-id> <base64 of {KEY_BYTES} bytes>')")
    return KeyRing(tuple(keys))


def _key_line(line: str, where: str, first_line: dict[str, int]) -> tuple[str, bytes]:
    # Messages describe what is wrong and never quote a field: a misplaced key would otherwise be printed.
    fields = line.split()
    if len(fields) != 2:
        raise KeysFileError(
            f"{where}: expected '<key-id> <base64 of {KEY_BYTES} bytes>' separated by a space, "
            f"found {len(fields)} field(s)"
        )
    key_id, encoded = fields
    if not is_key_id(key_id):
        raise KeysFileError(f"{where}: the key id is not {KEY_ID_RULE}")
    if key_id in first_line:
        raise KeysFileError(f"{where}: key id {key_id!r} was already used on line {first_line[key_id]}")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise KeysFileError(f"{where}: key {key_id!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeysFileError(f"{where}: key {key_id!r} is {len(key)} bytes, must be {KEY_BYTES} (AES-256)")
    return key_id, key


def read_keys(path: Path) -> KeyRing:
    """The key ring in the keys file at `path`; KeysFileError names the file and line of any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise KeysFileError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise KeysFileError(f"{path}: cannot read: {error.strerror or error}") from None
    return parse_keys(text, str(path))


def new_key_id(now: datetime | None = None) -> str:
    """`k-YYYYMMDD-<6 hex>`: sorts by date and does not collide with a key made the same day."""
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return f"k-{day}-{secrets.token_hex(3)}"


def new_key_line(key_id: str | None = None) -> str:
    """A keys-file line with a fresh random key: `<id> <base64 of 32 bytes>`."""
    key_id = key_id if key_id is not None else new_key_id()
    if not is_key_id(key_id):
        raise ValueError(f"key id must be {KEY_ID_RULE}")
    return f"{key_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode('ascii')}"


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec; the wire format is in this module's docstring.

    `keep_undecryptable` is for workers: a payload this key ring cannot decrypt is handed on still encrypted
    instead of failing the whole workflow task (which Temporal would retry forever), so the workflow can fail
    the job with `InvalidJob` naming the key id."""

    def __init__(self, keys: KeyRing, keep_undecryptable: bool = False) -> None:
        self.keys = keys
        self.keep_undecryptable = keep_undecryptable
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys}

    def __repr__(self) -> str:
        return f"EncryptionCodec({self.keys!r})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encrypted(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decrypted(payloads)

    def encrypted(self, payloads: Iterable[Payload]) -> list[Payload]:
        key_id = self.keys.encrypting
        cipher = self._ciphers[key_id]
        return [self._encrypted(payload, key_id, cipher) for payload in payloads]

    def decrypted(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self._decrypted_or_kept(payload) if is_encrypted(payload) else payload for payload in payloads]

    def _decrypted_or_kept(self, payload: Payload) -> Payload:
        try:
            return self._decrypted(payload)
        except DecryptionError:
            if self.keep_undecryptable:
                return payload
            raise

    @staticmethod
    def _encrypted(payload: Payload, key_id: str, cipher: AESGCM) -> Payload:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + cipher.encrypt(nonce, payload.SerializeToString(), None),
        )

    def _decrypted(self, payload: Payload) -> Payload:
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if raw_id is None:
            raise DecryptionError(f"encrypted payload has no {KEY_ID_METADATA!r} metadata")
        key_id = raw_id.decode("utf-8", errors="replace")
        if not is_key_id(key_id):
            raise DecryptionError(f"encrypted payload's {KEY_ID_METADATA!r} is not a key id ({KEY_ID_RULE})")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyId(key_id, self.keys.ids)
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError(f"payload encrypted under key id {key_id!r} is too short to be encrypted data")
        try:
            plaintext = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise TamperedPayload(key_id) from None
        try:
            return Payload.FromString(plaintext)
        except DecodeError:
            raise DecryptionError(f"payload decrypted under key id {key_id!r} is not a Temporal Payload") from None


_type_adapters = functools.lru_cache(maxsize=1024)(TypeAdapter)


class PayloadConverter(PydanticPayloadConverter):
    """Temporal's pydantic payload converter (the same JSON on the wire) with one TypeAdapter per type for the
    process. The SDK builds a payload converter for every workflow run, in its sandbox, and each built its own
    TypeAdapters: five per job again (Prepared, GenerateResult, Verdict, the stream's PublishInput, Any), ~3.8 ms
    of the worker's CPU."""

    def __init__(self) -> None:
        super().__init__()
        for converter in self.converters.values():
            if isinstance(converter, PydanticJSONPlainPayloadConverter):
                converter._type_adapter = _type_adapters  # its cache of TypeAdapters (temporalio 1.35)


PYDANTIC_DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)


def data_converter(keys: KeyRing | None = None) -> DataConverter:
    """The converter for clients and workers: the project's pydantic JSON converter, and with keys, the same with
    every payload encrypted and failure messages and stack traces moved into an encrypted payload (what Temporal
    shows as the message is then "Encoded failure"; the error type stays visible)."""
    if keys is None:
        return PYDANTIC_DATA_CONVERTER
    return dataclasses.replace(
        PYDANTIC_DATA_CONVERTER,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
