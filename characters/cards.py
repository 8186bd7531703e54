"""Character Cards as the roleplay world has them: V1 (TavernAI: six top-level strings, no `spec`), V2
(`chara_card_v2`) and V3 (`chara_card_v3`), in PNG files (base64 JSON in a `tEXt` chunk: `chara`, and `ccv3`
for V3) or in JSON files.

Import takes cards as they are found in the wild: a `ccv3` chunk wins over `chara`; a field a spec calls
required may be missing; unknown `extensions` keys are kept; CRLF becomes LF; text is otherwise kept as the
card has it (no macro is filled, examples stay where the card put them). Export writes V2/V3 JSON and V2/V3
PNG (a V3 PNG carries both chunks), so a character goes to SillyTavern and back unchanged. The profile's own
fields, which no card spec has, travel in `extensions.chat_worker`.

Parsing and writing are pure (bytes in, bytes out); only `read_card` touches the file system."""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydantic import ValidationError

from characters.base import describe_validation_error
from characters.profile import OWN_EXTENSION, OWN_FIELDS, BookEntry, Character, CharacterBook

CardSpec = Literal["v1", "v2", "v3"]
CardFormat = Literal["v2-json", "v3-json", "v2-png", "v3-png"]
CARD_FORMATS: tuple[CardFormat, ...] = ("v2-json", "v3-json", "v2-png", "v3-png")

SPECS: dict[str, CardSpec] = {"chara_card_v2": "v2", "chara_card_v3": "v3"}
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
V2_FIELDS = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "alternate_greetings",
    "character_book",
    "tags",
    "creator",
    "character_version",
    "extensions",
)
# Where SillyTavern's cards keep the profile's `talkativeness`.
TALKATIVENESS = "talkativeness"
V3_FIELDS = (
    *V2_FIELDS,
    "nickname",
    "group_only_greetings",
    "assets",
    "source",
    "creator_notes_multilingual",
    "creation_date",
    "modification_date",
)
# Text fields (of the profile, the book and its entries) that some writers fill with a number, and lists
# that some give as one string: tags "a, b", keys "x, y", a lone greeting.
_TEXTS = frozenset(
    {"name", "nickname", "description", "personality", "scenario", "first_mes", "mes_example", "creator_notes"}
    | {"system_prompt", "post_history_instructions", "creator", "character_version", "content", "comment"}
)
_COMMA_LISTS = frozenset({"tags", "keys", "secondary_keys"})
_LISTS = frozenset({"alternate_greetings", "group_only_greetings", "source"}) | _COMMA_LISTS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CARD_BYTES = 64 * 1024 * 1024
PLACEHOLDER_SIZE = (400, 600)  # SillyTavern's avatar proportions
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})


class CardError(ValueError):
    """Not a character card that can be read; the message says what is wrong."""


@dataclass(frozen=True)
class ImportedCard:
    character: Character
    spec: CardSpec  # the format actually read


# Import ---------------------------------------------------------------------------------------------


def parse_card(data: bytes) -> ImportedCard:
    """A PNG or JSON card's profile."""
    if data.startswith(PNG_SIGNATURE):
        return parse_png_card(data)
    if data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] not in (b"{", b"["):
        raise CardError("not a character card: neither a PNG image nor a JSON file")
    return card_from_json(json_value(data, "the JSON file"))


def parse_png_card(data: bytes) -> ImportedCard:
    chunks = png_text_chunks(data)
    for key in ("ccv3", "chara"):
        if key in chunks:
            return card_from_json(json_value(chunk_bytes(key, chunks[key]), f"the PNG's '{key}' chunk"))
    raise CardError("not a character card: the PNG has no 'chara' or 'ccv3' text chunk")


