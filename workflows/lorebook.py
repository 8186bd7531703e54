"""Which `character_book` entries a conversation triggers. Pure: no I/O.

An entry fires when one of its keys appears (case-insensitive, unless the entry says case_sensitive) in the
last `scan_depth` messages; a `selective` entry also needs one of its secondary keys; a `constant` entry
always fires; a disabled one never does."""

from __future__ import annotations

from collections.abc import Sequence

from characters.profile import BookEntry, CharacterBook
from workflows.models import Message

DEFAULT_SCAN_DEPTH = 4


def entry_label(entry: BookEntry, index: int) -> str:
    """How `context` names an inserted entry: its name or comment, else its id, else its index."""
    return entry.name or entry.comment or str(entry.id if entry.id is not None else index)


def _mentions(text: str, keys: Sequence[str], case_sensitive: bool) -> bool:
    haystack = text if case_sensitive else text.lower()
    return any(key.strip() and (key if case_sensitive else key.lower()).strip() in haystack for key in keys)


def fires(entry: BookEntry, scanned: str) -> bool:
    if not entry.enabled:
        return False
    if entry.constant:
        return True
    case = bool(entry.case_sensitive)
    if not _mentions(scanned, entry.keys, case):
        return False
    return not entry.selective or _mentions(scanned, entry.secondary_keys, case)


def triggered_entries(book: CharacterBook, messages: Sequence[Message]) -> list[tuple[int, BookEntry]]:
    """(index, entry) of every entry that fires, in insertion order (lower first, as the card spec says)."""
    depth = book.scan_depth if book.scan_depth is not None else DEFAULT_SCAN_DEPTH
    window = [m.content for m in messages if m.role != "system"][-depth:] if depth > 0 else []
    scanned = "\n".join(window)
    fired = [(i, e) for i, e in enumerate(book.entries) if fires(e, scanned)]
    return sorted(fired, key=lambda pair: (pair[1].insertion_order, pair[0]))
