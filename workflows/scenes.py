"""Scene prompts and storyboards (job type chat_scene): the prompt that asks the model for an image prompt of the
chat (`scene_prompt`), and the check of what it wrote (`validate_scene`): cleaned into comma-separated visual
keywords, the character's `image_prompt_prefix` first. Pure given a token counter.

A prompt shows what its mode says (SUBJECTS) and is drawn from the visible parts of the profiles (description,
appearance; never personality or background), the user's persona, the scenario and the newest messages that fit.
A storyboard is asked for as JSON (`storyboard_schema`, the engine's constrained decoding): `panels` objects of
{prompt, caption}, in story order. What the model writes is rejected (and regenerated) when it is empty, prose
instead of keywords, a reply in character instead of a prompt, a refusal or against the policy."""

from __future__ import annotations

import json
import re
from typing import Any

from characters import Character, fill_macros
from workflows.context import MESSAGE_OVERHEAD, REPLY_PRIMER, ContextTooLarge, TokenCounter, char_name
from workflows.models import (
    ChatJob,
    JobType,
    Message,
    Panel,
    ResolvedSampling,
    SceneCheck,
    SceneMessages,
    SceneMode,
    ScenePrompt,
    SceneSettings,
    SceneVerdict,
    Storyboard,
)
from workflows.policy import Policy
from workflows.prompts import system_prompt
from workflows.sampling import first_sampling
from workflows.summary_validation import is_scene
from workflows.validation import REFUSAL

SUBJECTS: dict[SceneMode, str] = {
    "character": "a full-body portrait of {{char}} alone: build, face, hair, eyes, clothes, pose, expression",
    "face": "a close-up of {{char}}'s face alone: face shape, eyes, hair, skin, expression",
    "user": "a full-body portrait of {{user}} alone: build, face, hair, eyes, clothes, pose, expression",
    "last_message": "the moment the last message shows: the place, who is there and where they stand, what they "
    "are doing, how they look",
    "story": "the story so far in one picture: what happened lately, how the characters look, the surroundings",
    "background": "the place alone, with no people: the location, time of day, weather, light",
    "storyboard": "the story so far as a storyboard",
}
# The modes whose picture shows the character: its prompt prefix goes first.
PREFIXED: frozenset[SceneMode] = frozenset({"character", "face", "last_message", "story", "storyboard"})
# The newest messages a mode's prompt draws on (then as many of them as fit the budget).
RECENT_MESSAGES: dict[SceneMode, int] = {
    "character": 6,
    "face": 6,
    "user": 6,
    "last_message": 3,
    "story": 20,
    "background": 6,
    "storyboard": 20,
}
CHARS_PER_TOKEN = 3  # a message too long to fit on its own is cut to this many characters per token of room
STORYBOARD_TOKENS_PER_PANEL = 80
# Bounds of what is kept.
MAX_KEYWORDS = 40
MAX_PROMPT_CHARS = 400
PANEL_PROMPT_CHARS = 120
CAPTION_CHARS = 60
MIN_KEYWORDS = 3
# A keyword longer than this, or one with a verb of being or an inner sentence end, is prose; a prompt whose words
# are mostly in such keywords is prose.
KEYWORD_WORDS = 8
PROSE_SHARE = 0.5

SCENE_REASONS: dict[str, str] = {
    "empty": "no keyword left after cleaning (a storyboard: a panel without a prompt or a caption)",
    "too_short": f"fewer than {MIN_KEYWORDS} keywords (in a panel)",
    "prose": "sentences instead of keywords",
    "in_character": "a reply in character instead of a prompt: a speaker's label, an action between asterisks, "
    "first or second person outside quotes, or mostly dialogue",
    "refusal": "an assistant-style refusal",
    "not_json": "a storyboard that is not the JSON asked for (or has fewer panels than asked)",
    "repetitive": "a storyboard whose panels repeat the same prompt",
    "policy": "matches a pattern the platform forbids",
}

