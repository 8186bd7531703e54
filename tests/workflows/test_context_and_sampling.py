from characters import Character, bundled_character
from workflows.context import build_context
from workflows.models import ChatJob, JobType, ResolvedSampling
from workflows.prompts import system_prompt
from workflows.sampling import escalated_sampling, first_sampling


def job(**overrides: object) -> ChatJob:
    values: dict[str, object] = {
        "job_id": "j1",
        "messages": [{"role": "user", "content": "Hello"}],
        "character": "Mira",
        "user_name": "Tam",
    }
    values.update(overrides)
    return ChatJob.model_validate(values)


def test_roleplay_context_starts_with_one_system_message_holding_the_character() -> None:
    mira = bundled_character("Mira")
    context = build_context(job(), mira)
    assert [m.role for m in context] == ["system", "user"]
    system = context[0].content
    assert "You are Mira" in system and "Tam" in system
    assert mira.personality in system
    assert "{{" not in system  # macros filled, the bundled scenario's {{user}} included


def test_job_scenario_replaces_the_characters_own() -> None:
    system = build_context(job(scenario="A duel at dawn on the pier."), bundled_character("mira"))[0].content
    assert "A duel at dawn on the pier." in system and "Drowned Lantern" not in system


def test_job_system_messages_merge_into_the_first_and_history_keeps_its_order() -> None:
    messages = [
        {"role": "system", "content": "Keep replies under 80 words."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    context = build_context(job(messages=messages), Character(name="Orrin"))
    assert [m.content for m in context[1:]] == ["one", "two", "three"]
    assert context[0].content.endswith("Keep replies under 80 words.")


def test_every_job_type_has_its_own_system_prompt() -> None:
    prompts = {system_prompt(t) for t in JobType}
    assert len(prompts) == len(JobType) and all(prompts)
    context = build_context(job(job_type=JobType.enhance, character=None), None)
    assert context[0].content == system_prompt(JobType.enhance)


def test_first_sampling_takes_job_values_then_job_type_defaults() -> None:
    assert first_sampling(JobType.roleplay, job().sampling, seed=5) == ResolvedSampling(
        temperature=0.8, top_p=0.9, max_tokens=300, seed=5
    )
    chosen = job(sampling={"temperature": 0.3, "max_tokens": 20, "seed": 1}).sampling
    resolved = first_sampling(JobType.conversation, chosen, seed=5)
    assert (resolved.temperature, resolved.max_tokens, resolved.seed, resolved.top_p) == (0.3, 20, 1, 0.9)


def test_escalation_changes_seed_and_answers_the_reasons() -> None:
    start = ResolvedSampling(temperature=0.8, top_p=0.9, max_tokens=100, seed=1)
    repeated = escalated_sampling(start, ["repetitive"], seed=2)
    assert repeated.seed == 2 and repeated.temperature == 0.9 and repeated.frequency_penalty == 0.3
    drifted = escalated_sampling(start, ["out_of_character"], seed=3)
    assert drifted.temperature == 0.7
    hot = ResolvedSampling(temperature=1.0, top_p=0.9, max_tokens=100, seed=1, frequency_penalty=0.9)
    capped = escalated_sampling(hot, ["repetitive"], seed=4)
    assert capped.temperature == 1.0 and capped.frequency_penalty == 1.0
    assert escalated_sampling(start, ["too_short"], seed=5).model_dump(exclude={"seed"}) == start.model_dump(
        exclude={"seed"}
    )
