"""Greetings: what a chat shows before the user's first message. No model call."""

from __future__ import annotations

from collections.abc import Sequence

from characters.macros import fill_macros
from characters.profile import Character


class NoSuchGreeting(IndexError):
    pass


def greeting(character: Character, user_name: str, index: int | None = None) -> str:
    """The character's `first_mes`, or with `index` its alternate greeting at that position (0 is the first
    of `alternate_greetings`), macros filled. "" when the character has no first message."""
    if index is None:
        return fill_macros(character.first_mes, char=character, user=user_name)
    count = len(character.alternate_greetings)
    if not 0 <= index < count:
        has = f"alternate greetings 0-{count - 1}" if count else "no alternate greetings"
        raise NoSuchGreeting(f"{character.name} has no alternate greeting {index}; it has {has}")
    return fill_macros(character.alternate_greetings[index], char=character, user=user_name)


def group_greeting(character: Character, user_name: str, group: Sequence[str]) -> str:
    """The character's greeting in a group scene (`group`: the members as `{{char}}` names them): its first Card
    V3 `group_only_greetings` entry when it has one, else its `first_mes`; macros filled, `{{group}}` too."""
    text = character.group_only_greetings[0] if character.group_only_greetings else character.first_mes
    return fill_macros(text, char=character, user=user_name, group=group)
