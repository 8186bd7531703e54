"""Speech-ready text: a reply split into segments for the platform's voice worker (`ChatJob.speech`).

Pure and deterministic (the workflow computes it from the chosen reply; a replay computes the same):
1. Markdown goes (code blocks, headings, quote marks `>`, list bullets, rules, links and images, inline code,
   bold, strike-through, HTML tags), and so do emoji and a speaker's name label at a line's start (`Mira:`).
2. In a scene (roleplay), quoted speech (" ", “ ”, „ “, « », 「 」, 『 』) is `dialogue`, text between asterisks
   is `narration` (actions), and each may hold the other (an `*action*` inside a quote, a quote inside an
   action). Plain text is narration when the reply quotes its speech (novel style: `Mira smiles. "Hi."`), else
   dialogue (chat style: `*smiles* Hi.`). An unclosed marker runs to the end of its line (markers never cross a
   line break); a closing quote with nothing open is dropped. A chat_conversation reply is the assistant
   speaking: all of it is dialogue (asterisks are emphasis there, and quotes are kept).
3. The markers go; neighbouring pieces of one kind join; pieces without a letter or digit go.
4. A piece longer than SPEECH_SEGMENT_CHARS is split at sentence ends into chunks as long as fit; a sentence
   longer than that at a clause (, ; : — or CJK 、，；：), then at a space, then anywhere. A sentence ends at
   . ! ? … (and 。！？ without a space) followed by what is not a lower-case letter, except after a title or an
   initial (Mr. Dr. St. J. e.g.; not "I")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from characters import ASSISTANT_NAME, Character
from workflows.models import SPEECH_SEGMENT_CHARS, ChatJob, ChatResult, JobType, SpeechSegment

Kind = Literal["dialogue", "narration"]
# A marker's kind while scanning: quoted, between asterisks, or neither (decided per reply).
Run = Literal["quote", "action", "plain"]

# Each opening quote and the quote that closes it.
QUOTES = {'"': '"', "“": "”", "„": "“", "«": "»", "「": "」", "『": "』"}
CLOSING_QUOTES = frozenset(QUOTES.values())
ACTION = "*"

CODE_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)
RULE_LINE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)
LINE_START = re.compile(r"^[ \t]*(?:#{1,6}[ \t]+|>[ \t]?|(?:[-+]|\*(?=[ \t])|\d{1,3}[.)])[ \t]+)+", re.MULTILINE)
# Neither bracket inside the text nor a parenthesis or white space inside the address: each try stops at the next
# one, so a reply full of brackets costs linear time, not quadratic.
IMAGE = re.compile(r"!\[[^\[\]\n]*\]\([^()\s]*\)")
LINK = re.compile(r"\[([^\[\]\n]+)\]\([^()\s]*\)")
INLINE_CODE = re.compile(r"`+([^`\n]*)`+")
EMPHASIS_PAIRS = re.compile(r"\*\*|__|~~")
HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
# Pictographs, dingbats and symbols, their variation selectors, joiners, keycaps and tag characters.
EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2190-\u21ff\u2300-\u23ff"
    "\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f]"
)

SENTENCE_END = re.compile(r"(?:[.!?]+|…+)[\"”»’)\]」』]*\s+|[。！？]+[”」』）]*\s*")
CLAUSE_END = re.compile(r"[,;:—–][\"”»’)\]]*\s+|[、，；：]\s*")
WORD_END = re.compile(r"\s+")
# Words after which a period ends no sentence (lower case, without the period).
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "mx", "dr", "prof", "st", "sr", "jr", "mt", "capt", "col", "gen", "lt", "sgt", "rev"}
    | {"fr", "vs", "no", "vol", "fig", "approx", "dept", "est", "inc", "ltd", "co", "cf"}
)
INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]", re.UNICODE)


@dataclass(frozen=True)
class Voice:
    """Who speaks a reply, as the segments name them: the profile's name (or the assistant's), its voice, and
    the labels its lines may start with."""

    speaker: str
    voice: str | None
    labels: tuple[str, ...]


def voice_of(character: Character | None) -> Voice:
    """Who speaks a reply: the character by its profile's name (as `GroupReply.speaker` names it), in its voice;
    without a character, the assistant. Its labels: the name, the nickname and the first name."""
    if character is None:
        return Voice(ASSISTANT_NAME, None, (ASSISTANT_NAME,))
    labels = (character.name, character.char_name, character.name.split()[0])
    return Voice(character.name, character.voice.strip() or None, labels)


def with_speech(job: ChatJob, result: ChatResult, characters: Sequence[Character | None]) -> ChatResult:
    """The result with `speech` when the job asks for it: a group's replies in order, each in its member's voice
    (`characters` are the members), else `content` in the voice of `characters[0]` (None: the assistant). A
    continuation continues the job's last message."""
    if not job.speech:
        return result
    scene = job.job_type is not JobType.conversation
    if result.replies:
        members = {c.name: c for c in characters if c is not None}
        segments = [
            segment
            for reply in result.replies
            for segment in speech_segments(
                reply.content, voice_of(members.get(reply.speaker) or Character(name=reply.speaker)), scene=scene
            )
        ]
    else:
        before = job.messages[-1].content if job.mode == "continue" else ""
        segments = speech_segments(result.content, voice_of(characters[0]), scene=scene, before=before)
    return result.model_copy(update={"speech": segments})


