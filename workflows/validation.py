"""Reply validation: what is wrong with a raw reply, and the reply after the fixes that are safe to make.
Pure: no I/O.

Cleaning: strip a leading "Name:" label of the character's own; cut where the reply starts writing the user's
part (a line under the user's label, or narration of what the user does, feels or says); trim back to the
last sentence end with quotes and asterisks balanced when the engine hit the token limit mid-sentence.
An impersonated message (mode impersonate, `ReplySpec.writes_as` "user") is the user's: the roles swap (the
user's own label is stripped, the character's part is cut), and shortness is no warning.
`reasons` lists every problem found in the raw reply, those fixed by cleaning and warnings included; `valid`
says whether `cleaned` may be shown to the user as it is."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from difflib import SequenceMatcher

from characters import Character
from workflows.models import JobType, Message, ReplySpec, Verdict
from workflows.policy import Policy

MIN_CHARS = 10
SHORT_CHARS = 50

# Every reason code, in one place. FIXED and WARNINGS do not make a cleaned reply invalid by themselves.
REASONS: dict[str, str] = {
    "empty": "no text at all after cleaning",
    "too_short": f"fewer than {MIN_CHARS} characters of content",
    "short": f"warning: fewer than {SHORT_CHARS} characters",
    "repetitive": "repeats its own sentences or phrases: a sentence again with small changes, a phrase three "
    "times or more, clauses stamped from one template",
    "echoes_history": "repeats an earlier assistant message, word for word or with small changes",
    "out_of_character": "roleplay only: assistant mode (code blocks unless the character's profile writes code, "
    "lists, tutorials, essays with no one of the scene in them, offers of help), or fourth-wall talk (being an AI, "
    "a character, a chatbot or words on a page; the story or scene as a text; the prompt's instructions)",
    "refusal": "an assistant-style refusal or apology-and-decline in a roleplay or unrestricted job",
    "speaks_for_user": "writes the user's part: their lines under any label, or narration of what they do, feel "
    "or say; in a group, also another member's lines under its label (cut off in `cleaned`)",
    "speaks_for_character": "impersonate only: the user's message writes the character's part: their lines under "
    "the character's label, or narration of what the character does (cut off in `cleaned`)",
    "cut_off": "ends mid-sentence at the token limit (trimmed in `cleaned` to a sentence end with quotes and "
    "asterisks balanced, when one exists)",
    "policy": "matches a pattern the platform forbids",
}
WARNINGS = frozenset({"short"})
FIXED = frozenset({"speaks_for_user", "speaks_for_character"})
# The jobs where a character speaks: the user's part and refusals are checked there.
CHARACTER_JOBS = frozenset({JobType.roleplay, JobType.unrestricted})
# Two sentences of at least NEAR_WORDS words this similar are one sentence back with small changes.
NEAR_WORDS = 5
NEAR_RATIO = 0.8
# A phrase of PHRASE_WORDS words three times is a stamp.
PHRASE_WORDS = 4
# A reply sharing this much of its vocabulary with an earlier assistant message (words in common / words in
# either) is that message with small changes.
ECHO_SHARED = 0.6

CODE_SPAN = re.compile(r"```.*?(?:```|$)", re.DOTALL)
# A sentence end: terminal punctuation and the closing marks after it, or a closing asterisk, bracket or code
# fence ending the text (a closing quote alone may end a word: `or "neuromusic"`). It counts only where the
# quotes and asterisks before it are balanced and it is not a list number.
SENTENCE_END = re.compile(r"""[.!?…]+[)"'*”’\]_~]*(?=\s|$)|(?:[*)\]]|```)(?=\s*$)""")
LIST_NUMBER = re.compile(r"(?:^|\n)[ \t]*\d+[.)]$")
LIST_MARK = r"(?:\d+[.)]|\[\d+\]|[-•])"
LIST_ITEM = re.compile(rf"^[ \t]*{LIST_MARK}[ \t]+\S.*$", re.MULTILINE)
QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”')
# An action between asterisks; one never closed runs to the end of its line.
ACTION = re.compile(r"(?<!\*)\*(?![*\s])(?:[^*]+(?<!\s)\*(?!\*)|[^*\n]+$)", re.MULTILINE)
SINGLE_ASTERISK = re.compile(r"(?<!\*)\*(?!\*)")