PREAMBLE = re.compile(
    r"\A\s*(?:(?:sure|okay|ok|certainly)[,!.]?\s*)?(?:here(?: is|'s| are) [^\n:]*:\s*"
    r"|\**(?:image |scene )?(?:prompt|keywords|tags)\**\s*:\**\s*)",
    re.IGNORECASE,
)
QUOTES = re.compile(r"[\"“”‘’`*_#]|(?<!\w)'|'(?!\w)")
SEPARATOR = re.compile(r"[,;\n|]+")
LIST_MARK = re.compile(r"^\s*(?:[-•+]|\d+[.)])\s+")
EDGE_PUNCTUATION = " \t.:!?-–—()[]{}"
PROSE_WORDS = re.compile(r"\b(?:is|are|was|were|has|have|had|will|would)\b|[a-z][.!?]\s+\w", re.IGNORECASE)
# Traits no picture shows: a keyword with one of these is left out.
NOT_VISIBLE = re.compile(
    r"\b(?:personality|voice|sounds?|smells?|scent|thinks?|thoughts?|feels?|feelings?|loyal|honest|kind-hearted"
    r"|intelligent|clever|witty|quick-witted|sharp-tongued|brave|secrets?|backstory|orphaned|named|name)\b",
    re.IGNORECASE,
)
FILLER = frozenset({"a", "an", "the", "and", "with", "of", "in", "on", "at", "s"})


def scene_names(character: Character | None, user_name: str) -> list[str]:
    """The names a prompt must not hold (the image model cannot know them): the character's name, nickname and
    their first words, and the user's name."""
    names = [user_name]
    if character is not None:
        names += [character.name, character.nickname, character.name.split()[0], character.char_name.split()[0]]
    return sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)


def scene_prefix(character: Character | None, settings: SceneSettings) -> str:
    return character.image_prompt_prefix.strip() if character is not None and settings.mode in PREFIXED else ""


def visual_sheet(character: Character) -> str:
    lines = [f"{{{{char}}}}: {character.description.strip()}".rstrip(": ")]
    if character.appearance.strip():
        lines.append(f"Appearance: {character.appearance.strip()}")
    return "\n".join(lines)


def persona_sheet(job: ChatJob) -> str:
    return f"{{{{user}}}}: {job.user_description.strip()}".rstrip(": ")


def scene_request(settings: SceneSettings) -> str:
    if settings.mode == "storyboard":
        return (
            f"Write a storyboard of the story so far: exactly {settings.panel_count} panels in story order, as JSON "
            '{"panels": [{"prompt": "...", "caption": "..."}]}. Each prompt is a comma-separated list of visual '
            "keywords for one picture, as above; each caption is one short line saying what happens."
        )
    return f"Write the image prompt for {SUBJECTS[settings.mode]}. Only the comma-separated keywords."


def fixed_texts(job: ChatJob, character: Character | None, settings: SceneSettings) -> list[str]:
    """The instruction, the sheets and the request: what always goes in, macros filled."""
    texts = [system_prompt(JobType.scene)]
    sheets = [visual_sheet(character) if character is not None else "", persona_sheet(job)]
    scenario = (job.scenario or (character.scenario if character is not None else "")).strip()
    if scenario:
        sheets.append(f"Scenario: {scenario}")
    texts.append("\n".join(sheet for sheet in sheets if sheet))
    texts.append(scene_request(settings))
    return [fill_macros(text, char=char_name(character), user=job.user_name).strip() for text in texts]


def transcript(job: ChatJob, character: Character | None, settings: SceneSettings) -> list[str]:
    """The mode's newest chat messages as labelled lines, oldest first (system messages are instructions)."""
    names = {"user": job.user_name, "assistant": char_name(character)}
    chat = [m for m in job.messages if m.role != "system"][-RECENT_MESSAGES[settings.mode] :]
    lines = [f"{m.name or names[m.role]}: {m.content.strip()}" for m in chat]
    if settings.mode == "last_message" and lines:
        lines[-1] = f"The last message: {lines[-1]}"
    return lines


def scene_texts(job: ChatJob, character: Character | None) -> list[str]:
    """Every text `scene_prompt` may count."""
    assert job.scene is not None
    return [*fixed_texts(job, character, job.scene), *transcript(job, character, job.scene)]


