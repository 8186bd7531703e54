"""The window's replay is cached (pure, the documented estimate as the counter): a context built from a cached
replay is the one a full replay gives, the next turn of a chat replays only its new messages, and a changed
message, setting, counter or lorebook is replayed anew."""

from __future__ import annotations

from collections.abc import Iterable

from bench.prefix_reuse import bench_character, roleplay
from characters import Character
from workflows.context import ReplayCache, TokenCounter, assemble, context_pieces, estimate_tokens
from workflows.models import BuiltContext, ChatJob, Message, Reminder

CHARACTER = bench_character(None)  # Mira with the context benchmark's 42-entry lorebook
MESSAGES = roleplay(CHARACTER, "Tam", turns=120)
BUDGET = 1200


def job_at(turn: int, messages: list[Message] = MESSAGES) -> ChatJob:
    """The job of `turn`: the greeting, `turn` exchanges and the next user message."""
    return ChatJob(job_id="r", messages=messages[: 2 * turn + 2], character=CHARACTER, user_name="Tam")


def built(
    job: ChatJob,
    replays: ReplayCache,
    *,
    character: Character = CHARACTER,
    budget: int = BUDGET,
    count: TokenCounter = estimate_tokens,
    low_water: float = 0.6,
    reminders: Iterable[Reminder] = (),
) -> BuiltContext:
    pieces = context_pieces(job, character, reminders)
    return assemble(pieces, budget=budget, count=count, low_water=low_water, replays=replays)


def test_every_turn_built_from_the_cached_replay_is_the_full_replays_and_each_message_is_replayed_once() -> None:
    replays = ReplayCache()
    windows, anchored = set(), 0
    for turn in range(120):
        cached = built(job_at(turn), replays)
        assert cached == built(job_at(turn), ReplayCache())
        assert cached.window is not None
        windows.add(cached.window.first_message)
        anchored += any(i.kind == "lorebook" and i.depth is not None for i in cached.insertions)
    assert len(windows) >= 6 and anchored >= 10  # drops, and lore anchored at its depth between them
    assert replays.replayed == len(job_at(119).messages)


def edited(messages: list[Message], index: int) -> list[Message]:
    changed = messages[index].model_copy(update={"content": messages[index].content + " Then silence."})
    return [*messages[:index], changed, *messages[index + 1 :]]


def lore_counted_higher(text: str) -> int:
    return estimate_tokens(text) + (7 if "a fixture of Saltmere" in text else 0)  # the keyed entries' texts


def test_only_what_is_unchanged_is_reused() -> None:
    replays = ReplayCache()
    job = job_at(60)
    end = len(job.messages)
    rescanned = CHARACTER.character_book.model_copy(update={"scan_depth": 2})  # type: ignore[union-attr]
    variants: list[tuple[str, ChatJob, dict[str, object], int]] = [
        ("the same job again (a regeneration)", job, {}, 0),
        ("the last message edited", job_at(60, edited(MESSAGES, end - 1)), {}, 1),
        ("the next turn", job_at(61), {}, 2),
        ("a message in the middle edited", job_at(61, edited(MESSAGES, 40)), {}, end + 2),
        ("another budget", job, {"budget": BUDGET - 100}, end),
        ("another low-water mark", job, {"low_water": 0.5}, end),
        ("another counter", job, {"count": lambda text: estimate_tokens(text) + 1}, end),
        ("the keyed entries counted otherwise, nothing else", job, {"count": lore_counted_higher}, end),
        ("another lorebook", job, {"character": CHARACTER.model_copy(update={"character_book": rescanned})}, end),
        ("a reminder (less room)", job, {"reminders": [Reminder.own_reply]}, end),
    ]
    built(job, replays)
    for what, variant, settings, replayed in variants:
        before = replays.replayed
        assert built(variant, replays, **settings) == built(variant, ReplayCache(), **settings), what  # type: ignore[arg-type]
        assert replays.replayed - before == replayed, what


def test_the_cache_keeps_at_most_its_size() -> None:
    replays = ReplayCache(size=2)  # one job: its last message and the one before
    other = edited(MESSAGES, 0)
    built(job_at(30), replays)
    built(job_at(30, other), replays)
    before = replays.replayed
    built(job_at(31), replays)
    assert replays.replayed - before == len(job_at(31).messages)
