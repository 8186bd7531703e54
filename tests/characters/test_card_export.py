"""Card export, and import → export → import giving the same profile."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from characters import BookEntry, CardError, Character, CharacterBook, bundled_characters, export_card, parse_card
from characters.cards import CARD_FORMATS, PLACEHOLDER_SIZE, CardFormat
from tests.characters.cardfiles import full_v2_data, json_card, png_card, v2

# What a V2 card has no field for.
V3_ONLY = (
    "nickname",
    "group_only_greetings",
    "assets",
    "source",
    "creator_notes_multilingual",
    "creation_date",
    "modification_date",
)


def chunks(data: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as image:
        return {key: json.loads(base64.b64decode(value)) for key, value in image.text.items()}


def test_v2_json_is_what_sillytavern_reads() -> None:
    character = parse_card(json_card(v2(full_v2_data()))).character
    card = json.loads(export_card(character, "v2-json"))
    assert (card["spec"], card["spec_version"]) == ("chara_card_v2", "2.0")
    assert card["data"]["name"] == card["name"] == "Orrin"  # V1 mirror for old readers
    assert card["data"]["character_book"]["entries"][0]["keys"] == ["lamp", "light"]
    assert "case_sensitive" not in json.loads(export_card(Character(name="x", character_book=_book()), "v2-json"))


def _book() -> CharacterBook:
    return CharacterBook(entries=[BookEntry(keys=["k"], content="c")])


def test_a_v3_png_carries_both_chunks_and_a_v2_png_only_chara() -> None:
    character = Character(name="Orrin", nickname="Orr", group_only_greetings=["All of you!"])
    written = chunks(export_card(character, "v3-png"))
    assert set(written) == {"chara", "ccv3"}
    assert written["chara"]["spec"] == "chara_card_v2" and "nickname" not in written["chara"]["data"]
    assert written["ccv3"]["spec"] == "chara_card_v3" and written["ccv3"]["data"]["nickname"] == "Orr"
    assert set(chunks(export_card(character, "v2-png"))) == {"chara"}
    assert Image.open(io.BytesIO(export_card(character, "v2-png"))).size == PLACEHOLDER_SIZE


def test_a_png_card_goes_into_the_given_image_replacing_any_card_it_had() -> None:
    old_card = png_card(chara=v2({"name": "Somebody else"}))
    written = export_card(Character(name="Orrin"), "v3-png", image=old_card)
    assert parse_card(written).character.name == "Orrin"
    assert chunks(written)["chara"]["data"]["name"] == "Orrin"
    with Image.open(io.BytesIO(written)) as image:
        assert image.size == (4, 6) and image.getpixel((0, 0)) == (0, 128, 128)
    jpeg = io.BytesIO()
    Image.new("CMYK", (3, 3)).save(jpeg, format="JPEG")
    assert parse_card(export_card(Character(name="Orrin"), "v2-png", image=jpeg.getvalue())).spec == "v2"
    with pytest.raises(CardError, match="not a readable image"):
        export_card(Character(name="Orrin"), "v2-png", image=b"not an image")


def test_the_profiles_own_fields_travel_in_extensions_and_come_back() -> None:
    character = Character(
        name="Orrin",
        appearance="Tall.",
        background="Sailor.",
        speaking_style="Terse.",
        scenarios=["adventure"],
        voice="alto-2",
        extensions={"chat_worker": {"future_key": 1}, "other": True},
    )
    data = json.loads(export_card(character, "v2-json"))["data"]
    assert data["extensions"] == {
        "chat_worker": {
            "future_key": 1,
            "appearance": "Tall.",
            "background": "Sailor.",
            "speaking_style": "Terse.",
            "scenarios": ["adventure"],
            "voice": "alto-2",
        },
        "other": True,
    }
    assert parse_card(export_card(character, "v2-json")).character == character


@pytest.mark.parametrize("card_format", CARD_FORMATS)
def test_every_bundled_profile_round_trips(card_format: CardFormat) -> None:
    for character in bundled_characters().values():
        dropped = {"nickname": ""} if card_format.startswith("v2") else {}  # V2 has no nickname
        assert parse_card(export_card(character, card_format)).character == character.model_copy(update=dropped)


@pytest.mark.parametrize("card_format", CARD_FORMATS)
def test_a_full_card_round_trips_with_unknown_extensions(card_format: CardFormat) -> None:
    first = parse_card(json_card(v2(full_v2_data())))
    again = parse_card(export_card(first.character, card_format))
    assert again.character == first.character
    assert again.character.extensions["someapp"] == {"a": [1, None]}
    assert again.spec == card_format[:2]


# Property: any profile survives V3 export and import; one without V3-only fields survives V2 as well.

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_entries = st.builds(
    BookEntry,
    keys=st.lists(_text, max_size=3),
    content=_text,
    extensions=st.dictionaries(_text, _json, max_size=2),
    enabled=st.booleans(),
    insertion_order=st.integers(-5, 500),
    case_sensitive=st.none() | st.booleans(),
    constant=st.booleans(),
    selective=st.booleans(),
    secondary_keys=st.lists(_text, max_size=2),
    position=st.sampled_from(["before_char", "after_char"]),
    id=st.none() | st.integers(0, 99) | _text,
    comment=st.none() | _text,
)
_characters = st.builds(
    Character,
    name=_text.filter(lambda name: name.strip() and len(name) <= 100),
    nickname=_text,
    description=_text,
    personality=_text,
    appearance=_text,
    background=_text,
    speaking_style=_text,
    voice=_text,
    scenario=_text,
    scenarios=st.lists(st.sampled_from(["casual", "romantic", "adventure", "intimate"]), max_size=2),
    first_mes=_text,
    alternate_greetings=st.lists(_text, max_size=3),
    group_only_greetings=st.lists(_text, max_size=2),
    mes_example=_text,
    post_history_instructions=_text,
    tags=st.lists(_text, max_size=3),
    character_book=st.none() | st.builds(CharacterBook, name=st.none() | _text, entries=st.lists(_entries, max_size=2)),
    # The two keys a card's extensions give the profile's own fields.
    extensions=st.dictionaries(
        _text.filter(lambda key: key not in ("chat_worker", "talkativeness")), _json, max_size=3
    ),
    talkativeness=st.floats(0, 1),
    source=st.none() | st.lists(_text, max_size=2),
    creation_date=st.none() | st.integers(0, 2**40),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_characters, st.sampled_from(CARD_FORMATS))
def test_any_profile_round_trips(character: Character, card_format: CardFormat) -> None:
    again = parse_card(export_card(character, card_format)).character
    if card_format.startswith("v2"):
        assert again == character.model_copy(update={field: Character.model_fields[field].default for field in V3_ONLY})
    else:
        assert again == character


def test_talkativeness_travels_in_sillytaverns_extension() -> None:
    quiet = Character(name="Quiet", talkativeness=0.1)
    for card_format in ("v2-json", "v3-json"):
        exported = json.loads(export_card(quiet, card_format))
        assert exported["data"]["extensions"]["talkativeness"] == 0.1
        assert parse_card(export_card(quiet, card_format)).character.talkativeness == 0.1
    # The default is left out, as SillyTavern reads a missing one as 0.5; a value out of range is not taken.
    assert "talkativeness" not in json.loads(export_card(Character(name="Plain"), "v3-json"))["data"]["extensions"]
    odd = {"spec": "chara_card_v2", "data": {"name": "Odd", "extensions": {"talkativeness": "7"}}}
    assert parse_card(json.dumps(odd).encode()).character.talkativeness == 0.5
