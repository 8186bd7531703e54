"""Group scenes (SillyTavern's group chats): who speaks in a round, and the pieces of a member's prompt that
come from the group. Pure: the workflow draws with `workflow.random()`, so a replay chooses the same speakers.

Speaker choice (`chosen_speakers`), as SillyTavern's:
- natural: the members mentioned in the last message (a word of the name or nickname as a whole word, any
  case), in the order of the mentions; then, in a shuffled order, each member whose talkativeness (profile
  field, default 0.5; 0: only when mentioned) beats a roll; the last message's speaker neither way unless
  `allow_self_responses`. Nobody: one of the talkative members at random (all of them at 0: any member, so
  the round has a reply).
- list: every member, in the job's order.
- pooled: one member who has not spoken since the user's last message, at random; all have: anyone but the
  last speaker (unless `allow_self_responses`).
- manual: `group.speakers`, in that order."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from characters import Character
from workflows.models import ChatJob, ChatResult, GroupReply, GroupSettings, Message, Timings
from workflows.results import Attempt, chat_result

# After the history, last: whose reply is next (SillyTavern's group nudge).
GROUP_NUDGE = "[Write the next reply only as {{char}}.]"
WORD = re.compile(r"\b\w+\b")


def words(text: str) -> list[str]:
    """The text's words, lower-cased, in order (SillyTavern's extractAllWords)."""
    return [word.lower() for word in WORD.findall(text)]


def same_name(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def member_named(members: Sequence[Character], name: str) -> Character | None:
    return next((m for m in members if same_name(m.name, name)), None)


def last_speaker(messages: Sequence[Message]) -> str | None:
    """The member who wrote the last message, when a member did."""
    turns = [m for m in messages if m.role != "system"]
    return turns[-1].name if turns and turns[-1].role == "assistant" else None


def spoken_since_user(messages: Sequence[Message]) -> list[str]:
    """The members who wrote a message after the user's last one."""
    spoken: list[str] = []
    for message in reversed(messages):
        if message.role == "user":
            break
        if message.role == "assistant" and message.name is not None:
            spoken.append(message.name)
    return spoken


def mentioned(members: Sequence[Character], text: str, banned: str | None) -> list[Character]:
    """The members whose name or nickname has a word in `text`, in the order of the mentions (a word names the
    first member it can), never `banned`."""
    found = []
    for word in words(text):
        for member in members:
            if banned is not None and same_name(member.name, banned):
                continue
            if word in words(f"{member.name} {member.nickname}"):
                found.append(member)
                break
    return found


def natural_order(
    members: Sequence[Character], messages: Sequence[Message], allow_self: bool, rng: random.Random
) -> list[Character]:
    turns = [m for m in messages if m.role != "system"]
    banned = None if allow_self else last_speaker(messages)
    allowed = [m for m in members if banned is None or not same_name(m.name, banned)]
    activated = mentioned(members, turns[-1].content if turns else "", banned)
    shuffled = list(allowed)
    rng.shuffle(shuffled)
    for member in shuffled:
        roll = rng.random()
        if member.talkativeness > 0 and member.talkativeness >= roll:
            activated.append(member)
    if not activated:
        chatty = [m for m in allowed if m.talkativeness > 0]
        activated.append(rng.choice(chatty or allowed or list(members)))
    return list({id(m): m for m in activated}.values())


def pooled_order(
    members: Sequence[Character], messages: Sequence[Message], allow_self: bool, rng: random.Random
) -> list[Character]:
    spoken = spoken_since_user(messages)
    waiting = [m for m in members if not any(same_name(m.name, name) for name in spoken)]
    if waiting:
        return [rng.choice(waiting)]
    last = None if allow_self else last_speaker(messages)
    others = [m for m in members if last is None or not same_name(m.name, last)]
    return [rng.choice(others or list(members))]


def chosen_speakers(
    members: Sequence[Character], group: GroupSettings, messages: Sequence[Message], rng: random.Random
) -> list[Character]:
    """Who replies in this round, in order (at least one)."""
    if group.strategy == "list":
        return list(members)
    if group.strategy == "manual":
        chosen = [member_named(members, name) for name in group.speakers]
        return [m for m in chosen if m is not None]
    if group.strategy == "pooled":
        return pooled_order(members, messages, group.allow_self_responses, rng)
    return natural_order(members, messages, group.allow_self_responses, rng)