def scene_prompt(job: ChatJob, character: Character | None, *, budget: int, count: TokenCounter) -> SceneMessages:
    """The scene's messages: the instruction; then the sheets, the newest messages that fit `budget` (at least the
    last, cut to fit when it alone does not) and the request."""
    settings = job.scene
    assert settings is not None
    instruction, sheets, request = fixed_texts(job, character, settings)
    used = 2 * MESSAGE_OVERHEAD + REPLY_PRIMER + count(instruction) + count(sheets) + count(request) + 4
    if used > budget:
        raise ContextTooLarge(f"the scene's instruction and profiles take {used} tokens, over the budget of {budget}")
    kept: list[str] = []
    for line in reversed(transcript(job, character, settings)):
        price = count(line) + 1
        if used + price > budget:
            if not kept:
                kept.append(line[: (budget - used) * CHARS_PER_TOKEN])
                used = budget
            break
        kept.insert(0, line)
        used += price
    body = "\n\n".join(part for part in (sheets, "The chat:\n" + "\n".join(kept), request) if part)
    storyboard = settings.mode == "storyboard"
    names = scene_names(character, job.user_name)
    return SceneMessages(
        messages=[Message(role="system", content=instruction), Message(role="user", content=body)],
        prompt_tokens=used,
        stop=[] if storyboard else [f"\n{name}:" for name in names],
        json_schema=storyboard_schema(settings.panel_count) if storyboard else None,
        names=names,
        prefix=scene_prefix(character, settings),
    )


def storyboard_schema(panels: int) -> dict[str, Any]:
    """A storyboard of exactly `panels` panels, its strings bounded so that the engine's grammar closes it within the
    default max_tokens (llama.cpp spells a bound of n characters out as n grammar rules: longer bounds slowed
    SmolLM2's sampling several times over)."""
    prompt = {"type": "string", "minLength": 1, "maxLength": PANEL_PROMPT_CHARS}
    caption = {"type": "string", "minLength": 1, "maxLength": CAPTION_CHARS}
    panel = {
        "type": "object",
        "properties": {"prompt": prompt, "caption": caption},
        "required": ["prompt", "caption"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"panels": {"type": "array", "items": panel, "minItems": panels, "maxItems": panels}},
        "required": ["panels"],
        "additionalProperties": False,
    }


def scene_sampling(job: ChatJob, seed: int) -> ResolvedSampling:
    """The first attempt's sampling: chat_scene's defaults, a storyboard's max_tokens per panel."""
    sampling = first_sampling(JobType.scene, job.sampling, seed)
    if job.scene is None or job.scene.mode != "storyboard" or job.sampling.max_tokens is not None:
        return sampling
    return sampling.model_copy(update={"max_tokens": STORYBOARD_TOKENS_PER_PANEL * job.scene.panel_count})


# Cleaning ---------------------------------------------------------------------------------------------------


def raw_keywords(text: str, finish_reason: str) -> list[str]:
    """The model's keywords as written (preamble, list marks and quotes gone); a list stopped by the token limit
    loses its last keyword, which may be cut."""
    text = PREAMBLE.sub("", text, count=1)
    parts = SEPARATOR.split(text)
    if finish_reason == "length" and len(parts) > 1:
        parts = parts[:-1]
    keywords = (" ".join(QUOTES.sub("", LIST_MARK.sub("", part)).split()) for part in parts)
    return [k.strip(EDGE_PUNCTUATION) for k in keywords if k.strip(EDGE_PUNCTUATION)]


def without_names(keyword: str, names: list[str]) -> str:
    for name in names:
        keyword = re.sub(rf"\b{re.escape(name)}(?:'s|’s)?\b", " ", keyword, flags=re.IGNORECASE)
    words = keyword.split()
    return "" if all(w.lower() in FILLER for w in words) else " ".join(words).strip(EDGE_PUNCTUATION)


def bounded(keywords: list[str], max_chars: int) -> list[str]:
    """The first keywords, deduplicated (any case), at most MAX_KEYWORDS and `max_chars` joined."""
    kept: list[str] = []
    seen: set[str] = set()
    length = 0
    for keyword in keywords:
        if keyword.casefold() in seen:
            continue
        added = len(keyword) + (2 if kept else 0)
        if len(kept) == MAX_KEYWORDS or length + added > max_chars:
            break
        kept.append(keyword)
        seen.add(keyword.casefold())
        length += added
    return kept


def cleaned_keywords(raw: list[str], names: list[str], max_chars: int = MAX_PROMPT_CHARS) -> list[str]:
    """The visual keywords kept: names taken out, keywords of traits no picture shows left out, bounded."""
    visual = (without_names(k, names) for k in raw if not NOT_VISIBLE.search(k))
    return bounded([k for k in visual if k], max_chars)


def with_prefix(keywords: list[str], prefix: str) -> str:
    """The prompt: the prefix's keywords as written, then the model's that the prefix does not already hold."""
    own = [k.strip() for k in prefix.split(",") if k.strip()]
    taken = {k.casefold() for k in own}
    return ", ".join([*own, *(k for k in keywords if k.casefold() not in taken)])


