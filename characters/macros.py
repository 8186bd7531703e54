"""Card macros: `{{char}}`, `{{user}}` and the older `<BOT>`, `<CHAR>`, `<USER>`, in any case."""

from __future__ import annotations

import re

from characters.profile import Character

_MACROS = re.compile(r"(?P<char>\{\{char\}\}|<bot>|<char>)|\{\{user\}\}|<user>", re.IGNORECASE)


def fill_macros(text: str, *, char: Character | str, user: str) -> str:
    """The text with the macros filled: `{{char}}` by the character's nickname, else its name (a plain
    string, such as "Assistant" for a job without a character, is used as it is); `{{user}}` by the user's
    name. One pass with a replacement function: a name holding a macro or a backslash goes in literally."""
    char_name = char.char_name if isinstance(char, Character) else char
    return _MACROS.sub(lambda match: char_name if match.group("char") else user, text)
