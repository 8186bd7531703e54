"""Character profiles: the data a roleplay job puts in front of the model."""

from characters.macros import fill_macros
from characters.profile import Character
from characters.registry import UnknownCharacter, bundled_character, bundled_characters

__all__ = ["Character", "fill_macros", "UnknownCharacter", "bundled_character", "bundled_characters"]
