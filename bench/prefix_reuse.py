"""How much of each prompt the next turn of a long roleplay reuses as a byte-identical prefix (what the
engines' prefix caches can skip): `python -m bench.prefix_reuse`. No servers.

A roleplay runs past its token budget; then, for `--turns` turns, each job is the previous job's messages,
the character's reply and a new user message, and its context is built as the `context` command builds it
(`budgeted_context` with the offline counter: the local GGUF's tokenizer when installed, else the estimate).
Each prompt is rendered with the ChatML chat template (SmolLM2's and Qwen's, byte for byte: `<|im_start|>role
\\ncontent<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`); a turn's reuse is the length of the
longest common prefix of its rendered prompt and the next one's, over its own length, in UTF-8 bytes."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from bench.context_build import lorebook
from bench.stats import median
from characters import Character, bundled_character
from characters.cards import read_card
from orchestrator.settings import load_settings
from orchestrator.tokens import offline_counter
from workflows.context import TextsCounter, budgeted_context
from workflows.models import BuiltContext, ChatJob, EngineLimits, JobType, Message, Sampling
from workflows.sampling import max_tokens_for

MARGIN = 32

ACTIONS = [
    "*{char} sets the lantern down and studies {user} for a long moment.*",
    "*The wind rattles the shutters, and {char} pulls the shawl tighter around her shoulders.*",
    "*{char} laughs softly, the sound warmer than the fire crackling beside her.*",
    "*She runs a thumb along the edge of the table, thinking.*",
    "*{char} leans closer, lowering her voice as if the walls might be listening.*",
    "*Somewhere outside a dog barks twice, then falls silent.*",
    "*{char} pours two cups of something dark and steaming and slides one across.*",
    "*Her eyes flick to the door, then back to {user}.*",
    "*{char} folds her arms, unimpressed, though the corner of her mouth twitches.*",
    "*Rain begins again, a soft drumming on the roof that fills the pause.*",
    "*She turns the old key over in her fingers, the metal catching the light.*",
    "*{char} rises, crosses to the window and stares into the dark for a while.*",
]
SPEECH = [
    '"You ask a great many questions for someone who only arrived yesterday."',
    '"I have seen travellers come through here with less sense and more luck."',
    '"If you mean to go tonight, you will need a better coat than that."',
    '"The old road is washed out past the bridge; nobody has mended it since spring."',
    '"Trust is earned slowly here. Spend it carefully."',
    '"There was a time when this place was full of music. I remember it, even if no one else does."',
    '"Eat something first. Whatever you are planning will keep until morning."',
    '"I will not pretend I am not curious, but I will not pry either."',
    '"Tell me the truth and I will help you. Lie to me and you are on your own."',
    '"The map you carry is older than you think, and half of it is wrong."',
    '"Listen. Do you hear that? No? Good. That means we are alone."',
    '"People say a lot of things about the {thing}. Most of it is nonsense; some of it is not."',
    '"If you had seen the {thing} the way I have, you would not speak of it so lightly."',
    '"We could go together, at first light, if you are still willing."',
]
USER_LINES = [
    "*I shake the water from my cloak and sit down across from {char}.*",
    '"I did not expect anyone to still be awake at this hour."',
    '"What do you know about the {thing}?"',
    "*I hesitate, then set the folded letter on the table between us.*",
    '"I need a guide, and everyone in the village says you are the only one who knows the way."',
    '"Is it always this quiet here?"',
    "*I glance toward the door, listening for footsteps.*",
    '"Someone followed me from the crossroads. I am sure of it."',
    '"Why do you stay, if it is as dangerous as you say?"',
    '"I can pay. Not much, but I can pay."',
    "*I wrap my hands around the cup to warm them and breathe in the steam.*",
    '"Tell me about the {thing}. The real story, not the one they tell children."',
    '"All right. At first light, then."',
    "*I nod slowly, turning over what {char} has said.*",
]
NOUNS = ["old mill", "northern pass", "lighthouse", "ferry", "tower", "market", "well", "chapel"]


class ReuseResult(BaseModel):
    character: str
    tokenizer: str
    budget: int
    low_water: float | None  # None: the worker's default
    turns: int  # transitions measured
    first_turn: int  # the first measured job's turn number (the history no longer fits from there on)
    mean_reuse: float  # share of the previous prompt that the next one reuses, averaged over the turns
    median_reuse: float
    min_reuse: float
    turns_under_half: int  # turns that reuse under 50 % (a drop, when the window is sawtooth)
    mean_prompt_tokens: float


def chat_text(rng: random.Random, pool: list[str], count: int, things: list[str], char: str, user: str) -> str:
    chosen = [rng.choice(pool) for _ in range(count)]
    return " ".join(line.format(char=char, user=user, thing=rng.choice(things)) for line in chosen)


def roleplay(character: Character, user: str, turns: int, seed: int = 15) -> list[Message]:
    """A greeting, then `turns` user/character exchanges of varied text (user 1-3 sentences, replies 4-10),
    naming the book's keys now and then, ending on a user message."""
    rng = random.Random(seed)
    book = character.character_book
    keys = [key for entry in (book.entries if book else []) for key in entry.keys[:2] if key.strip()]
    messages = [Message(role="assistant", content=character.first_mes or f"*{character.name} looks up.* Welcome.")]
    for turn in range(turns):
        things = keys if keys and rng.random() < 0.35 else NOUNS
        messages.append(
            Message(role="user", content=chat_text(rng, USER_LINES, rng.randint(1, 3), things, character.name, user))
        )
        if turn < turns - 1:
            things = keys if keys and rng.random() < 0.35 else NOUNS
            lines = [rng.choice([ACTIONS, SPEECH]) for _ in range(rng.randint(4, 10))]
            reply = " ".join(chat_text(rng, pool, 1, things, character.name, user) for pool in lines)
            messages.append(Message(role="assistant", content=reply))
    return messages


