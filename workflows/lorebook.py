"""Which `character_book` entries a conversation triggers, and where a triggered entry sits. Pure: no I/O.

An entry fires when one of its keys appears (case-insensitive, unless the entry says case_sensitive) in the
last `scan_depth` messages; a `selective` entry also needs one of its secondary keys; a `constant` entry
always fires; a disabled one never does.

An entry's depth (how many messages from the end of the history it sits before, when it goes in at depth) is
Character Card V3's `@@depth N` decorator, else Card V2's `extensions.depth` (SillyTavern writes it there),
else 4. V3 decorators (leading `@@` lines) are instructions to the reader, never prompt text."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Collection, Sequence
from functools import cached_property
from itertools import accumulate

from characters.profile import BookEntry, CharacterBook
from workflows.models import Message

DEFAULT_SCAN_DEPTH = 4
DEFAULT_DEPTH = 4
_DEPTH_DECORATOR = re.compile(r"@@depth\s+(\d+)\s*$")


def entry_label(entry: BookEntry, index: int) -> str:
    """How `context` names an inserted entry: its name or comment, else its id, else its index."""
    return entry.name or entry.comment or str(entry.id if entry.id is not None else index)


def _decorators_and_text(content: str) -> tuple[list[str], str]:
    lines = content.split("\n")
    count = next((i for i, line in enumerate(lines) if not line.lstrip().startswith("@@")), len(lines))
    return [line.strip() for line in lines[:count]], "\n".join(lines[count:])


def entry_text(entry: BookEntry) -> str:
    """The entry's content without its V3 decorators."""
    return _decorators_and_text(entry.content)[1]


def entry_depth(entry: BookEntry) -> int:
    for decorator in _decorators_and_text(entry.content)[0]:
        matched = _DEPTH_DECORATOR.fullmatch(decorator)
        if matched:
            return int(matched.group(1))
    depth = entry.extensions.get("depth")
    return depth if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0 else DEFAULT_DEPTH


def _mentions(scanned: str, lowered: str, keys: Sequence[str], case_sensitive: bool) -> bool:
    haystack = scanned if case_sensitive else lowered
    return any(key.strip() and (key if case_sensitive else key.lower()).strip() in haystack for key in keys)


def fires(entry: BookEntry, scanned: str, lowered: str) -> bool:
    """`lowered` is `scanned.lower()`, done once for every entry."""
    if not entry.enabled:
        return False
    if entry.constant:
        return True
    case = bool(entry.case_sensitive)
    if not _mentions(scanned, lowered, entry.keys, case):
        return False
    return not entry.selective or _mentions(scanned, lowered, entry.secondary_keys, case)


def fired_in(book: CharacterBook, scanned: str, among: Collection[int] | None = None) -> list[tuple[int, BookEntry]]:
    """(index, entry) of every entry (of those `among`, when given) that fires on `scanned`, in insertion
    order (lower first, as the card spec says)."""
    lowered = scanned.lower()
    indices = range(len(book.entries)) if among is None else sorted(among)
    fired = [(i, book.entries[i]) for i in indices if fires(book.entries[i], scanned, lowered)]
    return sorted(fired, key=lambda pair: (pair[1].insertion_order, pair[0]))


def scan_depth(book: CharacterBook) -> int:
    return book.scan_depth if book.scan_depth is not None else DEFAULT_SCAN_DEPTH


def triggered_entries(
    book: CharacterBook, messages: Sequence[Message], among: Collection[int] | None = None
) -> list[tuple[int, BookEntry]]:
    """The entries that the last `scan_depth` messages (and the book's constant entries) trigger."""
    depth = scan_depth(book)
    window = [m.content for m in messages if m.role != "system"][-depth:] if depth > 0 else []
    return fired_in(book, "\n".join(window), among)


class _Joined:
    """Texts joined once, to find which of them hold a needle at C speed."""

    def __init__(self, texts: list[str]) -> None:
        self.text = "\0".join(texts)
        self.starts = [0, *accumulate(len(text) + 1 for text in texts[:-1])]

    def holding(self, needle: str) -> set[int]:
        found: set[int] = set()
        at = self.text.find(needle)
        while at != -1:
            message = bisect_right(self.starts, at) - 1
            found.add(message)
            at = self.text.find(needle, self.starts[message + 1]) if message + 1 < len(self.starts) else -1
        return found


class KeyIndex:
    """Which messages hold one of an entry's keys (primary or secondary), found when first asked for that
    entry. An entry that did not fire on a scan can fire on the next one only if the message that came in
    holds one of its keys."""

    def __init__(self, book: CharacterBook, texts: list[str]) -> None:
        self._book = book
        self._texts = texts
        self._found: dict[int, set[int]] = {}

    @cached_property
    def _exact(self) -> _Joined:
        return _Joined(self._texts)

    @cached_property
    def _lowered(self) -> _Joined:
        return _Joined([text.lower() for text in self._texts])

    def messages_holding(self, index: int) -> set[int]:
        if index not in self._found:
            entry = self._book.entries[index]
            keys = [key.strip() for key in [*entry.keys, *entry.secondary_keys] if key.strip()]
            if entry.case_sensitive:
                found = [self._exact.holding(key) for key in keys]
            else:
                found = [self._lowered.holding(key.lower()) for key in keys]
            self._found[index] = set().union(*found)
        return self._found[index]
