"""Card import: V1/V2/V3, PNG and JSON, as cards are found in the wild. The cards are made here."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from characters import CardError, Character, parse_card, read_card
from characters.cards import MAX_CARD_BYTES
from tests.characters.cardfiles import b64_json, full_v2_data, json_card, png, png_card, v1, v2, v3


@pytest.mark.parametrize("container", ["json", "png"])
def test_a_v1_card_is_six_top_level_strings(container: str) -> None:
    card = v1("Orrin", description="Keeps the light.", first_mes="Evening, {{user}}.")
    imported = parse_card(json_card(card) if container == "json" else png_card(chara=card))
    assert imported.spec == "v1"
    assert imported.character == Character(name="Orrin", description="Keeps the light.", first_mes="Evening, {{user}}.")


@pytest.mark.parametrize("container", ["json", "png"])
def test_a_v2_card_gives_every_field(container: str) -> None:
    data = full_v2_data()
    imported = parse_card(json_card(v2(data)) if container == "json" else png_card(chara=v2(data)))
    assert imported.spec == "v2"
    character = imported.character
    for field in ("description", "personality", "scenario", "first_mes", "mes_example", "creator_notes"):
        assert getattr(character, field) == data[field]
    assert character.system_prompt == "{{original}} Keep it short."
    assert character.post_history_instructions == "Stay as <BOT>."  # no macro is filled at import
    assert character.alternate_greetings == ["Back again, {{user}}?", "*silence*"]
    assert (character.tags, character.creator, character.character_version) == (["sea", "calm"], "tests", "2.1")
    assert character.extensions == data["extensions"]
    book = character.character_book
    assert book is not None and (book.name, book.scan_depth, book.token_budget) == ("Coast", 3, 200)
    assert book.extensions == {"sillytavern": {"x": 1}}
    [entry] = book.entries
    assert entry.model_dump(exclude_defaults=True) == {
        key: value for key, value in data["character_book"]["entries"][0].items() if key != "enabled"
    }


def test_a_v3_card_gives_its_own_fields() -> None:
    data = {
        **full_v2_data(),
        "nickname": "Orr",
        "group_only_greetings": ["Hello, all of you."],
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "source": ["https://example.org/orrin"],
        "creator_notes_multilingual": {"de": "Für Stürme."},
        "creation_date": 1700000000,
        "modification_date": 1700000100,
    }
    character = parse_card(png_card(ccv3=v3(data))).character
    assert (character.nickname, character.group_only_greetings) == ("Orr", ["Hello, all of you."])
    assert character.assets == data["assets"] and character.source == data["source"]
    assert character.creator_notes_multilingual == {"de": "Für Stürme."}
    assert (character.creation_date, character.modification_date) == (1700000000, 1700000100)


def test_when_both_chunks_exist_ccv3_wins() -> None:
    both = png_card(chara=v2({"name": "Old Orrin"}), ccv3=v3({"name": "Orrin", "nickname": "Orr"}))
    imported = parse_card(both)
    assert imported.spec == "v3" and imported.character.name == "Orrin" and imported.character.nickname == "Orr"
    # …whatever order the chunks are in the file.
    reordered = png({"ccv3": b64_json(v3({"name": "Orrin"})), "chara": b64_json(v2({"name": "Old Orrin"}))})
    assert parse_card(reordered).character.name == "Orrin"


def test_a_broken_ccv3_chunk_is_an_error_even_beside_a_good_chara() -> None:
    with pytest.raises(CardError, match="bad JSON in the PNG's 'ccv3' chunk"):
        parse_card(png({"chara": b64_json(v2({"name": "Orrin"})), "ccv3": base64.b64encode(b"{").decode()}))


def test_fields_a_spec_calls_required_may_be_missing() -> None:
    # Real V3 cards omit group_only_greetings; many omit extensions, tags, book fields.
    character = parse_card(
        json_card(v3({"name": "Orrin", "character_book": {"entries": [{"content": "x"}]}}))
    ).character
    assert character.group_only_greetings == [] and character.extensions == {} and character.tags == []
    [entry] = character.character_book.entries  # type: ignore[union-attr]
    assert (entry.keys, entry.secondary_keys, entry.enabled, entry.insertion_order) == ([], [], True, 100)
    assert (entry.constant, entry.selective, entry.position, entry.use_regex) == (False, False, "before_char", False)


def test_what_cards_in_the_wild_get_wrong_is_read_anyway() -> None:
    data = {
        "name": "Orrin",
        "tags": "sea, calm ,",  # one string instead of a list
        "creator": None,  # null instead of ""
        "character_version": 2,  # a number instead of text
        "alternate_greetings": "Only one greeting",
        "unknown_top_level_field": {"ignored": True},
        "character_book": {
            "entries": {"0": {"keys": "lamp, light", "content": "Old lamp.", "position": None, "enabled": None}},
        },
    }
    character = parse_card(json_card(v2(data))).character
    assert character.tags == ["sea", "calm"] and character.creator == "" and character.character_version == "2"
    assert character.alternate_greetings == ["Only one greeting"]
    [entry] = character.character_book.entries  # type: ignore[union-attr]
    assert (entry.keys, entry.position, entry.enabled) == (["lamp", "light"], "before_char", True)


def test_data_wins_over_the_v1_mirror_which_fills_what_data_lacks() -> None:
    card = {**v1("Mirror name", personality="from the mirror"), **v2({"name": "Orrin", "description": "from data"})}
    character = parse_card(json_card(card)).character
    assert (character.name, character.description, character.personality) == ("Orrin", "from data", "from the mirror")


def test_a_v2_spec_without_data_is_read_as_the_v1_card_it_is() -> None:
    imported = parse_card(json_card({**v1("Orrin"), "spec": "chara_card_v2"}))
    assert imported.spec == "v1" and imported.character.name == "Orrin"
    assert parse_card(json_card({**v1("Orrin"), "spec": ""})).spec == "v1"


def test_crlf_becomes_lf_everywhere_and_text_is_otherwise_kept() -> None:
    data = {
        "name": "Orrin",
        "description": "Line one. \r\n<START>\r\n{{user}}: hi\r\n{{char}}: hello ",
        "alternate_greetings": ["a\r\nb"],
        "character_book": {"entries": [{"keys": ["k"], "content": "c\r\nd"}]},
        "extensions": {"depth_prompt": {"prompt": "p\r\nq"}},
    }
    character = parse_card(json_card(v2(data))).character
    assert character.description == "Line one. \n<START>\n{{user}}: hi\n{{char}}: hello "
    assert character.mes_example == ""  # examples stay where the card put them
    assert character.alternate_greetings == ["a\nb"]
    assert character.character_book.entries[0].content == "c\nd"  # type: ignore[union-attr]
    assert character.extensions == {"depth_prompt": {"prompt": "p\nq"}}


def test_unknown_extensions_are_kept_as_they_are() -> None:
    extensions = {"chub": {"id": 1, "flags": [True, None, 2.5]}, "fav": False, "world": "Coast"}
    assert (
        parse_card(png_card(chara=v2({"name": "Orrin", "extensions": extensions}))).character.extensions == extensions
    )


def test_a_json_card_may_start_with_a_byte_order_mark() -> None:
    assert parse_card(b"\xef\xbb\xbf" + json_card(v1("Orrin"))).character.name == "Orrin"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"Just some text.", "not a character card: neither a PNG image nor a JSON file"),
        (b"\xff\xd8\xff\xe0 a JPEG", "neither a PNG image nor a JSON file"),
        (png({}), "not a character card: the PNG has no 'chara' or 'ccv3' text chunk"),
        (png({"Comment": "hello"}), "no 'chara' or 'ccv3' text chunk"),
        (png({"chara": "not base64 at all!"}), "bad base64 in the PNG's 'chara' chunk"),
        (png({"chara": base64.b64encode(b"{'name': 1}").decode()}), "bad JSON in the PNG's 'chara' chunk"),
        (png({"chara": base64.b64encode(b"\xff\xfe{}").decode()}), "the PNG's 'chara' chunk is not UTF-8"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable PNG image"),
        (b'{"name": "Orrin", ', "bad JSON in the JSON file"),
        (b"[1, 2]", "not a character card: the JSON is a list, not an object"),
        (json_card(v1("")), "not a character card: it has no name"),
        (json_card(v2({"description": "nameless"})), "it has no name"),
        (json_card({"spec": "lorebook_v3", "data": {"entries": []}}), "not a character card: spec 'lorebook_v3'"),
        (json_card(v2({"name": "Orrin", "tags": {"a": 1}})), "bad card field: tags: Input should be a valid list"),
        (json_card(v2({"name": "x" * 101})), "bad card field: name: String should have at most 100 characters"),
    ],
)
def test_what_is_not_a_card_is_one_clear_error(data: bytes, says: str) -> None:
    with pytest.raises(CardError) as error:
        parse_card(data)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_read_card_names_the_file_in_every_error(tmp_path: Path) -> None:
    with pytest.raises(CardError, match=r"missing\.png: no such file"):
        read_card(tmp_path / "missing.png")
    with pytest.raises(CardError, match="is a directory"):
        read_card(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CardError, match=r"notes\.txt: not a character card"):
        read_card(tmp_path / "notes.txt")
    (tmp_path / "orrin.json").write_bytes(json_card(v1("Orrin")))
    assert read_card(tmp_path / "orrin.json").character.name == "Orrin"


def test_a_file_too_large_for_a_card_is_not_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    with huge.open("wb") as file:
        file.truncate(MAX_CARD_BYTES + 1)  # sparse: no disk used
    with pytest.raises(CardError, match="too large for a character card"):
        read_card(huge)


def test_the_card_chunk_after_the_pixel_data_is_found() -> None:
    # Pillow writes text chunks before IDAT; SillyTavern and others write them after it. Move ours there.
    data = png_card(chara=v2({"name": "Orrin"}))
    chunks = split_chunks(data)
    text = [c for c in chunks if c[4:8] == b"tEXt"]
    rest = [c for c in chunks if c[4:8] != b"tEXt"]
    moved = data[:8] + b"".join(rest[:-1] + text + rest[-1:])  # …, IDAT, tEXt, IEND
    assert [c[4:8] for c in split_chunks(moved)][-2:] == [b"tEXt", b"IEND"]
    assert parse_card(moved).character.name == "Orrin"
    assert Image.open(io.BytesIO(moved)).size == (4, 6)


def split_chunks(data: bytes) -> list[bytes]:
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at : at + 12 + length])
        at += 12 + length
    return chunks
