"""Reply validation: clean a raw reply, then name what is wrong with it. Pure: no I/O.

Cleaning (never a rejection by itself): strip a leading "Name:" label, cut where the model starts writing
the user's turn, trim a reply cut off by the token limit back to its last full sentence.
Reason codes (each a rejection): too_short, cut_off, repetitive, out_of_character."""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel

MIN_CHARS = 10
SENTENCE_END = re.compile(r"""[.!?…][)"'*”’\]]*(?=\s|$)""")
OUT_OF_CHARACTER = re.compile(
    r"\bas an ai\b|\b(?:ai|large) language model\b|\bi(?: am|'m) (?:just )?an ai\b"
    r"|\bi can(?:not|'t) (?:role-?play|continue this)\b",
    re.IGNORECASE,
)


class Verdict(BaseModel):
    content: str
    reasons: list[str]

    @property
    def ok(self) -> bool:
        return not self.reasons


def _speaker_label(*names: str) -> str:
    """A line's "Name:" label, bold or not ("**Name:**", "**Name**:")."""
    alternatives = "|".join(re.escape(n) for n in names)
    return rf"^\s*\**(?:{alternatives})\**\s*:\**"


def without_own_label(text: str, char_name: str) -> str:
    return re.sub(rf"{_speaker_label(char_name)}\s*", "", text, flags=re.IGNORECASE)


def cut_at_user_turn(text: str, user_name: str) -> str:
    match = re.search(_speaker_label(user_name, "User"), text, flags=re.IGNORECASE | re.MULTILINE)
    return text[: match.start()] if match else text


def trimmed_to_sentence(text: str) -> str | None:
    """The text up to its last sentence end, or None when it has none."""
    ends = list(SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else None


def is_repetitive(text: str) -> bool:
    sentences = [re.sub(r"\W+", " ", s).strip().lower() for s in re.split(r"[.!?…\n]+", text)]
    counts = Counter(s for s in sentences if len(s.split()) >= 3)
    if counts and counts.most_common(1)[0][1] >= 3:
        return True
    words = re.findall(r"\w+", text.lower())
    if len(words) < 30:
        return False
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return len(set(trigrams)) / len(trigrams) < 0.5


def validate_reply(raw: str, finish_reason: str, *, user_name: str, char_name: str | None, roleplay: bool) -> Verdict:
    text = raw.strip()
    if char_name:
        text = without_own_label(text, char_name)
    text = cut_at_user_turn(text, user_name).strip()
    reasons: list[str] = []
    if finish_reason == "length":
        trimmed = trimmed_to_sentence(text)
        if trimmed is None:
            reasons.append("cut_off")
        else:
            text = trimmed.strip()
    if len(text) < MIN_CHARS:
        reasons.append("too_short")
    if is_repetitive(text):
        reasons.append("repetitive")
    if roleplay and OUT_OF_CHARACTER.search(text):
        reasons.append("out_of_character")
    return Verdict(content=text, reasons=reasons)