def png_text_chunks(data: bytes) -> dict[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                # Reading `text` loads the image: a card's chunk often comes after the pixel data.
                return {str(key): str(value) for key, value in image.text.items()}
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise CardError(f"not a readable PNG image: {error}") from None


def chunk_bytes(key: str, value: str) -> bytes:
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise CardError(f"bad base64 in the PNG's '{key}' chunk: {error}") from None


def json_value(data: bytes, where: str) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CardError(f"{where} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CardError(f"bad JSON in {where}: {error}") from None


def card_from_json(card: Any) -> ImportedCard:
    """The profile in a parsed card (a V1, V2 or V3 object)."""
    if not isinstance(card, dict):
        raise CardError(f"not a character card: the JSON is a {type(card).__name__}, not an object")
    spec, fields = card_fields(without_crlf(card))
    return ImportedCard(character_from_card_fields(fields), spec)


def card_fields(card: dict[str, Any]) -> tuple[CardSpec, dict[str, Any]]:
    spec, data = card.get("spec"), card.get("data")
    if spec in SPECS and isinstance(data, dict):
        # Writers mirror the V1 fields at the top level; `data` wins, the mirror fills what `data` lacks.
        return SPECS[spec], {**{key: card[key] for key in V1_FIELDS if key in card}, **data}
    if isinstance(spec, str) and spec.strip() and spec not in SPECS:
        raise CardError(f"not a character card: spec {spec!r} (readable: V1, chara_card_v2, chara_card_v3)")
    return "v1", card


def character_from_card_fields(fields: dict[str, Any]) -> Character:
    values = lenient(fields, V3_FIELDS)
    if "character_book" in values and isinstance(values["character_book"], dict):
        values["character_book"] = lenient_book(values["character_book"])
    if isinstance(values.get("extensions"), dict):
        own, values["extensions"] = split_own_fields(values["extensions"])
        values.update(own)
        talkativeness = talkativeness_of(values["extensions"].pop(TALKATIVENESS, None))
        if talkativeness is not None:
            values["talkativeness"] = talkativeness
    if not str(values.get("name", "")).strip():
        raise CardError("not a character card: it has no name")
    try:
        return Character.model_validate(values)
    except ValidationError as error:
        raise CardError(f"bad card field: {describe_validation_error(error)}") from None


def talkativeness_of(value: Any) -> float | None:
    """SillyTavern's `extensions.talkativeness` (written as a string, "0.5"), when it is a number from 0 to 1."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= 1 else None


def lenient(fields: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """The known fields, with what cards in the wild get wrong put right: null means missing, a number
    where text belongs becomes text, one string where a list belongs becomes a list."""
    values: dict[str, Any] = {}
    for key in known:
        value = fields.get(key)
        if value is None:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool) and key in _TEXTS:
            value = str(value)
        if isinstance(value, str) and key in _LISTS:
            parts = value.split(",") if key in _COMMA_LISTS else [value]
            value = [part.strip() for part in parts if part.strip()]
        if isinstance(value, list) and key in _LISTS:
            value = [item for item in value if item is not None]
        values[key] = value
    return values


def lenient_book(book: dict[str, Any]) -> dict[str, Any]:
    values = lenient(book, tuple(CharacterBook.model_fields))
    entries = values.get("entries", [])
    if isinstance(entries, dict):  # some writers key entries by id
        entries = list(entries.values())
    if isinstance(entries, list):
        entries = [lenient(e, tuple(BookEntry.model_fields)) if isinstance(e, dict) else e for e in entries]
    values["entries"] = entries
    return values


def split_own_fields(extensions: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The profile's own fields from `extensions.chat_worker`, and the extensions without them (any other key
    of `chat_worker` stays)."""
    ours = extensions.get(OWN_EXTENSION)
    if not isinstance(ours, dict):
        return {}, extensions
    own = {field: ours[field] for field in OWN_FIELDS if field in ours}
    left = {key: value for key, value in ours.items() if key not in OWN_FIELDS}
    rest = {key: value for key, value in extensions.items() if key != OWN_EXTENSION}
    return own, ({**rest, OWN_EXTENSION: left} if left else rest)


def without_crlf(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\r\n", "\n")
    if isinstance(value, list):
        return [without_crlf(item) for item in value]
    if isinstance(value, dict):
        return {key: without_crlf(item) for key, item in value.items()}
    return value


def read_card(path: Path) -> ImportedCard:
    """The card in a PNG or JSON file; every problem, the file's own included, is a CardError naming it."""
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise CardError(f"{path}: larger than {MAX_CARD_BYTES // 2**20} MiB, too large for a character card")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CardError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CardError(f"{path}: is a directory, not a card file") from None
    except OSError as error:
        raise CardError(f"{path}: cannot read it: {error.strerror or error}") from None
    try:
        return parse_card(data)
    except CardError as error:
        raise CardError(f"{path}: {error}") from None


# Export ---------------------------------------------------------------------------------------------


def card_v2(character: Character) -> dict[str, Any]:
    # The V1 mirror at the top level is what SillyTavern writes, for readers that predate V2.
    data = card_data(character, V2_FIELDS)
    return {
        **{key: data[key] for key in V1_FIELDS},
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": data,
    }


def card_v3(character: Character) -> dict[str, Any]:
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": card_data(character, V3_FIELDS)}


def card_data(character: Character, fields: tuple[str, ...]) -> dict[str, Any]:
    data = character.model_dump(mode="json", include=set(fields), exclude_none=True)
    if data.get("nickname") == "":  # V3: a nickname is a string or absent
        del data["nickname"]
    if character.talkativeness != Character.model_fields["talkativeness"].default:
        data["extensions"][TALKATIVENESS] = character.talkativeness
    own = {field: getattr(character, field) for field in OWN_FIELDS if getattr(character, field)}
    if own:
        ours = data["extensions"].get(OWN_EXTENSION)
        data["extensions"][OWN_EXTENSION] = {**(ours if isinstance(ours, dict) else {}), **own}
    return data


def export_card(character: Character, card_format: CardFormat, image: bytes | None = None) -> bytes:
    """The character as a card file's bytes. PNG formats embed the card in `image` (any image Pillow reads;
    a plain placeholder when None); "v3-png" writes both chunks, `chara` (V2) for older readers and `ccv3`."""
    if card_format == "v2-json":
        return json_bytes(card_v2(character))
    if card_format == "v3-json":
        return json_bytes(card_v3(character))
    chunks = {"chara": card_v2(character)} | ({"ccv3": card_v3(character)} if card_format == "v3-png" else {})
    return png_with_chunks(image, chunks)


def json_bytes(card: dict[str, Any]) -> bytes:
    return json.dumps(card, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def png_with_chunks(image: bytes | None, chunks: dict[str, dict[str, Any]]) -> bytes:
    info = PngInfo()
    for key, card in chunks.items():
        info.add_text(key, base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8")).decode("ascii"))
    picture = Image.new("RGB", PLACEHOLDER_SIZE, (58, 52, 72)) if image is None else opened_image(image)
    out = io.BytesIO()
    # Only `info`'s text chunks are written: a card already in `image` is replaced, not doubled.
    picture.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def opened_image(image: bytes) -> Image.Image:
    try:
        picture = Image.open(io.BytesIO(image))
        picture.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CardError(f"not a readable image: {error}") from None
    return picture if picture.mode in _PNG_MODES else picture.convert("RGBA")