def speech_segments(text: str, voice: Voice, *, scene: bool = True, before: str = "") -> list[SpeechSegment]:
    """The reply as speech segments in order; [] when nothing in it is speakable. `scene`: roleplay markup
    (quotes are dialogue, asterisks narration); otherwise all of it is dialogue. `before`: the text the reply
    continues (mode continue): the reply's first words are in the quote or asterisks its last line left open, and
    its quotes count for how plain text is read."""
    cleaned = spoken_text(text, voice.labels)
    if not scene:
        pieces: list[tuple[Kind, str]] = [("dialogue", cleaned.replace(ACTION, ""))]
    else:
        lead = spoken_text(before, voice.labels)
        runs = scanned(lead + cleaned)
        plain: Kind = "narration" if any(kind == "quote" for kind, _ in runs) else "dialogue"
        pieces = [("dialogue" if run == "quote" else "narration" if run == "action" else plain, t) for run, t in runs]
        pieces = after_offset(pieces, sum(1 for char in lead if not is_marker(char)))
    return [
        SpeechSegment(speaker=voice.speaker, kind=kind, text=chunk, voice=voice.voice)
        for kind, joined in joined_pieces(pieces)
        for chunk in chunks(joined)
        if speakable(chunk)
    ]


def spoken_text(text: str, labels: Sequence[str]) -> str:
    """The text without markdown, HTML, emoji or the speaker's name labels at line starts; line breaks kept."""
    text = CODE_BLOCK.sub("", text.replace("\r\n", "\n"))
    text = RULE_LINE.sub("", text)
    text = IMAGE.sub("", text)
    text = LINK.sub(r"\1", text)
    text = INLINE_CODE.sub(r"\1", text)
    text = EMPHASIS_PAIRS.sub("", text)
    text = HTML_TAG.sub("", text)
    text = EMOJI.sub("", text)
    text = LINE_START.sub("", text)
    names = sorted({label.strip() for label in labels if label.strip()}, key=len, reverse=True)
    if names:
        label = re.compile(
            rf"^[ \t]*(?:{'|'.join(re.escape(n) for n in names)})[ \t]*:[ \t]*", re.MULTILINE | re.IGNORECASE
        )
        text = label.sub("", text)
    return text


def scanned(text: str) -> list[tuple[Run, str]]:
    """The text's characters grouped by the marker they are in (the innermost one), the markers left out."""
    runs: list[tuple[Run, list[str]]] = []
    open_markers: list[str] = []  # asterisks and opening quotes, innermost last
    for char in text:
        if char == "\n":
            open_markers.clear()
        elif is_marker(char):
            marked(open_markers, char)
            continue
        run: Run = "plain"
        if open_markers:
            run = "action" if open_markers[-1] == ACTION else "quote"
        if runs and runs[-1][0] == run:
            runs[-1][1].append(char)
        else:
            runs.append((run, [char]))
    return [(run, "".join(chars)) for run, chars in runs]


