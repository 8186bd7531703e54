"""Characters from chat (job type chat_character): the card's prompt, the JSON schema its output is held to, and
the Character Card V3 made of that output. Pure: no I/O.

The model writes five parts of the card as one JSON object (`card_schema`, sent as the engine's own constrained
decoding: GenerateRequest.json_schema): description, personality, scenario, first_mes, and one or two example
exchanges that become mes_example; each bounded in characters, so that the card fits the attempt's max_tokens.
The output is parsed leniently all the same (an engine that ignores the schema may wrap the object in prose or a
code fence), and a card that is not whole, or copies the starting profile where the conversation says more, is
rejected and regenerated like a reply. The rest of the card is the starting
profile's: its name, and every field the model does not write (tags, lorebook, extensions, ...)."""

from __future__ import annotations

import json
import re
from typing import Any

from characters import ASSISTANT_NAME, Character, fill_macros
from characters.cards import card_v3
from workflows.context import MESSAGE_OVERHEAD, REPLY_PRIMER, ContextTooLarge, TokenCounter, char_name, character_sheet
from workflows.memory import CHARS_PER_TOKEN, transcript_lines
from workflows.models import CardCheck, CardPrompt, CardVerdict, ChatJob, JobType, Message
from workflows.policy import Policy
from workflows.prompts import system_prompt
from workflows.summary_validation import speaker_label
from workflows.validation import is_repetitive, trimmed_to_sentence

# The texts the model writes: each field's share of the characters the card may take, and its fewest characters
# (a constrained model could otherwise close a field at once). The example exchanges' shares are per exchange.
TEXT_FIELDS: dict[str, tuple[float, int]] = {
    "description": (0.25, 20),
    "personality": (0.10, 3),
    "scenario": (0.13, 10),
    "first_mes": (0.20, 10),
}
# Fields cut after their last full sentence (personality is a list of traits).
PROSE_FIELDS = frozenset({"description", "scenario", "first_mes"})
EXAMPLES = "example_dialogue"
EXAMPLE_LINES: dict[str, tuple[float, int]] = {"user": (0.06, 1), "char": (0.10, 1)}
MAX_EXAMPLES = 2
# The characters a card of `max_tokens` tokens may take: English runs about 4 characters per token, so at 3 the
# card fits its tokens with the JSON's keys and punctuation (JSON_TOKENS) besides, and is seldom cut off.
CARD_CHARS_PER_TOKEN = 3
JSON_TOKENS = 40


def _text(share: float, shortest: int, room: int) -> dict[str, Any]:
    return {"type": "string", "minLength": shortest, "maxLength": max(shortest, int(share * room))}


def card_schema(max_tokens: int) -> dict[str, Any]:
    """The JSON schema the card's output is held to (the engine's constrained decoding): every field required and
    no other, each bounded so that the whole card fits `max_tokens`."""
    room = max(0, max_tokens - JSON_TOKENS) * CARD_CHARS_PER_TOKEN
    return {
        "type": "object",
        "properties": {
            **{field: _text(*bounds, room) for field, bounds in TEXT_FIELDS.items()},
            EXAMPLES: {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_EXAMPLES,
                "items": {
                    "type": "object",
                    "properties": {role: _text(*bounds, room) for role, bounds in EXAMPLE_LINES.items()},
                    "required": list(EXAMPLE_LINES),
                    "additionalProperties": False,
                },
            },
        },
        "required": [*TEXT_FIELDS, EXAMPLES],
        "additionalProperties": False,
    }


CARD_REASONS: dict[str, str] = {
    "not_json": "no JSON object could be read from the output",
    "cut_off": "the engine stopped at the token limit before the object was complete",
    "missing_fields": "a field of the card is missing or not text (example_dialogue: not a list of exchanges)",
    "empty_field": "a field of the card is empty (example_dialogue: no exchange with both lines)",
    "placeholder": "a field or example line is only a name: its own field's, the character's or the user's",
    "copied_profile": "a field is the starting profile's, word for word, although the character speaks in the chat",
    "stray_macro": "a field holds braces that are no card macro (only {{char}} and {{user}} are)",
    "repetitive": "a field repeats its own sentences or phrases",
    "policy": "matches a pattern the platform forbids",
}