def is_prose(raw: list[str]) -> bool:
    words = [len(k.split()) for k in raw]
    prose = sum(n for k, n in zip(raw, words, strict=True) if n > KEYWORD_WORDS or PROSE_WORDS.search(k))
    return sum(words) > 0 and prose >= PROSE_SHARE * sum(words)


def keyword_reasons(text: str, raw: list[str], kept: list[str], check: SceneCheck) -> list[str]:
    """What is wrong with one prompt the model wrote (`text`), its keywords as written and as kept."""
    if not kept:
        return ["empty"]
    checks = [
        ("too_short", len(kept) < MIN_KEYWORDS),
        ("prose", is_prose(raw)),
        ("in_character", is_scene(text, check.char_name, check.user_name)),
        ("refusal", bool(REFUSAL.search(text.replace("’", "'")))),
    ]
    return [reason for reason, found in checks if found]


def cleaned_caption(caption: str) -> str:
    """One line without markdown; one that reached CAPTION_CHARS (the schema's bound, where the grammar may have
    cut a word) is cut back to its last whole word."""
    line = " ".join(caption.replace("*", "").replace("#", "").split())
    if len(line) < CAPTION_CHARS:
        return line
    return line[:CAPTION_CHARS].rsplit(" ", 1)[0].rstrip(",;:.") + "…"


def storyboard_panels(output: str, panels: int) -> list[tuple[str, str]] | None:
    """The (prompt, caption) pairs of a storyboard as written, the first `panels` of them; None when the output is
    not a storyboard or has fewer panels."""
    try:
        value = json.loads(output)
    except ValueError:
        return None
    items = value.get("panels") if isinstance(value, dict) else None
    if not isinstance(items, list) or len(items) < panels:
        return None
    pairs = [(item.get("prompt"), item.get("caption")) for item in items[:panels] if isinstance(item, dict)]
    if len(pairs) < panels or not all(isinstance(p, str) and isinstance(c, str) for p, c in pairs):
        return None
    return [(str(p), str(c)) for p, c in pairs]


def rendered(scene: ScenePrompt | Storyboard) -> str:
    """`content`: the prompt, or the storyboard's panels numbered, each caption over its prompt."""
    if isinstance(scene, ScenePrompt):
        return scene.prompt
    return "\n".join(f"{i}. {panel.caption}\n   {panel.prompt}" for i, panel in enumerate(scene.panels, start=1))


def scene_of_output(check: SceneCheck) -> tuple[ScenePrompt | Storyboard | None, list[str]]:
    """The scene the output makes, cleaned, and the reasons to reject it (the policy aside)."""
    if check.scene.mode != "storyboard":
        raw = raw_keywords(check.output, check.finish_reason)
        kept = cleaned_keywords(raw, check.names)
        reasons = keyword_reasons(PREAMBLE.sub("", check.output, count=1), raw, kept, check)
        return (ScenePrompt(prompt=with_prefix(kept, check.prefix)) if kept else None), reasons
    pairs = storyboard_panels(check.output, check.scene.panel_count)
    if pairs is None:
        return None, ["not_json"]
    panels: list[Panel] = []
    reasons: list[str] = []
    for prompt, caption in pairs:
        # A prompt that reached the schema's bound may end in a cut keyword, as one stopped by the token limit.
        raw = raw_keywords(prompt, "length" if len(prompt) >= PANEL_PROMPT_CHARS else "stop")
        kept = cleaned_keywords(raw, check.names, PANEL_PROMPT_CHARS)
        reasons += keyword_reasons(prompt, raw, kept, check)
        line = cleaned_caption(caption)
        if not line:
            reasons.append("empty")
        if kept and line:
            panels.append(Panel(prompt=with_prefix(kept, check.prefix), caption=line))
    prompts = [p.prompt.casefold() for p in panels]
    if len(set(prompts)) < len(prompts):
        reasons.append("repetitive")
    whole = len(panels) == len(pairs)  # a panel without keywords or caption: nothing to return
    return (Storyboard(panels=panels) if whole else None), list(dict.fromkeys(reasons))


def validate_scene(check: SceneCheck, policy: Policy | None = None) -> SceneVerdict:
    """Whether the scene may be returned; `cleaned` is its rendering ("" when nothing could be read: the attempt
    cannot be returned even flagged)."""
    scene, reasons = scene_of_output(check)
    if policy is not None and policy.violations(check.output):
        reasons.append("policy")
    return SceneVerdict(valid=not reasons, reasons=reasons, cleaned=rendered(scene) if scene else "", scene=scene)