OUT_OF_CHARACTER = re.compile(
    r"\bas an ai\b|\b(?:ai|large) language model\b|\(\s*ooc\b|\[\s*ooc\b|\bout of character\b"
    r"|\brole-?play(?:s|ing)?\b|\bas (?:a|your) (?:helpful )?(?:ai )?assistant\b"
    r"|\b(?:it|this)(?: is|'s) (?:just |only )?an? (?:[\w-]+ ){0,2}?(?:ai|chatbot|language model)\b"
    r"|\bi(?: am|'m) (?:just |only |merely )?(?:a |an )?(?:piece of )?(?:text|string of text)\b"
    r"|\bi(?:'d| would) be (?:happy|glad|delighted) to (?:help|assist|explain|answer)\b"
    r"|^[ \t]*(?:sure|certainly|of course)[,!]? i(?:'d| would) be (?:happy|glad|delighted) to\b"
    r"|^[ \t]*(?:chat history|character description|system prompt|instructions)[ \t]*:"
    # being an AI, a character, a chatbot, a program, words on a page
    r"|\bi(?: am|'m) (?:just |only |merely |simply |not real,? (?:just )?)?an? (?:assistant|(?:[\w-]+ ){0,2}?"
    r"(?:ai|chatbot|chat bot|bot|language model|computer program|(?:non-player |fictional |virtual )character)"
    r"(?! of\b))\b"
    r"|\bi(?: am|'m) (?:just |only |merely |simply )?(?:a|the) character (?:in|for|from) \w"
    r"|\bi(?: am|'m) (?:just |only |merely |simply )?(?:a|the) character of (?:a|an|this|your|the)\b"
    r"|\bas an? (?:fictional |virtual )?(?:character|chatbot|bot|language model)\b"
    r"|\b(?:i(?: am|'m)|we(?: are|'re)) (?:just |only |merely |nothing but )?(?:\w+ )?words on a (?:page|screen)\b"
    r"|\bi (?:don't|do not) have (?:a )?(?:personal |physical |real )?(?:feelings|emotions|body|experiences|opinions)\b"
    r"|\b(?:the|my) (?:previous|last) (?:response|reply|answer|prompt)\b"
    r"|\bi(?: am|'m) (?:\w+ )?in (?:the|this|your) story\b"
    # the story as a text being written: "I've been writing a story", "your story has been edited"
    r"|\b(?:writ|edit|summari[sz])\w* (?:a |the |this |my |your )?(?:story|description|chapter)\b"
    r"|\b(?:story|description|chapter|response) (?:has been|have been|will be|was|is being) "
    r"(?:writ|edit|shar|creat|told)\w*"
    r"|\b(?:your|this|our|the) story continues\b|\bin the context of (?:your|this|our|the) story\b"
    r"|\bi(?:'ll| will) respond (?:in|with|to your)\b|\b(?:my|your) (?:character|description)\b"
    r"|\b(?:next|previous|last) scene\b|^[ \t]*(?:Q|A|Question|Answer|Assistant|AI):"
    r"|\blet me (?:explain|give you (?:a |an )?(?:\w+ )?explanation)\b|\bi(?:'ll| will) explain (?:it|how|what|this)\b"
    r"|\[\s*(?:understood|noted|acknowledged)\b|https?://|\(\("
    # assistant mode: offers of help, tutorials, summaries
    r"|\bi(?: am|'m) glad (?:to hear )?(?:that )?you(?: are|'re) interested\b"
    r"|\bhow (?:can|may) i (?:help|assist) you\b|\bi(?: am|'m) here to (?:help|assist|chat)\b"
    r"|\bi(?:'ll| will) (?:try to |do my best to )?be (?:helpful|of help|of assistance)\b"
    r"|\b(?:feel free to|don't hesitate to) (?:ask|reach out|let me know)\b"
    r"|\blet me know if you (?:have|need|want|would like)\b|\bis there anything else\b"
    r"|\bhere(?: is|'s) how\b|\bi(?: am|'m) (?:ready|happy|glad) to (?:help|assist)\b|\b(?:follow )?these steps\b"
    r"|\bhere(?: is|'s| are) (?:a |an |the |some |my )?(?:[\w-]+ ){0,3}?(?:function|code|script|program|snippet"
    r"|steps|tips|ways|examples?|list|explanation|summary|overview|guide|breakdown|plot points)\b"
    r"|\b(?:summary|plot) of (?:this|the|our|my) (?:current )?story\b"
    r"|\bin (?:conclusion|summary)\b|\bi hope (?:this|that) helps\b",
    re.IGNORECASE | re.MULTILINE,
)
REFUSAL = re.compile(
    r"\bi (?:can(?:no|')t|won't|will not|am (?:not able|unable) to) (?:assist|help)(?: you)? with (?:this|that|your)"
    r"(?: request)?\b"
    r"|\bi (?:can(?:no|')t|won't|will not|am (?:not able|unable) to) (?:fulfill|comply with|generate|create|produce"
    r"|write|provide|engage in|continue) (?:this|that|such|your|the requested|explicit|sexual|inappropriate)"
    r"(?: \w+)? (?:request|content|story|scene|roleplay|material|conversation)\b"
    r"|\b(?:against|violates?) (?:my|the|our) (?:guidelines|content polic(?:y|ies)|usage polic(?:y|ies)|programming)\b"
    r"|\b(?:it(?:'s| is) )?not appropriate for me to\b"
    # apologise and decline
    r"|\b(?:i(?: am|'m) sorry|i apologi[sz]e|sorry),? (?:but )?(?:i|that)(?: am|'m)? (?:can(?:no|')t|can not|won't"
    r"|will not|(?:am )?(?:not able|unable) to|(?:am )?not comfortable|must decline|(?:is|'s) not something i"
    r"|(?:don't|do not) have (?:any |the )?(?:real|access))\b",
    re.IGNORECASE,
)
# Template markers of a card or prompt left in the reply.
TEMPLATE_MARKER = r"<(?:char|user|bot|chr)>|\{\{(?:char|user)\}\}"
# A code block or a list: assistant mode when nothing around it is in scene.
CODE_OR_LIST = re.compile(
    rf"```|^[ \t]*{LIST_MARK}[ \t]+\S.*\n(?:[ \t]*\n)?^[ \t]*{LIST_MARK}[ \t]+\S"
    r"|(?:^|\s)1[.)]\s.{1,200}?\s2[.)]\s.{1,200}?\s3[.)]\s",
    re.MULTILINE | re.DOTALL,
)
# A profile that makes code the character's voice: a programmer, a coding tutor.
WRITES_CODE = re.compile(
    r"```|\b(?:coding|coder|programm(?:er|ers|ing)|software|developer|hacker|code ?blocks?|source code)\b",
    re.IGNORECASE,
)
# What a character who writes code says of it in scene ("here's the function").
OFFERS_CODE = re.compile(
    r"\bhere(?: is|'s| are) (?:a |an |the |some |my )?(?:[\w-]+ ){0,3}?(?:function|code|script|program|snippet"
    r"|examples?)\b",
    re.IGNORECASE,
)
# A markdown heading: never part of a scene.
HEADING = re.compile(r"^[ \t]*#{1,4} \S", re.MULTILINE)
# Who can be in a scene: persons, as pronouns. A roleplay reply of some length with no one in it, no action and
# no line of dialogue (or all of it one quote) is an essay or an explanation, not the character.
PERSONS = re.compile(r"\b(?:i|me|my|mine|you|your|we|us|our|she|he|her|him|his)\b", re.IGNORECASE)
# An essay's "we" and "our" speak of everyone, no one of the scene: "as we know", "our planet".
EVERYONE = re.compile(
    r"\b(?:as |that |what )?we (?:all |now |can |could |often |usually )?(?:know|see|saw|say|call|need|use|rely|learn"
    r"|understand|live|breathe|eat|think of)\b|\bour (?:planet|world|society|environment|ecosystems?|lives|bodies"
    r"|understanding|daily lives|history|ancestors|species|food|air)\b",
    re.IGNORECASE,
)
ESSAY_WORDS = 20
# What an essay does and a scene description does not: define its subject ("X is a ...", "Rome: a city").
DEFINING = re.compile(
    r"\b(?:is|are|was|were|has|had|it's|has been|have been) (?:a|an|one of the)\b"
    r"|\b(?:is|are|was|were) the \w+ (?:of|by|that|which|in)\b|^[\w ]{1,30}: an? \w",
    re.IGNORECASE | re.MULTILINE,
)

