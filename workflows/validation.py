"""Reply validation: what is wrong with a raw reply, and the reply after the fixes that are safe to make.
Pure: no I/O.

Cleaning: strip a leading "Name:" label of the character's own, cut from the first line where the user
speaks ("Name:" or "{{user}}:" at a line start), trim back to the last sentence end when the engine hit
the token limit mid-sentence. `reasons` lists every problem found in the raw reply, those fixed by
cleaning and warnings included; `valid` says whether `cleaned` may be shown to the user as it is."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from workflows.models import JobType, Message, ReplySpec, Verdict
from workflows.policy import Policy

MIN_CHARS = 10
SHORT_CHARS = 50

# Every reason code, in one place. FIXED and WARNINGS do not make a cleaned reply invalid by themselves.
REASONS: dict[str, str] = {
    "empty": "no text at all after cleaning",
    "too_short": f"fewer than {MIN_CHARS} characters of content",
    "short": f"warning: fewer than {SHORT_CHARS} characters",
    "repetitive": "repeats its own sentences or phrases",
    "echoes_history": "repeats an earlier assistant message",
    "out_of_character": "AI/assistant disclaimer or a fourth-wall break in roleplay",
    "refusal": "an assistant-style refusal in a roleplay or unrestricted job",
    "speaks_for_user": "writes the user's lines (cut off in `cleaned`)",
    "cut_off": "ends mid-sentence at the token limit (trimmed in `cleaned` when a sentence end exists)",
    "policy": "matches a pattern the platform forbids",
}
WARNINGS = frozenset({"short"})
FIXED = frozenset({"speaks_for_user"})

SENTENCE_END = re.compile(r"""[.!?…][)"'*”’\]_~]*(?=\s|$)|[*"”)](?=\s*$)""")
OUT_OF_CHARACTER = re.compile(
    r"\bas an ai\b|\b(?:ai|large) language model\b|\bi(?: am|'m) (?:just |only )?an? (?:ai|chatbot|assistant)\b"
    r"|\bas (?:a|your) (?:helpful )?(?:ai )?assistant\b|\(\s*ooc\b|\[\s*ooc\b|\bout of character\b"
    r"|\b(?:this|our) role-?play\b",
    re.IGNORECASE,
)
REFUSAL = re.compile(
    r"\bi (?:can(?:no|')t|won't|will not|am (?:not able|unable) to) (?:assist|help)(?: you)? with (?:this|that|your)"
    r"(?: request)?\b"
    r"|\bi (?:can(?:no|')t|won't|will not|am (?:not able|unable) to) (?:fulfill|comply with|generate|create|produce"
    r"|write|provide|engage in|continue) (?:this|that|such|your|the requested|explicit|sexual|inappropriate)"
    r"(?: \w+)? (?:request|content|story|scene|roleplay|material|conversation)\b"
    r"|\b(?:against|violates?) (?:my|the|our) (?:guidelines|content polic(?:y|ies)|usage polic(?:y|ies)|programming)\b"
    r"|\b(?:it(?:'s| is) )?not appropriate for me to\b",
    re.IGNORECASE,
)


def _speaker_label(*names: str) -> str:
    """A line's "Name:" label, bold or not ("**Name:**", "**Name**:")."""
    alternatives = "|".join(re.escape(n) for n in names if n)
    return rf"^[ \t]*\**(?:{alternatives})\**[ \t]*:\**"


def without_own_label(text: str, char_name: str) -> str:
    return re.sub(rf"{_speaker_label(char_name)}\s*", "", text, count=1, flags=re.IGNORECASE)


def user_turn_start(text: str, user_name: str) -> int | None:
    """Where the reply starts writing the user's lines, if it does."""
    match = re.search(_speaker_label(user_name, "{{user}}", "User"), text, flags=re.IGNORECASE | re.MULTILINE)
    return match.start() if match else None


def trimmed_to_sentence(text: str) -> str | None:
    """The text up to its last sentence end, or None when it has none."""
    ends = list(SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].rstrip() if ends else None


def ends_mid_sentence(text: str) -> bool:
    return trimmed_to_sentence(text) != text.rstrip()


def _normalised(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def is_repetitive(text: str) -> bool:
    sentences = [_normalised(s) for s in re.split(r"[.!?…\n]+", text)]
    counts = Counter(s for s in sentences if len(s.split()) >= 3)
    if counts and counts.most_common(1)[0][1] >= 3:
        return True
    words = _normalised(text).split()
    if len(words) < 30:
        return False
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return len(set(trigrams)) / len(trigrams) < 0.5


def _shingles(words: list[str], size: int = 5) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def echoes_history(text: str, history: Sequence[Message]) -> bool:
    """Whether the reply is, for the most part, an earlier assistant message again."""
    words = _normalised(text).split()
    if len(words) < 5:
        return False
    mine = _shingles(words)
    for message in history:
        if message.role != "assistant":
            continue
        earlier = _shingles(_normalised(message.content).split())
        if earlier and len(mine & earlier) / len(mine) >= 0.6:
            return True
    return False


def cleaned_reply(raw: str, spec: ReplySpec, finish_reason: str) -> tuple[str, list[str]]:
    """The reply after the safe fixes, and the reasons found on the way."""
    reasons: list[str] = []
    text = without_own_label(raw.strip(), spec.char_name)
    cut = user_turn_start(text, spec.user_name)
    if cut is not None:
        reasons.append("speaks_for_user")
        text = text[:cut]
    text = text.strip()
    if finish_reason == "length" and cut is None and text and ends_mid_sentence(text):
        reasons.append("cut_off")
        text = trimmed_to_sentence(text) or text
    return text, reasons


def validate(
    reply: str,
    spec: ReplySpec,
    history: Sequence[Message],
    finish_reason: str,
    policy: Policy | None = None,
) -> Verdict:
    text, reasons = cleaned_reply(reply, spec, finish_reason)
    blocking: list[str] = []
    if "cut_off" in reasons and ends_mid_sentence(text):
        blocking.append("cut_off")  # nothing to trim back to
    if not text:
        blocking.append("empty")
    elif len(text) < MIN_CHARS:
        blocking.append("too_short")
    elif len(text) < SHORT_CHARS:
        reasons.append("short")
    if is_repetitive(text):
        blocking.append("repetitive")
    if echoes_history(text, history):
        blocking.append("echoes_history")
    if spec.job_type is JobType.roleplay and OUT_OF_CHARACTER.search(text):
        blocking.append("out_of_character")
    if spec.job_type in (JobType.roleplay, JobType.unrestricted) and REFUSAL.search(text):
        blocking.append("refusal")
    if policy is not None and policy.violations(reply):
        blocking.append("policy")
    found = list(dict.fromkeys([*reasons, *blocking]))
    return Verdict(valid=not blocking, reasons=found, cleaned=text)
