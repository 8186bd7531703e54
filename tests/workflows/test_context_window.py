"""The sawtooth window of a long chat (pure, the documented estimate as the counter): the history's start and
the prompt's front move only at drops, consecutive turns share a byte-identical prefix between drops, lore
fired between drops sits at its depth and is laid where its position says at the next drop, and the budget
always holds."""

from __future__ import annotations

import pytest

from bench.prefix_reuse import chatml, measure_prefix_reuse, shared_prefix
from characters import Character, bundled_character
from characters.profile import BookEntry, CharacterBook
from orchestrator.tokens import CachedCounter
from tests.helpers import CHAT_WORDS, long_chat
from workflows.context import MESSAGE_OVERHEAD, REPLY_PRIMER, build_context, estimate_tokens
from workflows.models import BuiltContext, ChatJob, Message


def job_at(messages: list[Message], turn: int, character: Character | str = "Mira") -> ChatJob:
    """The job of `turn`: the greeting, `turn` exchanges and the next user message."""
    return ChatJob(job_id="w", messages=messages[: 2 * turn + 2], character=character, user_name="Tam")


def built_turns(
    character: Character, messages: list[Message], turns: range, budget: int, low_water: float = 0.6
) -> list[BuiltContext]:
    return [
        build_context(
            job_at(messages, t, character), character, budget=budget, count=estimate_tokens, low_water=low_water
        )
        for t in turns
    ]


def is_drop(before: BuiltContext, after: BuiltContext) -> bool:
    assert before.window is not None and after.window is not None
    return after.window.laid_at != before.window.laid_at


def test_the_window_start_stays_put_between_drops_and_moves_forward_at_them() -> None:
    mira = bundled_character("Mira")
    built = built_turns(mira, long_chat(120), range(1, 120), budget=900)
    drops = 0
    for before, after in zip(built, built[1:], strict=False):
        assert before.window is not None and after.window is not None
        if is_drop(before, after):
            drops += 1
            assert after.window.first_message > before.window.first_message
            assert after.window.laid_at > before.window.laid_at
        else:
            assert after.window.first_message == before.window.first_message
            assert after.messages[0] == before.messages[0]  # the system message too
    assert drops >= 5
    assert built[-1].dropped.history_messages > 100


def test_a_drop_brings_the_history_down_to_the_low_water_mark() -> None:
    messages = long_chat(120)
    drops = 0
    for low_water in (0.3, 0.6, 0.9):
        built = built_turns(bundled_character("Mira"), messages, range(1, 120), 900, low_water)
        for turn, context in enumerate(built, start=1):
            assert context.window is not None
            assert context.window.low_water == int(low_water * context.window.high_water)
            if context.window.first_message > 0 and context.window.laid_at == 2 * turn + 1:  # dropped just now
                drops += 1
                history = [m for m in context.messages if m.role != "system"]
                assert sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD for m in history) <= context.window.low_water
    assert drops >= 3


def test_consecutive_prompts_share_the_whole_previous_prompt_except_at_drops() -> None:
    mira = bundled_character("Mira")  # no lorebook: the system message never changes
    built = built_turns(mira, long_chat(120), range(1, 120), budget=900)
    drops = 0
    for before, after in zip(built, built[1:], strict=False):
        old, new = chatml(before.messages), chatml(after.messages)
        if is_drop(before, after):
            drops += 1
            assert not new.startswith(old)
            assert shared_prefix(old, new) >= len(chatml(before.messages[:1])) - len("<|im_start|>assistant\n")
        else:
            assert new.startswith(old)
    assert 5 <= drops < len(built) / 2


def lighthouse_book(**entry: object) -> CharacterBook:
    return CharacterBook(
        scan_depth=2,
        entries=[
            BookEntry(
                keys=["lighthouse"],
                content="@@depth 3\nLIGHTHOUSE-LORE: the lamp has been dark for nine winters.",
                position="after_char",
                name="lighthouse",
                **entry,
            )
        ],
    )


