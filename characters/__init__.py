"""Character profiles: the data a roleplay job puts in front of the model, bundled or read from a card."""

from characters.base import StrictModel, describe_validation_error, listed
from characters.cards import CardError, ImportedCard, export_card, parse_card, read_card
from characters.greetings import NoSuchGreeting, greeting, group_greeting
from characters.macros import fill_macros
from characters.profile import BookEntry, Character, CharacterBook
from characters.registry import (
    ASSISTANT_NAME,
    BadProfileFile,
    UnknownCharacter,
    bundled_character,
    bundled_characters,
    resolve,
)
from characters.scenarios import SCENARIO_TYPES, scenario_text

__all__ = [
    "ASSISTANT_NAME",
    "SCENARIO_TYPES",
    "StrictModel",
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
    "describe_validation_error",
    "export_card",
    "fill_macros",
    "greeting",
    "group_greeting",
    "listed",
    "parse_card",
    "read_card",
    "resolve",
    "scenario_text",
]
