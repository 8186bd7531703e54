"""Card macros: `{{char}}`, `{{user}}` and the older `<BOT>`, `<CHAR>`, `<USER>`, in any case; and SillyTavern's
group macros `{{group}}` (the members' names) and `{{notChar}}` (everyone in the chat but `{{char}}`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from characters.profile import Character

_MACROS = re.compile(
    r"(?P<char>\{\{char\}\}|<bot>|<char>)|(?P<group>\{\{group\}\})|(?P<not_char>\{\{notchar\}\})|\{\{user\}\}|<user>",
    re.IGNORECASE,
)


def fill_macros(text: str, *, char: Character | str, user: str, group: Sequence[str] = ()) -> str:
    """The text with the macros filled: `{{char}}` by the character's nickname, else its name (a plain
    string, such as "Assistant" for a job without a character, is used as it is); `{{user}}` by the user's
    name; `{{group}}` by the members' names (`group`; outside a group the character's), `{{notChar}}` by the
    others' and then the user's. One pass with a replacement function: a name holding a macro or a backslash
    goes in literally."""
    char_name = char.char_name if isinstance(char, Character) else char
    members = list(group) or [char_name]
    others = [name for name in members if name != char_name]

    def value(match: re.Match[str]) -> str:
        if match.group("char"):
            return char_name
        if match.group("group"):
            return ", ".join(members)
        if match.group("not_char"):
            return ", ".join([*others, user])
        return user

    return _MACROS.sub(value, text)