def chatml(messages: list[Message]) -> bytes:
    rendered = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
    return (rendered + "<|im_start|>assistant\n").encode()


def shared_prefix(first: bytes, second: bytes) -> int:
    low, high = 0, min(len(first), len(second))
    while low < high:  # the longest n with first[:n] == second[:n]
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def bench_character(card: Path | None) -> Character:
    """The card's character, or the bundled Mira with the context benchmark's lorebook."""
    if card is not None:
        return read_card(card).character
    return bundled_character("Mira").model_copy(update={"character_book": lorebook()})


def engine_limits(budget: int, job_type: JobType, low_water: float | None) -> EngineLimits:
    """Limits under which the context budget is exactly `budget`."""
    max_input = budget + MARGIN
    limits = {"max_input_tokens": max_input, "max_total_tokens": max_input + max_tokens_for(job_type, Sampling())}
    if low_water is not None:
        limits["low_water"] = low_water  # type: ignore[assignment]
    return EngineLimits(margin_tokens=MARGIN, **limits)  # type: ignore[arg-type]


async def measure_prefix_reuse(
    turns: int,
    budget: int,
    card: Path | None,
    low_water: float | None,
    counter: TextsCounter,
    tokenizer: str,
    progress: Callable[[str], None],
) -> ReuseResult:
    character = bench_character(card)
    user = "Tam"
    messages = roleplay(character, user, turns=400)
    limits = engine_limits(budget, JobType.roleplay, low_water)

    async def built(turn: int) -> BuiltContext:
        job = ChatJob(
            job_id="bench-prefix-reuse",
            job_type=JobType.roleplay,
            messages=messages[: 2 * turn + 2],  # the greeting, `turn` exchanges, the next user message
            character=character,
            user_name=user,
        )
        return await budgeted_context(job, character, limits, counter)

    first = 0
    while (await built(first)).dropped.history_messages == 0:
        first += 1
    if first + turns >= 400:
        raise ValueError(f"the chat reaches the budget only at turn {first}; a smaller budget is needed")
    progress(f"prefix reuse: {character.name}, budget {budget}, history over budget from turn {first}")
    shares, tokens = [], []
    previous = await built(first)
    for turn in range(first + 1, first + turns + 1):
        current = await built(turn)
        before, after = chatml(previous.messages), chatml(current.messages)
        shares.append(shared_prefix(before, after) / len(before))
        tokens.append(previous.prompt_tokens)
        previous = current
    return ReuseResult(
        character=character.name,
        tokenizer=tokenizer,
        budget=budget,
        low_water=low_water,
        turns=turns,
        first_turn=first,
        mean_reuse=sum(shares) / len(shares),
        median_reuse=median(shares),
        min_reuse=min(shares),
        turns_under_half=sum(share < 0.5 for share in shares),
        mean_prompt_tokens=sum(tokens) / len(tokens),
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m bench.prefix_reuse", description=__doc__)
    root.add_argument("--turns", type=int, default=100, help="turns measured past the budget (default 100)")
    root.add_argument("--budget", type=int, default=4096, help="the context's token budget (default 4096)")
    root.add_argument(
        "--card",
        type=Path,
        help="a PNG or JSON character card with a lorebook (default: the bundled Mira with the context "
        "benchmark's 42-entry lorebook)",
    )
    root.add_argument("--low-water", type=float, help="the window's low-water share (default: the worker's)")
    return root


def main() -> int:
    args = parser().parse_args()
    counter = offline_counter(load_settings(reads={"tokenizer", "local_model_path"}))
    result = asyncio.run(
        measure_prefix_reuse(
            args.turns,
            args.budget,
            args.card,
            args.low_water,
            counter,
            counter.name,
            lambda line: print(line, file=sys.stderr, flush=True),
        )
    )
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
