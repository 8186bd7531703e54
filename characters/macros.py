"""Card macros: `{{char}}`, `{{user}}` and the older `<BOT>`, `<USER>`, case-insensitive."""

from __future__ import annotations

import re

_CHAR = re.compile(r"\{\{char\}\}|<bot>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<user>", re.IGNORECASE)


def fill_macros(text: str, *, char: str, user: str) -> str:
    # Replacement functions, so a name containing a backslash is inserted literally.
    return _USER.sub(lambda _: user, _CHAR.sub(lambda _: char, text))
