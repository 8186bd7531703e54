"""Summary validation: what is wrong with a story summary the model wrote, and the summary after the safe fixes
(a leading "Summary:" label or "Here is the summary:" line taken off). Pure: no I/O.

The known failure of chat summaries is a summary that is not one: the model writes the next scene in character
(a speaker's label, actions between asterisks, "I" and "you" in narration, mostly dialogue). Such a summary, or
an empty, cut off or too long one, is never kept: the job keeps the memory it had."""

from __future__ import annotations

import re

from workflows.models import SUMMARY_MAX_CHARS, SummaryCheck, Verdict
from workflows.policy import Policy
from workflows.validation import QUOTED, REFUSAL, is_repetitive, trimmed_to_sentence

MIN_SUMMARY_CHARS = 20
# A summary retells; one that is more than this share dialogue is a scene.
MAX_DIALOGUE_SHARE = 0.3

SUMMARY_REASONS: dict[str, str] = {
    "empty": "no text at all after cleaning",
    "too_short": f"fewer than {MIN_SUMMARY_CHARS} characters",
    "cut_off": "the engine stopped at the summary's token limit with no full sentence to keep",
    "too_long": f"more than {SUMMARY_MAX_CHARS} characters",
    "scene": "the next scene instead of a summary: a speaker's label, an action between asterisks, first or "
    "second person outside quotes, or mostly dialogue",
    "refusal": "an assistant-style refusal",
    "repetitive": "repeats its own sentences or phrases",
    "policy": "matches a pattern the platform forbids",
}

PREAMBLE = re.compile(
    r"\A\s*(?:(?:sure|okay|ok|certainly)[,!.]?\s*)?(?:here(?: is|'s) (?:the |an? |my )?(?:updated |new )?"
    r"(?:story )?summary[^\n]*?:\s*|\**(?:updated |new )?(?:story )?summary(?: so far)?\**\s*:\**\s*)",
    re.IGNORECASE,
)
ACTION = re.compile(r"(?<!\*)\*[^*\s][^*\n]*\*(?!\*)")
FIRST_OR_SECOND_PERSON = re.compile(r"\b(?:i|i'm|i've|i'll|i'd|me|my|mine|we|us|our|you|your|you're)\b", re.IGNORECASE)


def cleaned_summary(raw: str, finish_reason: str) -> tuple[str, bool]:
    """The summary after the safe fixes, and whether it was cut off with no full sentence to keep. A summary
    stopped by its token limit keeps its full sentences: what they say holds, only the last one is unfinished."""
    text = PREAMBLE.sub("", raw, count=1).strip()
    if finish_reason != "length" or not text:
        return text, False
    trimmed = trimmed_to_sentence(text)
    return (trimmed, False) if trimmed else (text, True)


def speaker_label(name: str) -> re.Pattern[str]:
    """A line opening with the name as a speaker's label ("Mira:", "**Mira:**", "**Mira**:")."""
    return re.compile(rf"^[ \t]*\**{re.escape(name)}\**[ \t]*:", re.IGNORECASE | re.MULTILINE)


def is_scene(text: str, char_name: str, user_name: str) -> bool:
    if any(speaker_label(name).search(text) for name in {char_name, user_name, "User", "You"}):
        return True
    if ACTION.search(text):
        return True
    narration = QUOTED.sub(" ", text)
    if FIRST_OR_SECOND_PERSON.search(narration):
        return True
    quoted = sum(len(match) for match in QUOTED.findall(text))
    return quoted > MAX_DIALOGUE_SHARE * len(text)


def summary_reasons(text: str, cut_off: bool, check: SummaryCheck, policy: Policy | None) -> list[str]:
    if not text:
        return ["empty"]
    checks = [
        ("too_short", len(text) < MIN_SUMMARY_CHARS),
        ("cut_off", cut_off),
        ("too_long", len(text) > SUMMARY_MAX_CHARS),
        ("scene", is_scene(text, check.char_name, check.user_name)),
        ("refusal", bool(REFUSAL.search(text))),
        ("repetitive", is_repetitive(text)),
        ("policy", policy is not None and bool(policy.violations(text))),
    ]
    return [reason for reason, found in checks if found]


def validate_summary(check: SummaryCheck, policy: Policy | None = None) -> Verdict:
    """Whether the summary may become the chat's memory; `cleaned` is what would be kept."""
    text, cut_off = cleaned_summary(check.summary, check.finish_reason)
    reasons = summary_reasons(text, cut_off, check, policy)
    return Verdict(valid=not reasons, reasons=reasons, cleaned=text)