def test_lore_fired_between_drops_sits_at_its_depth_until_the_next_drop_lays_it_after_the_character() -> None:
    card = bundled_character("Mira").model_copy(update={"character_book": lighthouse_book()})
    plain = built_turns(card, long_chat(120), range(30, 120), budget=1600)
    after_drop = 30 + next(i for i in range(1, len(plain)) if is_drop(plain[i - 1], plain[i])) + 1
    # The key is in every user message from the turn after a drop on: it fires between drops, and still at the next.
    messages = long_chat(120, mention={t: "the lighthouse?" for t in range(after_drop, 120)})
    built = built_turns(card, messages, range(30, 120), budget=1600)
    fired = next(i for i, c in enumerate(built) if c.lorebook == ["lighthouse"])
    first = built[fired]
    assert 30 + fired == after_drop
    assert first.window is not None and first.window.laid_at < 2 * after_drop + 1  # laid before it fired
    (insertion,) = [i for i in first.insertions if i.kind == "lorebook"]
    last = max(i for i, m in enumerate(first.messages) if m.role == "user")
    assert insertion.depth == 3 and insertion.message == last - 3  # three history messages follow it
    assert first.messages[insertion.message] == Message(
        role="system", content="LIGHTHOUSE-LORE: the lamp has been dark for nine winters."
    )
    assert "LIGHTHOUSE" not in first.messages[0].content and "@@" not in chatml(first.messages).decode()

    following = built[fired + 1]
    assert not is_drop(first, following)
    (moved,) = [i for i in following.insertions if i.kind == "lorebook"]
    assert moved.depth == 5  # where it first went: two messages later, two more follow it
    assert chatml(following.messages).startswith(chatml(first.messages))

    dropped = next(c for before, c in zip(built[fired:], built[fired + 1 :], strict=False) if is_drop(before, c))
    (laid,) = [i for i in dropped.insertions if i.kind == "lorebook"]
    assert laid.depth is None and laid.message == 0
    system = dropped.messages[0].content
    assert system.index(card.personality) < system.index("LIGHTHOUSE-LORE") < system.index("Scenario:")
    assert all("LIGHTHOUSE" not in m.content for m in dropped.messages[1:])


def test_the_character_note_and_post_history_instructions_stay_at_their_depth() -> None:
    card = Character(
        name="Orrin",
        post_history_instructions="Stay terse.",
        extensions={"depth_prompt": {"prompt": "NOTE: {{char}} hides the key.", "depth": 2, "role": "system"}},
    )
    messages = long_chat(6)
    context = build_context(job_at(messages, 5, card), card, budget=100_000, count=estimate_tokens)
    kinds = {i.kind: i for i in context.insertions}
    note = kinds["character_note"]
    assert note.depth == 2 and context.messages[note.message].content == "NOTE: Orrin hides the key."
    assert kinds["post_history_instructions"].depth == 0
    assert context.messages[-1] == Message(role="system", content="Stay terse.")


@pytest.mark.parametrize("low_water", [0.3, 0.6, 1.0])
@pytest.mark.parametrize("budget", [420, 900, 2500])
def test_the_budget_is_never_exceeded(budget: int, low_water: float) -> None:
    entries = [
        BookEntry(keys=[word], content=f"{word.upper()}-LORE " + "old tales of the coast " * (3 + i % 5), id=i)
        for i, word in enumerate(CHAT_WORDS)
    ]
    entries.append(BookEntry(content="Always: the harbour chain is raised at dusk.", constant=True))
    card = Character(
        name="Orrin",
        description="A ferryman. " * 20,
        mes_example="<START>\n{{user}}: hi\n{{char}}: Go away.\n<START>\n{{char}}: " + "Mind the rope. " * 15,
        post_history_instructions="Stay terse.",
        extensions={"depth_prompt": {"prompt": "Orrin hides the key.", "depth": 4}},
        character_book=CharacterBook(scan_depth=3, entries=entries),
    )
    messages = long_chat(70, seed=9)
    for context in built_turns(card, messages, range(0, 70), budget, low_water):
        sent = sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD for m in context.messages) + REPLY_PRIMER
        assert sent <= context.prompt_tokens <= budget


async def test_a_hundred_turns_past_a_4096_token_budget_reuse_at_least_85_percent_of_each_prompt() -> None:
    def measured(low_water: float) -> object:
        return measure_prefix_reuse(100, 4096, None, low_water, CachedCounter(), "estimate", progress=lambda line: None)

    sawtooth = await measured(0.6)
    every_turn = await measured(1.0)  # drops as little as possible: the front moves nearly every turn
    assert sawtooth.turns == 100 and sawtooth.mean_reuse >= 0.85  # type: ignore[attr-defined]
    assert every_turn.mean_reuse < 0.6  # type: ignore[attr-defined]
