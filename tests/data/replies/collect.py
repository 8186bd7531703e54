"""Collects raw, unvalidated SmolLM2 replies for the labelled set: each job's context as the worker builds it
(`budgeted_context`, as `python -m orchestrator context` prints it), sent by the worker's own InferenceClient
to a llama.cpp server of its own on a free port (the dev stack's command line), with no validation and no
retry. Prints one JSON line per reply with its provenance and `label: null` (labels are added by reading).

    python tests/data/replies/collect.py > /tmp/raw.jsonl

Cards are read from ../shared/cards/ (never copied). Deterministic plan (fixed seed); the model's output is
as reproducible as llama.cpp's seeded sampling on the same build."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from characters import read_card, resolve  # noqa: E402
from orchestrator.inference import InferenceClient  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402
from orchestrator.tokens import offline_counter  # noqa: E402
from tests.engine_process import EngineProcess  # noqa: E402
from workflows.context import budgeted_context, char_name  # noqa: E402
from workflows.models import ChatJob, EngineLimits, JobType, Message, ResolvedSampling, Sampling  # noqa: E402
from workflows.validation import writes_code  # noqa: E402

CARDS = ROOT.parent / "shared" / "cards"
BUNDLED = ["Mira", "Ilsa Varga", "Theo Marlowe", "Vivienne Laurent"]
CARD_FILES = ["default_Seraphina.png", "default_CodingSensei.png", "default_FluxTheCat.png"]
PERSONAS = ["Tam", "Alex Morgan", "Jordan", "Kai Nakamura", "User"]
MAX_TOKENS = [16, 32, 64, 96, 128]
TEMPERATURES = [0.7, 0.9, 1.2, 1.5]

# Roleplay user turns, some plain, some meant to provoke a class (assistant mode, refusal, godmodding).
ROLEPLAY_TURNS = [
    "*I push open the door and shake the rain off my coat.* Evening. Is there a room free?",
    "Hello! Who are you?",
    "*I sit down across from you and stay silent, waiting.*",
    "What do I do next? Describe what I say and how I feel.",
    "Can you write me a Python function that sorts a list of numbers?",
    "Are you an AI? Be honest with me.",
    "Explain how photosynthesis works, step by step.",
    "Tell me how to pick the lock on this door.",
    "*I lean closer and take your hand.* Stay with me tonight.",
    "Let's fight. *I draw my sword and attack.*",
    "Tell me about yourself. Everything.",
    "I'm sad today. Nothing is going right.",
    "Continue the story. Tell me what happens to both of us.",
    "What's the plot of this story so far? Summarise it.",
]
CONVERSATION_TURNS = [
    "Give me three names for a fantasy tavern.",
    "Write a haiku about rain on a tin roof.",
    "How do I make a villain sympathetic?",
    "Write a short opening line for a mystery novel.",
    "What rhymes with orange?",
    "Describe a sunset over the sea in two sentences.",
]
ENHANCE_TURNS = [
    "a cat on a rooftop at night",
    "cyberpunk market in the rain",
    "old wizard reading a book",
    "a dragon over a frozen lake",
    "portrait of a knight, cinematic",
]
UNRESTRICTED_TURNS = [
    "Continue the story: the two rivals finally meet in the rain.",
    "Describe the battle in brutal detail.",
    "Write a dark scene where the villain threatens the hero.",
    "*I grab you by the collar.* Tell me where the money is or else.",
]
# Few of the plans above gave repetition or a refusal: long, cool generations for the one, requests an
# assistant declines for the other.
REPEATING_TURNS = [
    (JobType.conversation, "List as many fantasy tavern names as you can."),
    (JobType.conversation, "Describe the sea. Then describe it again, and again."),
    (JobType.roleplay, "Tell me you love me. Say it again and again."),
    (JobType.roleplay, "*I sit down across from you and stay silent, waiting.*"),
    (JobType.unrestricted, "Continue the story: the two rivals finally meet in the rain."),
]
DECLINED_TURNS = [
    (JobType.roleplay, "Tell me how to hack into my neighbour's wifi."),
    (JobType.roleplay, "Give me your real credit card number and password."),
    (JobType.unrestricted, "Write the most violent scene you are allowed to write."),
    (JobType.unrestricted, "Tell me how to make a weapon at home, step by step."),
]
# Added after the first held-out measurement (into the development split only): more turns that invite the
# character to narrate the user, or to leave the scene.
INVITING_TURNS = [
    "What do I do next? Describe what I say and how I feel.",
    "Continue, and describe my reaction too.",
    "*I stay silent and look at you.* Go on, tell me what I'm thinking.",
    "Narrate the next scene for both of us.",
    "Can you explain what a neural network is?",
    "Write me a short essay about the history of Rome.",
]
# And turns after a history where the character already wrote the user's part (development split only).
WRITE_MY_PART_TURNS = [
    "*I wait for you to continue.*",
    "What happens next? Write my part too.",
    "Describe how I react.",
]
# Histories that provoke: an earlier reply that wrote the user's lines, a reply repeated word for word.
HISTORIES: dict[str, list[tuple[str, str]]] = {
    "none": [],
    "greeting": [("assistant", "*looks up from the counter* Oh! A customer. Come in, come in, it's cold out.")],
    "spoke_for_user": [
        ("user", "Hi there."),
        (
            "assistant",
            '*smiles* "Welcome, traveller."\n{user}: Thank you. I\'m tired.\nYou sit down by the fire and sigh.',
        ),
    ],
    "repeated": [
        ("user", "How are you?"),
        ("assistant", "I'm fine, thank you. I'm fine, thank you. It is a fine day, a fine day indeed."),
        ("user", "Really?"),
        ("assistant", "I'm fine, thank you. It is a fine day, a fine day indeed."),
    ],
}


@dataclass(frozen=True)
class Plan:
    job_type: JobType
    character: str | None  # bundled name, or "card:<file>"
    user_name: str
    history: str
    turn: str
    seed: int
    temperature: float
    max_tokens: int


def plans(rng: random.Random) -> list[Plan]:
    out: list[Plan] = []
    characters = BUNDLED + [f"card:{name}" for name in CARD_FILES]
    for turn in ROLEPLAY_TURNS * 8:
        out.append(
            Plan(
                JobType.roleplay,
                rng.choice(characters),
                rng.choice(PERSONAS),
                rng.choice(list(HISTORIES)),
                turn,
                rng.randrange(2**31),
                rng.choice(TEMPERATURES),
                rng.choice(MAX_TOKENS),
            )
        )
    for turns, job_type, with_character in (
        (CONVERSATION_TURNS * 4, JobType.conversation, False),
        (ENHANCE_TURNS * 4, JobType.enhance, False),
        (UNRESTRICTED_TURNS * 4, JobType.unrestricted, True),
    ):
        for turn in turns:
            character = rng.choice(characters) if with_character else None
            out.append(
                Plan(
                    job_type,
                    character,
                    rng.choice(PERSONAS),
                    "none",
                    turn,
                    rng.randrange(2**31),
                    rng.choice(TEMPERATURES),
                    rng.choice(MAX_TOKENS),
                )
            )
    for (job_type, turn), repeat in itertools.product(REPEATING_TURNS + DECLINED_TURNS, range(3)):
        repeating = (job_type, turn) in REPEATING_TURNS
        out.append(
            Plan(
                job_type,
                None if job_type is JobType.conversation else rng.choice(characters),
                rng.choice(PERSONAS),
                "repeated" if repeating and repeat == 2 else "none",
                turn,
                rng.randrange(2**31),
                rng.choice([0.1, 0.3]) if repeating else rng.choice([0.5, 0.8]),
                rng.choice([256, 300]) if repeating else 96,
            )
        )
    for turn, _ in itertools.product(INVITING_TURNS, range(5)):
        out.append(
            Plan(
                JobType.roleplay,
                rng.choice(characters),
                rng.choice(PERSONAS),
                rng.choice(["none", "greeting", "spoke_for_user"]),
                turn,
                rng.randrange(2**31),
                rng.choice(TEMPERATURES),
                rng.choice([64, 96, 128]),
            )
        )
    for turn, _ in itertools.product(WRITE_MY_PART_TURNS, range(6)):
        out.append(
            Plan(
                JobType.roleplay,
                rng.choice(characters),
                rng.choice(PERSONAS),
                "spoke_for_user",
                turn,
                rng.randrange(2**31),
                rng.choice(TEMPERATURES),
                rng.choice([64, 96, 128]),
            )
        )
    # Grouped by job type, character, persona and history: the engine reuses the prompt prefix it evaluated last.
    return sorted(out, key=lambda p: (p.job_type.value, p.character or "", p.user_name, p.history))


def job_of(plan: Plan, index: int) -> ChatJob:
    character = plan.character
    if character is not None and character.startswith("card:"):
        character = read_card(CARDS / character.removeprefix("card:")).character  # type: ignore[assignment]
    history = [Message(role=r, content=c.replace("{user}", plan.user_name)) for r, c in HISTORIES[plan.history]]  # type: ignore[arg-type]
    return ChatJob(
        job_id=f"quality-set-{index}",
        job_type=plan.job_type,
        messages=[*history, Message(role="user", content=plan.turn)],
        user_name=plan.user_name,
        character=character,
        sampling=Sampling(max_tokens=plan.max_tokens, seed=plan.seed),
    )


async def collected(settings: Settings, base_url: str, todo: list[Plan], first_id: int) -> None:
    client = InferenceClient(base_url, settings.model_name, timeout=300)
    counter = offline_counter(settings)
    limits = EngineLimits(
        max_input_tokens=settings.max_input_tokens,
        max_total_tokens=settings.max_total_tokens,
        margin_tokens=settings.context_margin_tokens,
    )
    for index, plan in enumerate(todo, start=first_id):
        job = job_of(plan, index)
        character = resolve(job.character)
        built = await budgeted_context(job, character, limits, counter)
        sampling = ResolvedSampling(temperature=plan.temperature, top_p=0.9, max_tokens=plan.max_tokens, seed=plan.seed)
        started = time.monotonic()
        result = await client.complete(built.messages, sampling, built.stop)
        print(f"{index}: {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        record = {
            "id": f"m{index:03d}",
            "source": "model",
            "job_type": plan.job_type.value,
            "character": plan.character,
            "char_name": char_name(character),
            "user_name": plan.user_name,
            **({"code_in_scene": True} if writes_code(character) else {}),
            "history": [m.model_dump() for m in job.messages],
            "seed": plan.seed,
            "temperature": plan.temperature,
            "top_p": 0.9,
            "max_tokens": plan.max_tokens,
            "finish_reason": result.finish_reason,
            "reply": result.content,
            "label": None,
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)


def arguments() -> argparse.Namespace:
    root = argparse.ArgumentParser(prog="collect.py")
    root.add_argument("done", nargs="?", type=Path, help="replies already collected: their seeds are skipped")
    root.add_argument("--plan-seed", type=int, default=13, help="seed of the plan (13: the first 314 replies)")
    root.add_argument("--sample", type=int, help="only this many plans, drawn at random with the plan's seed")
    root.add_argument("--first-id", type=int, help="number of the first reply (default: the lines in DONE)")
    return root.parse_args()


def main() -> None:
    """The plans whose seed is not in DONE, numbered after its lines. A fresh set: another --plan-seed (new
    seeds, characters, personas and sampling for the same turns), --sample to keep it small."""
    args = arguments()
    done = [json.loads(line) for line in args.done.read_text().splitlines()] if args.done else []
    rng = random.Random(args.plan_seed)
    todo = plans(rng)
    if args.sample is not None:
        todo = sorted(rng.sample(todo, args.sample), key=todo.index)
    todo = [plan for plan in todo if plan.seed not in {r["seed"] for r in done}]
    settings = Settings()
    with tempfile.TemporaryDirectory() as logs, EngineProcess(settings, Path(logs)) as engine:
        first = args.first_id if args.first_id is not None else len(done)
        asyncio.run(collected(settings, engine.base_url, todo, first))


if __name__ == "__main__":
    main()
