"""Emotion labels (ChatJob.emotion): the prompt of a short classification by the model, its output constrained to
the 28 go_emotions labels (GenerateRequest.json_schema), the lenient reading of what came back, and the note that
lets the character respond to the user's emotion. Pure: the workflow runs the generation."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

from workflows.models import Emotion, Message, ResolvedSampling

EMOTIONS: tuple[Emotion, ...] = get_args(Emotion)
FALLBACK: Emotion = "neutral"
# The object the engine must write: {"emotion": "<label>"}.
EMOTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"emotion": {"type": "string", "enum": list(EMOTIONS)}},
    "required": ["emotion"],
    "additionalProperties": False,
}
# {"emotion": "embarrassment"} is about 10 tokens; room for the whitespace a grammar allows.
EMOTION_MAX_TOKENS = 24
EMOTION_TEMPERATURE = 0.1
EMOTION_TOP_P = 0.9
# The end of a long message is classified (where a message's feeling usually lands); it bounds the prompt.
EMOTION_TEXT_CHARS = 1500
INSTRUCTION = (
    "Classify the emotion the message below expresses. Answer with one label of: "
    + ", ".join(EMOTIONS)
    + '. Reply with JSON only: {"emotion": "<label>"}.'
)
# After the history, when the user's last message has a label other than neutral (macros filled in the context).
USER_EMOTION_NOTE = "[{{user}} feels {emotion}; {{char}} notices it and responds to it.]"
# Words a model may write for a label (lower case).
SYNONYMS: dict[str, Emotion] = {
    "happy": "joy",
    "happiness": "joy",
    "glad": "joy",
    "joyful": "joy",
    "angry": "anger",
    "mad": "anger",
    "rage": "anger",
    "annoyed": "annoyance",
    "irritated": "annoyance",
    "irritation": "annoyance",
    "sad": "sadness",
    "unhappy": "sadness",
    "sorrow": "sadness",
    "afraid": "fear",
    "scared": "fear",
    "fearful": "fear",
    "frightened": "fear",
    "terrified": "fear",
    "surprised": "surprise",
    "shocked": "surprise",
    "amused": "amusement",
    "funny": "amusement",
    "curious": "curiosity",
    "confused": "confusion",
    "disgusted": "disgust",
    "embarrassed": "embarrassment",
    "excited": "excitement",
    "grateful": "gratitude",
    "thankful": "gratitude",
    "thanks": "gratitude",
    "nervous": "nervousness",
    "anxious": "nervousness",
    "anxiety": "nervousness",
    "worried": "nervousness",
    "optimistic": "optimism",
    "hopeful": "optimism",
    "hope": "optimism",
    "proud": "pride",
    "relieved": "relief",
    "remorseful": "remorse",
    "sorry": "remorse",
    "guilt": "remorse",
    "guilty": "remorse",
    "disappointed": "disappointment",
    "loving": "love",
    "affection": "love",
    "grieving": "grief",
    "calm": "neutral",
    "none": "neutral",
}
WORD = re.compile(r"[a-z]+")


def emotion_messages(text: str) -> list[Message]:
    """The classification prompt for `text` (its last EMOTION_TEXT_CHARS characters)."""
    return [Message(role="system", content=INSTRUCTION), Message(role="user", content=text[-EMOTION_TEXT_CHARS:])]


def emotion_sampling(seed: int) -> ResolvedSampling:
    return ResolvedSampling(
        temperature=EMOTION_TEMPERATURE, top_p=EMOTION_TOP_P, max_tokens=EMOTION_MAX_TOKENS, seed=seed
    )


def emotion_label(output: str) -> Emotion | None:
    """The label in the model's output, read leniently: a JSON object's `emotion` (or its only string value), a
    JSON string, else the first label or synonym among its words, any case; None when there is none."""
    try:
        value = json.loads(output)
    except ValueError:
        value = None
    if isinstance(value, dict):
        strings = [v for v in value.values() if isinstance(v, str)]
        chosen = value.get("emotion") if isinstance(value.get("emotion"), str) else None
        if chosen is None and len(strings) == 1:
            chosen = strings[0]
        if chosen is not None:
            return label_in(chosen)
    if isinstance(value, str):
        return label_in(value)
    return label_in(output)


def label_in(text: str) -> Emotion | None:
    """The first of `text`'s words that is a label or a synonym of one."""
    for word in WORD.findall(text.lower()):
        if word in EMOTIONS:
            return word  # type: ignore[return-value]  # one of EMOTIONS
        if word in SYNONYMS:
            return SYNONYMS[word]
    return None


def user_emotion_note(emotion: Emotion) -> str | None:
    """The note after the history for the user's emotion (macros unfilled); none for `neutral`, which gives the
    character nothing to respond to."""
    return None if emotion == FALLBACK else USER_EMOTION_NOTE.replace("{emotion}", emotion)