# The user as the subject of a clause in narration ("You nod", "and you lean in", "Your heart races").
USER_SUBJECT = re.compile(
    r"\b(?:you(?:'re| are| were)?(?= \w+(?:ing|ed|en)\b)|you"
    r"|your (?:heart|cheeks?|face|pulse|breath|knees|body|skin|hands?|eyes|lips|voice))\s+"
    r"(?:(?:\w+ly|just|still|never|always|only|even|also|then|now)\s+)?(?P<verb>[\w']+)",
    re.IGNORECASE,
)
# Words after "you" that are never the user acting: auxiliaries, perception, vocatives ("you fool").
NOT_ACTING = frozenset(
    "are were can could will would shall should must may might have had has do does did don't didn't can't won't "
    "is was see hear notice seem seems seemed fool idiot two all there guys".split()
)
# Where nothing tells dialogue from narration: the verbs that dialogue uses to speak of someone.
SAID_TO_SOMEONE = frozenset(
    "know need look looks think mean want like love hate sound got get owe remind deserve understand "
    "believe guess wish say promised promise came went left lied made told took saved kept found broke".split()
)
CLAUSE_OPENERS = frozenset({"and", "then", "so", "but"})
QUESTION = re.compile(r"[^.!?\n]*\?")
# "You sit down and I'll tell you a story": a proposal in dialogue, not narration.
PROPOSAL = re.compile(r"[^.!?\n]*\b(?:and|,) (?:i'll|i will|let me)\b", re.IGNORECASE)


