"""Character profiles: the data a roleplay job puts in front of the model, bundled or read from a card."""

from characters.cards import CardError, ImportedCard, export_card, parse_card, read_card
from characters.greetings import NoSuchGreeting, greeting
from characters.macros import fill_macros
from characters.profile import BookEntry, Character, CharacterBook
from characters.registry import BadProfileFile, UnknownCharacter, bundled_character, bundled_characters
from characters.scenarios import SCENARIO_TYPES, scenario_text

__all__ = [
    "SCENARIO_TYPES",
    "BadProfileFile",
    "BookEntry",
    "CardError",
    "Character",
    "CharacterBook",
    "ImportedCard",
    "NoSuchGreeting",
    "UnknownCharacter",
    "bundled_character",
    "bundled_characters",
    "export_card",
    "fill_macros",
    "greeting",
    "parse_card",
    "read_card",
    "scenario_text",
]