@dataclass(frozen=True)
class GroupScene:
    """A member's view of the group for its prompt: whose cards go in (`card_mode`), the names for `{{group}}`
    and the others' whose lines the reply must not write."""

    members: tuple[Character, ...]
    speaker: Character
    card_mode: str = "swap"

    @property
    def names(self) -> list[str]:
        """What `{{group}}` lists: each member as `{{char}}` names it (the nickname, else the name)."""
        return [m.char_name for m in self.members]

    @property
    def others(self) -> list[str]:
        """The other members' names as the history labels their lines (and the stop strings use them)."""
        return [m.char_name for m in self.members if m is not self.speaker]

    @property
    def carded(self) -> list[Character]:
        """The members whose cards the prompt holds: the speaker's (swap) or everyone's (join)."""
        return list(self.members) if self.card_mode == "join" else [self.speaker]

    def labelled(self, message: Message, user_name: str) -> Message:
        """The history message as the speaker's prompt shows it: "Name: text" (the user's name for the user's, the
        member's for a member's), the speaker's own as the assistant's and everyone else's as the user's turns (a
        small model shown other members' lines as its own goes on writing them); an assistant message naming no
        member stays as it is."""
        if message.role == "user":
            return Message(role="user", content=f"{user_name}: {message.content}")
        member = member_named(self.members, message.name) if message.name is not None else None
        if member is None:
            return Message(role=message.role, content=message.content)
        role = "assistant" if member is self.speaker else "user"
        return Message(role=role, content=f"{member.char_name}: {message.content}")


def scene_of(members: Sequence[Character], speaker: str, group: GroupSettings | None) -> GroupScene:
    """The scene for `speaker` (a member's name)."""
    chosen = member_named(members, speaker)
    if chosen is None:
        raise ValueError(f"{speaker!r} is not a member of the group")
    return GroupScene(tuple(members), chosen, (group or GroupSettings()).card_mode)


def other_names(scene: GroupScene) -> list[str]:
    """Every name the other members go by (profile name and `{{char}}` name), for validation's cut."""
    return list(dict.fromkeys(n for m in scene.members if m is not scene.speaker for n in (m.name, m.char_name)))


@dataclass(frozen=True)
class SpeakerTurn:
    """One member's part of a round: its attempts and the reply kept (`late`: the deadline came first; None: no
    attempt could be returned, and the round went on without this member's reply)."""

    speaker: str
    attempts: list[Attempt]
    chosen: Attempt | None
    counted_prompt: int  # the context's own token count (for an engine that reports no usage)
    late: bool = False


def round_result(job: ChatJob, turns: Sequence[SpeakerTurn], timings: Timings, late: bool) -> ChatResult:
    """A group job's result: `replies` in order, `content` the first's, attempts and tokens summed over the round;
    flagged when any reply is, a speaker had none to return, or the deadline left speakers out or cut one short
    (reason `deadline`). At least one turn has a reply."""
    attempts = [a for turn in turns for a in turn.attempts]
    answered = [turn for turn in turns if turn.chosen is not None]
    first = answered[0].chosen
    assert first is not None
    result = chat_result(job, attempts, first, timings, 0, late)
    counted = sum(turn.counted_prompt * len(turn.attempts) for turn in turns)
    replies = [
        GroupReply(
            speaker=turn.speaker,
            content=turn.chosen.verdict.cleaned,
            reasons=list(
                dict.fromkeys([*(r for a in turn.attempts for r in a.verdict.reasons), *(["deadline"] * turn.late)])
            ),
            attempts=len(turn.attempts),
        )
        for turn in answered
        if turn.chosen is not None
    ]
    details = [a.summary().model_copy(update={"speaker": turn.speaker}) for turn in turns for a in turn.attempts]
    valid = all(turn.chosen is not None and turn.chosen.verdict.valid for turn in turns)
    return result.model_copy(
        update={
            "prompt_tokens": sum(a.result.prompt_tokens for a in attempts) or counted,
            "replies": replies,
            "attempts": len(attempts),
            "attempt_details": details,
            "outcome": "ok" if valid and not late else "flagged",
        }
    )