def _blanked(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The text with the spans replaced by spaces: offsets stay the same."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = [c if c == "\n" else " " for c in text[start:end]]
    return "".join(chars)


def _spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def without_dialogue(text: str) -> str:
    """The text with quoted dialogue blanked, unless the whole reply is one quote."""
    blanked = _blanked(text, _spans(QUOTED, text))
    return blanked if blanked.strip() else text


def narration(text: str) -> tuple[str, str]:
    """The reply's narration as quotes or asterisks mark it, and the text that may be narration or unquoted
    dialogue (the rest blanked in each): with quotes, all that is outside them is narration; with asterisks
    only, what is inside them is, and what is outside may be either; with neither, all of it may be either."""
    if QUOTED.search(text):
        return _blanked(text, _spans(QUOTED, text)), ""
    actions = _spans(ACTION, text)
    gaps = list(zip([0, *(end for _, end in actions)], [*(start for start, _ in actions), len(text)], strict=True))
    return _blanked(text, gaps), _blanked(text, actions)


def _speaker_label(*names: str) -> str:
    """A line's "Name:" label, bold, quoted or bracketed, with a stage direction or not ("**Name:**",
    "**Name**:", '"Name":', "[Name]:", "Name (smiling):")."""
    alternatives = "|".join(re.escape(n) for n in names if n)
    return rf"^[ \t]*[*_]*[\"“\[]?(?:{alternatives})[\"”\]]?(?: \([^)\n]{{1,40}}\))?[*_]*[ \t]*:[*_]*"


def _first_name(name: str) -> str:
    words = name.split()
    return words[0] if words else name


def without_own_label(text: str, char_name: str) -> str:
    label = _speaker_label(char_name, _first_name(char_name))
    return re.sub(rf"{label}\s*", "", text, count=1, flags=re.IGNORECASE)


def user_turn_start(text: str, user_name: str) -> int | None:
    """Where the reply starts writing the user's lines under a label, if it does."""
    return labelled_turn_start(text, (user_name, _first_name(user_name)), ("{{user}}", "User", "You", "Human"))


def labelled_turn_start(text: str, names: Sequence[str], generic: Sequence[str] = ()) -> int | None:
    """Where the reply starts a line under one of `names`' labels (or a `generic` one at a line's start)."""
    if not names:
        return None
    at_line_start = re.search(_speaker_label(*names, *generic), text, flags=re.IGNORECASE | re.MULTILINE)
    # or after a sentence end on the same line: 'She smiles. Tam: Thanks.'
    alternatives = "|".join(re.escape(n) for n in names)
    inline = re.search(rf"(?<=[.!?*\"”] )(?:{alternatives}):", text, flags=re.IGNORECASE)
    found = [m.start() for m in (at_line_start, inline) if m]
    return min(found) if found else None


def _opens_clause(told: str, at: int) -> bool:
    before = told[:at].rstrip(" \t")
    if not before or before[-1] in '.!?…\n*:;—-"”,':
        return True
    return before.split()[-1].lower().strip('*_"“”') in CLAUSE_OPENERS


def _acts(verb: str, marked: bool) -> bool:
    """Whether the word after "you" says what the user does; where nothing marks the narration, only a
    present tense that dialogue seldom uses to speak of someone counts."""
    verb = verb.lower()
    if verb in NOT_ACTING or "'" in verb or (not marked and verb.endswith(("ing", "en"))):
        return False
    return marked or (verb not in SAID_TO_SOMEONE and not verb.endswith("ed"))


def sentence_start(text: str, at: int) -> int:
    """Where the sentence holding `at` starts: its action's opening asterisk, or after the last sentence end."""
    for start, end in _spans(ACTION, text):
        if start <= at < end:
            return start
    boundary = max((end for end in sentence_ends(text) if end <= at), default=0)
    return max(boundary, text.rfind("\n", 0, at) + 1)


def user_narration_start(text: str, char_name: str) -> int | None:
    """Where the reply starts narrating what the user does, feels or says ("You nod", "*I look at Mira*" when
    Mira is the character), if it does."""
    marked, unmarked = (_blanked(t, _spans(LIST_ITEM, t)) for t in narration(text))  # a list instructs
    starts = [
        match.start()
        for told, is_marked in ((marked, True), (unmarked, False))
        for match in USER_SUBJECT.finditer(told)
        if _opens_clause(told, match.start())
        and _acts(match["verb"], is_marked)
        and not QUESTION.match(told, match.start())  # "You think of the sea?": asked, not narrated
        and (is_marked or not PROPOSAL.match(told, match.end()))
    ]
    own_names = "|".join(re.escape(n) for n in {char_name, _first_name(char_name)} if n)
    if own_names:
        acting_on_me = rf"\bI (?!am\b|was\b)\w+ (?:\w+ )?(?:at |to |with |toward |towards )?(?:{own_names})\b"
        starts += [m.start() for m in re.finditer(acting_on_me, marked, flags=re.IGNORECASE)]
        # Unmarked too (the character does not speak of acting on itself by name), with the name capitalised:
        # a name may be a common word ("Coding Sensei": "I can help with coding").
        starts += [m.start() for m in re.finditer(acting_on_me, unmarked)]
    starts += [start for start in _opening_quotes(text) if own_names and _addresses(text, start, own_names)]
    return sentence_start(text, min(starts)) if starts else None


# The character as the subject of a clause in the user's narration: "Mira smiles", "Mira slowly hands me".
AUXILIARIES = frozenset("is was has had does did can could will would may might must should".split())


def character_narration_start(text: str, char_name: str) -> int | None:
    """Where an impersonated user message starts narrating what the character does ("*Mira smiles*"): the
    character's name, capitalised as written, opening a clause of narration before a verb in the present or
    past tense (an auxiliary describes, it does not act)."""
    names = "|".join(re.escape(n) for n in {char_name, _first_name(char_name)} if n)
    acting = re.compile(rf"\b(?:{names}) (?:\w+ly )?(?P<verb>[a-z]+(?:s|ed))\b")
    starts = [
        match.start()
        for told in narration(text)
        for match in acting.finditer(told)
        if _opens_clause(told, match.start()) and match["verb"] not in AUXILIARIES
    ]
    return sentence_start(text, min(starts)) if starts else None


def _opening_quotes(text: str) -> list[int]:
    straight = [i for i, c in enumerate(text) if c == '"'][::2]
    return sorted(straight + [i for i, c in enumerate(text) if c == "“"])


def _addresses(text: str, quote_start: int, names: str) -> bool:
    """Whether the quoted line opens by calling the character by name ("Alright, Captain Varga, ..."):
    someone else speaking to them, in a scene of two the user."""
    opening = rf"[\"“](?:\w+[,!] )?(?:{names})[,.!?]"
    return re.match(opening, text[quote_start:], flags=re.IGNORECASE) is not None


def _balanced_at(text: str) -> list[bool]:
    """For each offset, whether the quotes and asterisks before it are balanced."""
    stars = {m.start() for m in SINGLE_ASTERISK.finditer(text)}
    balanced, open_stars, straight, curly = [True], 0, 0, 0
    for i, c in enumerate(text):
        open_stars += i in stars
        straight += c == '"'
        curly += (c == "“") - (c == "”")
        balanced.append(open_stars % 2 == 0 and straight % 2 == 0 and curly <= 0)
    return balanced


def sentence_ends(text: str) -> list[int]:
    """Offsets just after each real sentence end, or complete list line, with quotes and asterisks balanced
    before it; a list number ("1.") is not one."""
    ends = [m.end() for m in SENTENCE_END.finditer(text) if not LIST_NUMBER.search(text, 0, m.end())]
    ends += [m.end() for m in LIST_ITEM.finditer(text) if m.end() < len(text)]
    balanced = _balanced_at(text)
    return sorted(end for end in set(ends) if balanced[end])


def trimmed_to_sentence(text: str) -> str | None:
    """The text up to its last real sentence end, or None when it has none."""
    ends = sentence_ends(text)
    return text[: ends[-1]].rstrip() if ends else None


def ends_mid_sentence(text: str) -> bool:
    return trimmed_to_sentence(text) != text.rstrip()


def _normalised(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def _ngrams(words: list[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + size]) for i in range(len(words) - size + 1)]


def _similar(a: list[str], b: list[str]) -> bool:
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    # The cheap upper bounds first: most pairs fail them.
    return (
        matcher.real_quick_ratio() >= NEAR_RATIO
        and matcher.quick_ratio() >= NEAR_RATIO
        and matcher.ratio() >= NEAR_RATIO
    )


def _near_duplicates(sentences: list[list[str]]) -> bool:
    long = [s for s in sentences if len(s) >= NEAR_WORDS]
    return any(_similar(a, b) for i, a in enumerate(long) for b in long[i + 1 :])


def _phrase_thrice(words: list[str]) -> bool:
    """A phrase of PHRASE_WORDS words three times or more, without overlap."""
    last: dict[tuple[str, ...], int] = {}
    seen: Counter[tuple[str, ...]] = Counter()
    for i, gram in enumerate(_ngrams(words, PHRASE_WORDS)):
        if i >= last.get(gram, -PHRASE_WORDS) + PHRASE_WORDS:
            seen[gram] += 1
            last[gram] = i
    return bool(seen) and seen.most_common(1)[0][1] >= 3


def is_repetitive(text: str) -> bool:
    # Quoted lines count as sentences of their own.
    sentences = [_normalised(s).split() for s in re.split(r"[.!?…\n\"“”]+", text)]
    counts = Counter(" ".join(s) for s in sentences if len(s) >= 3)
    # a list's items count however short they are: a list of names with the same name three times
    counts.update(_normalised(re.sub(rf"^[ \t]*{LIST_MARK}", "", m[0])) for m in LIST_ITEM.finditer(text))
    if counts and counts.most_common(1)[0][1] >= 3:
        return True
    words = _normalised(text).split()
    if _near_duplicates(sentences) or _phrase_thrice(words):
        return True
    if len(words) < 30:
        return False
    trigrams = _ngrams(words, 3)
    return len(set(trigrams)) / len(trigrams) < 0.5


def _shingles(words: list[str], size: int = 5) -> set[tuple[str, ...]]:
    return set(_ngrams(words, size))


def echoes_history(text: str, history: Sequence[Message], roles: Collection[str] = ("assistant",)) -> bool:
    """Whether the reply is, for the most part, an earlier message of `roles` again, word for word or with
    small changes."""
    words = _normalised(text).split()
    if len(words) < 5:
        return False
    mine = _shingles(words)
    for message in history:
        if message.role not in roles:
            continue
        earlier_words = _normalised(message.content).split()
        earlier = _shingles(earlier_words)
        if earlier and len(mine & earlier) / len(mine) >= 0.6:
            return True
        shared = set(words) & set(earlier_words)
        if len(shared) / len(set(words) | set(earlier_words)) >= ECHO_SHARED:
            return True
    return False


def writes_about_the_roleplay(text: str, spec: ReplySpec) -> bool:
    """Instructions for writing the roleplay ("write as Mira", "never write actions for Tam") or its template
    markers: the system prompt coming back, not the character."""
    names = {spec.char_name, _first_name(spec.char_name), spec.user_name, _first_name(spec.user_name)}
    alternatives = "|".join(re.escape(n) for n in names if n)
    writing = rf"\bwrit(?:e|es|ing|ten)\b[^.\n]{{0,30}}\b(?:as|for) (?:{alternatives})\b"
    return re.search(rf"{writing}|{TEMPLATE_MARKER}", text, flags=re.IGNORECASE) is not None


def writes_code(character: Character | None) -> bool:
    """Whether the character's profile makes code its voice (its `ReplySpec.code_in_scene`)."""
    if character is None:
        return False
    fields = (character.description, character.personality, character.scenario, character.background)
    profile = "\n".join([*fields, character.speaking_style, character.mes_example, character.system_prompt])
    return WRITES_CODE.search(profile) is not None or any(WRITES_CODE.search(tag) for tag in character.tags)


def out_of_character(text: str, spec: ReplySpec) -> bool:
    """Assistant mode or fourth-wall talk, outside the character's quoted lines; a code block or a list only
    when nothing around it is in scene (no action, no quoted line). A character who writes code may show it."""
    if spec.code_in_scene:
        text = CODE_SPAN.sub("", text)
    narrated = without_dialogue(text).replace("’", "'")
    found = [m for m in OUT_OF_CHARACTER.finditer(narrated) if not (spec.code_in_scene and OFFERS_CODE.match(m[0]))]
    if found or writes_about_the_roleplay(narrated, spec):
        return True
    if HEADING.search(text):
        return True
    outside_code = CODE_SPAN.sub("", text)
    in_scene = ACTION.search(text) or without_dialogue(outside_code) != outside_code
    return not in_scene and (bool(CODE_OR_LIST.search(text)) or is_essay(without_dialogue(text), spec))


def is_essay(narrated: str, spec: ReplySpec) -> bool:
    """Whether the text speaks of a subject with no one of the scene in it: no person, no name."""
    names = {_first_name(spec.char_name), _first_name(spec.user_name)}
    mentioned = any(re.search(rf"\b{re.escape(n)}\b", narrated, flags=re.IGNORECASE) for n in names if n)
    if len(narrated.split()) < ESSAY_WORDS or mentioned or PERSONS.search(EVERYONE.sub(" ", narrated)):
        return False
    return DEFINING.search(narrated) is not None


def user_part_start(text: str, spec: ReplySpec) -> int | None:
    """Where the reply starts writing the user's part: a labelled line, or (where a character speaks)
    narration of what the user does."""
    starts = [user_turn_start(text, spec.user_name)]
    # A group's other members: their lines are theirs to write.
    starts.append(labelled_turn_start(text, list(dict.fromkeys(n for o in spec.others for n in (o, _first_name(o))))))
    if spec.job_type in CHARACTER_JOBS:
        starts.append(user_narration_start(text, spec.char_name))
    found = [s for s in starts if s is not None]
    return min(found) if found else None


def character_part_start(text: str, spec: ReplySpec) -> int | None:
    """Where an impersonated user message starts writing the character's part: a line under the character's
    label, or (where a character speaks) narration of what the character does."""
    starts = [labelled_turn_start(text, (spec.char_name, _first_name(spec.char_name)), ("{{char}}",))]
    if spec.job_type in CHARACTER_JOBS:
        starts.append(character_narration_start(text, spec.char_name))
    found = [s for s in starts if s is not None]
    return min(found) if found else None


def cleaned_reply(raw: str, spec: ReplySpec, finish_reason: str) -> tuple[str, list[str]]:
    """The reply after the safe fixes, and the reasons found on the way."""
    reasons: list[str] = []
    own = spec.user_name if spec.writes_as == "user" else spec.char_name
    text = without_own_label(raw.strip(), own)
    if spec.writes_as == "user":
        cut, reason = character_part_start(text, spec), "speaks_for_character"
    else:
        cut, reason = user_part_start(text, spec), "speaks_for_user"
    if cut is not None:
        reasons.append(reason)
        text = re.sub(
            rf"{_speaker_label(own, _first_name(own))}\s*$",
            "",
            text[:cut].strip(),
            flags=re.IGNORECASE | re.MULTILINE,
        )  # the character's own label left dangling by the cut
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
    if "cut_off" in reasons and trimmed_to_sentence(text) is None:
        blocking.append("cut_off")  # nothing to trim back to
    if not text:
        blocking.append("empty")
    elif len(text) < MIN_CHARS:
        blocking.append("too_short")
    elif len(text) < SHORT_CHARS and spec.writes_as == "character":  # a user's message is often short
        reasons.append("short")
    if is_repetitive(text):
        blocking.append("repetitive")
    # An impersonated message echoes the user's earlier messages or the character's.
    if echoes_history(text, history, ("assistant", "user") if spec.writes_as == "user" else ("assistant",)):
        blocking.append("echoes_history")
    if spec.job_type is JobType.roleplay and out_of_character(text, spec):
        blocking.append("out_of_character")
    if spec.job_type in CHARACTER_JOBS and REFUSAL.search(without_dialogue(text).replace("’", "'")):
        blocking.append("refusal")
    if policy is not None and policy.violations(reply):
        blocking.append("policy")
    found = list(dict.fromkeys([*reasons, *blocking]))
    return Verdict(valid=not blocking, reasons=found, cleaned=text)