KNOWN_HEADER = "What is known about {name} so far:"
STORY_HEADER = "The story so far:"
CONVERSATION_HEADER = "The conversation:"
REQUEST = "Write the character card of {name} as JSON."
# Double braces around anything but the two macros every card reader fills: a front end would show them as they are.
STRAY_MACRO = re.compile(r"\{\{(?!(?:char|user)\}\})|(?<!\{\{char)(?<!\{\{user)\}\}", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def starting_profile(character: Character | None) -> Character:
    """The profile the card starts from: the job's character, else the assistant's bare name."""
    return character if character is not None else Character(name=ASSISTANT_NAME)


def character_spoke(job: ChatJob) -> bool:
    """Whether the conversation has the character's own lines (the assistant's messages)."""
    return any(message.role == "assistant" for message in job.messages)


# The prompt ------------------------------------------------------------------------------------------


def card_instruction(job: ChatJob, profile: Character) -> str:
    return fill_macros(system_prompt(JobType.character), char=profile, user=job.user_name).strip()


def known_text(job: ChatJob, profile: Character) -> str:
    """The starting profile (and the chat's story memory, when it has a summary) as the prompt gives it."""
    text = f"{KNOWN_HEADER.format(name=char_name(profile))}\n{character_sheet(profile)}"
    if profile.scenario.strip():
        text += f"\nScenario: {fill_macros(profile.scenario, char=profile, user=job.user_name).strip()}"
    if job.memory is not None and job.memory.summary.strip():
        text += f"\n\n{STORY_HEADER}\n{job.memory.summary.strip()}"
    return text


def card_request(profile: Character) -> str:
    return REQUEST.format(name=char_name(profile))


def card_texts(job: ChatJob, profile: Character) -> list[str]:
    """Every text `card_prompt` may count."""
    lines = [line for _, line in transcript_lines(job, profile, 0, len(job.messages))]
    return [
        card_instruction(job, profile),
        known_text(job, profile),
        CONVERSATION_HEADER,
        card_request(profile),
        *lines,
    ]


def card_prompt(job: ChatJob, profile: Character, *, budget: int, count: TokenCounter) -> CardPrompt:
    """The instruction, then what is known, the newest messages that fit `budget` (at least the last one, its
    beginning when it alone does not fit) and the request. Raises ContextTooLarge when the instruction and the
    profile alone do not fit."""
    instruction, known, request = card_instruction(job, profile), known_text(job, profile), card_request(profile)
    used = 2 * MESSAGE_OVERHEAD + REPLY_PRIMER + count(instruction) + count(known) + count(request) + 2
    used += count(CONVERSATION_HEADER) + 1
    if used >= budget:
        raise ContextTooLarge(f"the card's instruction and the character's profile take {used} of {budget} tokens")
    kept: list[str] = []
    first = len(job.messages)
    for index, line in reversed(transcript_lines(job, profile, 0, len(job.messages))):
        price = count(line) + 1
        if used + price > budget:
            if not kept:  # one message longer than the room: its beginning stands for it
                kept.append(line[: (budget - used) * CHARS_PER_TOKEN])
                used, first = budget, index
            break
        kept.append(line)
        used += price
        first = index
    body = "\n\n".join([known, CONVERSATION_HEADER + "\n" + "\n".join(reversed(kept)), request])
    return CardPrompt(
        messages=[Message(role="system", content=instruction), Message(role="user", content=body)],
        prompt_tokens=used,
        budget=budget,
        first_message=first,
    )


# The output ------------------------------------------------------------------------------------------


def reply_object(raw: str) -> dict[str, Any] | None:
    """The JSON object in the output: all of it, or (an engine that ignored the schema) the span from its first
    `{` to its last `}`, a code fence around it dropped; None when there is none. Control characters inside its
    strings are taken (llama-cpp-python's grammar lets them through)."""
    text = FENCE.sub("", raw.strip())
    candidates = [text]
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{") : text.rindex("}") + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate, strict=False)  # a raw control character in a string: llama.cpp lets it
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def cleaned_text(text: str, profile: Character, user_name: str, spoken: bool = False, prose: bool = False) -> str:
    """A field as the card keeps it: control characters but line breaks and tabs gone, trimmed, the user's name
    made `{{user}}` (the card serves any user), a spoken line's leading speaker label ("Mira:") dropped, and prose
    cut after its last full sentence (a field the schema's length stopped mid-sentence), when it has one."""
    text = CONTROL.sub("", text).strip()
    if prose:
        text = trimmed_to_sentence(text) or text
    if spoken:
        for name in (profile.name, char_name(profile), user_name):
            label = speaker_label(name).match(text)
            if label:
                text = text[label.end() :].strip()
                break
    return re.sub(rf"\b{re.escape(user_name)}\b", "{{user}}", text)


def written_texts(card: dict[str, Any], profile: Character, user_name: str) -> dict[str, str | None]:
    """Each text field as written and cleaned; None: missing or not text."""
    texts: dict[str, str | None] = {}
    for field in TEXT_FIELDS:
        value = card.get(field)
        if isinstance(value, str):
            texts[field] = cleaned_text(value, profile, user_name, field == "first_mes", field in PROSE_FIELDS)
        else:
            texts[field] = None
    return texts


def written_examples(card: dict[str, Any], profile: Character, user_name: str) -> list[tuple[str, str]] | None:
    """The example exchanges with both lines (user's, character's); None: the field is missing or not a list."""
    exchanges = card.get(EXAMPLES)
    if not isinstance(exchanges, list):
        return None
    pairs = []
    for exchange in exchanges[:MAX_EXAMPLES]:
        if not isinstance(exchange, dict):
            continue
        lines = [exchange.get(role) for role in EXAMPLE_LINES]
        if all(isinstance(line, str) for line in lines):
            user, char = (cleaned_text(str(line), profile, user_name, spoken=True) for line in lines)
            if user and char:
                pairs.append((user, char))
    return pairs


def mes_example(pairs: list[tuple[str, str]]) -> str:
    """The exchanges as one example dialogue in the cards' own form."""
    return "\n".join(["<START>", *(f"{{{{user}}}}: {user}\n{{{{char}}}}: {char}" for user, char in pairs)])


def same_text(one: str, other: str) -> bool:
    return bool(other.strip()) and " ".join(one.lower().split()) == " ".join(other.lower().split())


def placeholder(text: str, field: str, check: CardCheck) -> bool:
    """Whether the text is only a name a weak model puts where a field's content belongs."""
    names = {field, "{{user}}", "{{char}}", check.user_name, check.profile.name, char_name(check.profile)}
    return " ".join(text.strip(" .:'\"").lower().split()) in {name.lower() for name in names}


def card_reasons(
    texts: dict[str, str | None], pairs: list[tuple[str, str]] | None, check: CardCheck, policy: Policy | None
) -> list[str]:
    written = [text for text in texts.values() if text] + [line for pair in pairs or [] for line in pair]
    placeholders = [placeholder(text, field, check) for field, text in texts.items() if text]
    placeholders += [
        placeholder(line, role, check) for pair in pairs or [] for role, line in zip(EXAMPLE_LINES, pair, strict=True)
    ]
    copied = check.character_spoke and any(
        text is not None and same_text(text, getattr(check.profile, field)) for field, text in texts.items()
    )
    checks = [
        ("missing_fields", pairs is None or any(text is None for text in texts.values())),
        ("empty_field", pairs == [] or any(text == "" for text in texts.values())),
        ("placeholder", any(placeholders)),
        ("copied_profile", copied),
        ("stray_macro", any(STRAY_MACRO.search(text) for text in written)),
        ("repetitive", any(is_repetitive(text) for text in written)),
        ("policy", policy is not None and any(policy.violations(text) for text in written)),
    ]
    return [reason for reason, found in checks if found]


def carded(profile: Character, texts: dict[str, str | None], pairs: list[tuple[str, str]] | None) -> Character:
    """The starting profile with what the model wrote (a field it left out or empty stays the profile's)."""
    update: dict[str, str] = {field: text for field, text in texts.items() if text}
    if pairs:
        update["mes_example"] = mes_example(pairs)
    return profile.model_copy(update=update)


def card_text(character: Character) -> str:
    """The card as a person reads it: `ChatResult.content`."""
    parts = [
        ("Name", character.name),
        ("Description", character.description),
        ("Personality", character.personality),
        ("Scenario", character.scenario),
        ("First message", character.first_mes),
    ]
    lines = [f"{label}: {text}" for label, text in parts if text]
    if character.mes_example:
        lines.append(f"Example dialogue:\n{character.mes_example}")
    return "\n".join(lines)


def validate_card(check: CardCheck, policy: Policy | None = None) -> CardVerdict:
    """Whether the card may be returned as it is; `card` is the Character Card V3 (None: no object in the output,
    nothing to return)."""
    card = reply_object(check.reply)
    if card is None:
        reason = "cut_off" if check.finish_reason == "length" else "not_json"
        return CardVerdict(valid=False, reasons=[reason], cleaned="")
    texts = written_texts(card, check.profile, check.user_name)
    pairs = written_examples(card, check.profile, check.user_name)
    reasons = card_reasons(texts, pairs, check, policy)
    character = carded(check.profile, texts, pairs)
    return CardVerdict(valid=not reasons, reasons=reasons, cleaned=card_text(character), card=card_v3(character))