def is_marker(char: str) -> bool:
    return char == ACTION or char in QUOTES or char in CLOSING_QUOTES


def marked(open_markers: list[str], char: str) -> None:
    """The open markers after `char`: it closes the innermost open marker it closes (and any opened inside it),
    else opens one if it can; a closing quote with nothing to close is dropped."""
    for index in range(len(open_markers) - 1, -1, -1):
        opener = open_markers[index]
        if (opener == ACTION and char == ACTION) or (opener != ACTION and QUOTES[opener] == char):
            del open_markers[index:]
            return
    if char == ACTION or char in QUOTES:
        open_markers.append(char)


def after_offset(pieces: list[tuple[Kind, str]], offset: int) -> list[tuple[Kind, str]]:
    """The pieces' text from character `offset` on (the text the reply continues is left out)."""
    kept: list[tuple[Kind, str]] = []
    for kind, text in pieces:
        if offset >= len(text):
            offset -= len(text)
            continue
        kept.append((kind, text[offset:]))
        offset = 0
    return kept


def joined_pieces(pieces: list[tuple[Kind, str]]) -> list[tuple[Kind, str]]:
    """Pieces with their white space collapsed, those without a letter or digit left out, neighbours of one kind
    joined."""
    joined: list[tuple[Kind, str]] = []
    for kind, text in pieces:
        words = " ".join(text.split())
        if not speakable(words):
            continue
        if joined and joined[-1][0] == kind:
            joined[-1] = (kind, f"{joined[-1][1]} {words}")
        else:
            joined.append((kind, words))
    return joined


def speakable(text: str) -> bool:
    """Whether the text has a letter or a digit (punctuation alone says nothing)."""
    return any(char.isalnum() for char in text)


def chunks(text: str, limit: int = SPEECH_SEGMENT_CHARS) -> list[str]:
    """The text in chunks of at most `limit` characters, split at sentence ends (a sentence too long: at a
    clause, then a space, then anywhere), each chunk as many whole parts as fit, its spacing as written."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    for ends in (sentence_ends, clause_ends, word_ends):
        parts = split_at(text, ends(text))
        if len(parts) > 1:
            return packed(parts, limit)
    return [text[start : start + limit] for start in range(0, len(text), limit)]


def packed(parts: list[str], limit: int) -> list[str]:
    """Neighbouring parts (each with the white space after it) joined while they fit; a part too long on its own
    is split further."""
    result: list[str] = []
    current = ""
    for part in parts:
        if len((current + part).strip()) <= limit:
            current += part
            continue
        if current.strip():
            result.append(current.strip())
        current = part if len(part.strip()) <= limit else ""
        if not current:
            result.extend(chunks(part, limit))
    if current.strip():
        result.append(current.strip())
    return result


def split_at(text: str, ends: list[int]) -> list[str]:
    bounds = [0, *ends, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if text[a:b].strip()]


def sentence_ends(text: str) -> list[int]:
    """Where sentences end (the index after the punctuation and its white space)."""
    ends = []
    for match in SENTENCE_END.finditer(text):
        after = text[match.end() : match.end() + 1]
        if match.end() >= len(text) or after.islower():
            continue
        if match.group().startswith(".") and not match.group().startswith("..") and abbreviated(text, match.start()):
            continue
        ends.append(match.end())
    return ends


def abbreviated(text: str, period: int) -> bool:
    """Whether the period at `period` ends a title or initials (Mr. Dr. J. e.g.), not a sentence."""
    before = text[max(0, period - 20) : period]  # longer words are no abbreviation
    word = before.rsplit(maxsplit=1)[-1] if before.strip() else ""
    word = word.lstrip("\"“„«(['")
    return word.lower() in ABBREVIATIONS or (word != "I" and bool(INITIALS.fullmatch(word)))


def clause_ends(text: str) -> list[int]:
    return [m.end() for m in CLAUSE_END.finditer(text) if m.end() < len(text)]


def word_ends(text: str) -> list[int]:
    return [m.end() for m in WORD_END.finditer(text) if m.end() < len(text)]
