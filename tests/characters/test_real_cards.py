"""Compatibility with real SillyTavern cards, read in place from <checkout>/../shared/cards."""

from __future__ import annotations

import pytest

from characters import CardError, ImportedCard, export_card, read_card
from characters.cards import CARD_FORMATS, CardFormat, parse_card
from tests.characters.cardfiles import REAL_CARDS

CARDS = ("default_Seraphina.png", "default_CodingSensei.png", "default_FluxTheCat.png")


def real(file_name: str) -> ImportedCard:
    path = REAL_CARDS / file_name
    assert path.is_file(), f"{path} is missing: the real cards live in shared/cards beside the checkout"
    return read_card(path)


def test_seraphina_keeps_her_four_entry_book_and_the_examples_inside_her_description() -> None:
    card = real("default_Seraphina.png")
    seraphina = card.character
    assert card.spec == "v2" and seraphina.name == "Seraphina"
    assert seraphina.mes_example == ""
    assert '<START>\n{{user}}: "Describe your traits?"\n{{char}}: *Seraphina' in seraphina.description
    assert seraphina.first_mes.startswith("*You wake with a start")
    assert (seraphina.creator, seraphina.character_version) == ("OtisAlejandro", "1.0.0")
    assert seraphina.creator_notes == "ST Default Bot contest winner: roleplay bots category"
    # SillyTavern's `extensions.talkativeness` ("0.5") is the profile's field.
    assert seraphina.extensions == {"fav": False, "world": "Eldoria"} and seraphina.talkativeness == 0.5
    book = seraphina.character_book
    assert book is not None and book.name == "Eldoria" and len(book.entries) == 4
    assert [entry.keys[0] for entry in book.entries] == ["eldoria", "shadowfang", "glade", "power"]
    assert book.entries[1].keys == ["shadowfang", "beast", "monster", "monsters", "beasts"]
    for number, entry in enumerate(book.entries):
        assert entry.id == number and entry.enabled and not entry.constant and not entry.selective
        assert (entry.insertion_order, entry.position, entry.secondary_keys) == (100, "before_char", [])
        assert entry.extensions == {"position": 0, "probability": None, "useProbability": False}
        assert entry.content.startswith('{{user}}: "What')
    assert "\r" not in seraphina.model_dump_json()


def test_coding_sensei_keeps_its_extensions() -> None:
    sensei = real("default_CodingSensei.png").character
    assert sensei.name == "Coding Sensei"
    assert sensei.extensions["depth_prompt"] == {"prompt": "", "depth": 4, "role": "system"}
    assert sensei.extensions["world"] == "" and "talkativeness" not in sensei.extensions
    assert sensei.tags == ["coding", "utility", "assistant"] and sensei.mes_example == ""
    assert (sensei.creator, sensei.character_version) == ("RossAscends", "v1.010102")
    assert sensei.creator_notes.endswith("JavaScript. ")  # text as the card has it, trailing space and all
    assert sensei.first_mes.startswith('"Hello world!" \n\nIn JavaScript') and "```js\n" in sensei.first_mes


def test_flux_the_cat() -> None:
    card = real("default_FluxTheCat.png")
    flux = card.character
    assert card.spec == "v2" and flux.name == "Flux the Cat" and flux.character_book is None
    assert flux.personality == "Cool, Impulsive, Wary, Quick-Witted, Curious, Smart"
    assert flux.description.startswith("{{char}} personality\xa0is: smart, cool")  # a no-break space, kept
    assert flux.scenario.startswith("{{char}} is the new cat and owned by {{user}}. \n")
    assert "use at MOST 300 words per <CHR>" in flux.post_history_instructions  # not a macro: left alone
    assert flux.tags == []  # from data, not the top level's "tags": ""
    assert flux.creator == "@kallmeflocc on Discord" and flux.character_version == "1.0.2"


def test_a_world_info_file_is_not_a_character_card() -> None:
    with pytest.raises(CardError, match=r"Eldoria\.worldinfo\.json: not a character card: it has no name"):
        real("Eldoria.worldinfo.json")


@pytest.mark.parametrize("card_format", CARD_FORMATS)
@pytest.mark.parametrize("file_name", CARDS)
def test_real_cards_round_trip(file_name: str, card_format: CardFormat) -> None:
    first = real(file_name).character
    assert parse_card(export_card(first, card_format)).character == first
