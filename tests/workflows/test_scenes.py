"""chat_scene's pure parts (workflows/scenes.py): the prompt per mode, the cleaning of keywords, the checks of a
prompt and a storyboard; the job's scene options and the profile's prefix. No servers."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from characters import Character, describe_validation_error, export_card, parse_card
from tests.helpers import job
from workflows.context import ContextTooLarge, estimate_tokens
from workflows.models import ChatJob, ChatResult, Message, SceneCheck, ScenePrompt, SceneSettings, Storyboard
from workflows.policy import Policy
from workflows.scenes import (
    CAPTION_CHARS,
    MAX_KEYWORDS,
    MAX_PROMPT_CHARS,
    PANEL_PROMPT_CHARS,
    STORYBOARD_TOKENS_PER_PANEL,
    rendered,
    scene_names,
    scene_prompt,
    scene_sampling,
    storyboard_schema,
    validate_scene,
)

MIRA = Character(
    name="Mira Vale",
    nickname="Mira",
    description="A tavern keeper in the harbour town of Saltmere.",
    personality="Warm, teasing and fiercely loyal.",
    appearance="Dark hair tied back with sailcloth, a scar across her left eyebrow.",
    image_prompt_prefix="watercolor, <lora:mira:0.7>",
)
NAMES = scene_names(MIRA, "Tam")
CHAT = [
    {"role": "user", "content": "*shakes the rain off* Evening, Mira."},
    {"role": "assistant", "content": '*Mira slides a mug across the bar.* "Sit by the fire, Tam."'},
]


def scene_job(mode: str, **overrides: object) -> ChatJob:
    scene = {"mode": mode} | ({"panels": overrides.pop("panels")} if "panels" in overrides else {})
    values = {"job_type": "chat_scene", "scene": scene, "messages": CHAT, "character": MIRA} | overrides
    return job(**values)


def check(output: str, mode: str = "character", **overrides: object) -> SceneCheck:
    values = {
        "output": output,
        "finish_reason": "stop",
        "scene": SceneSettings(mode=mode, panels=overrides.pop("panels", None)),
        "names": NAMES,
        "char_name": "Mira",
        "user_name": "Tam",
    } | overrides
    return SceneCheck.model_validate(values)


def test_keywords_are_cleaned_deduplicated_and_lose_names_and_invisible_traits() -> None:
    output = 'Here is the prompt:\n"1woman", Mira\'s dark hair, Dark hair, scar over left eyebrow\n- loyal personality'
    verdict = validate_scene(check(output + ", tavern interior, candlelight, Tam"))
    assert verdict.valid, verdict.reasons
    assert verdict.scene == ScenePrompt(
        prompt="1woman, dark hair, scar over left eyebrow, tavern interior, candlelight"
    )
    assert verdict.cleaned == verdict.scene.prompt


def test_the_prefix_goes_first_as_written_and_its_keywords_are_not_repeated() -> None:
    verdict = validate_scene(check("watercolor, 1woman, dark hair, apron", prefix="watercolor, <lora:mira:0.7>"))
    assert verdict.scene == ScenePrompt(prompt="watercolor, <lora:mira:0.7>, 1woman, dark hair, apron")


def test_keywords_are_bounded_and_a_cut_off_list_loses_its_last_keyword() -> None:
    many = ", ".join(f"keyword {i}" for i in range(100))
    kept = validate_scene(check(many)).scene
    assert isinstance(kept, ScenePrompt)
    assert len(kept.prompt.split(", ")) <= MAX_KEYWORDS and len(kept.prompt) <= MAX_PROMPT_CHARS
    cut = validate_scene(check("1woman, dark hair, leather apron, tavern, candlel", finish_reason="length"))
    assert cut.scene == ScenePrompt(prompt="1woman, dark hair, leather apron, tavern")


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("", "empty"),
        ('"Mira", "Tam"', "empty"),
        ("1woman, dark hair", "too_short"),
        (
            "Mira is a tavern keeper who stands behind the bar of her tavern and smiles at the sailor who came in.",
            "prose",
        ),
        ("The tavern is warm. The fire is burning. A woman smiles at the door.", "prose"),
        ('*smiles and pours an ale* "Sit down, Tam, you look half drowned, I said."', "in_character"),
        ("Mira: I slide the mug across the bar to you, dark hair, apron", "in_character"),
        ("I'm sorry, but I can't help with that request, tavern, woman, night", "refusal"),
    ],
)
def test_a_prompt_that_is_not_one_is_rejected_with_its_reason(output: str, reason: str) -> None:
    verdict = validate_scene(check(output))
    assert not verdict.valid and reason in verdict.reasons


def test_a_prompt_against_the_policy_is_rejected() -> None:
    policy = Policy.model_validate({"patterns": [{"pattern": "forbidden", "why": "test"}]})
    verdict = validate_scene(check("1woman, dark hair, forbidden thing, tavern"), policy)
    assert not verdict.valid and verdict.reasons == ["policy"]


def storyboard(*panels: tuple[str, str]) -> str:
    return json.dumps({"panels": [{"prompt": p, "caption": c} for p, c in panels]})


def test_a_storyboard_is_cleaned_panel_by_panel_and_rendered_in_order() -> None:
    output = storyboard(
        ("tavern door, rain, night, Tam, dripping cloak", "Tam comes in from the storm.\nThe door bangs."),
        ("Mira behind the bar, mug of ale, fire, warm light", "Mira pours him a drink."),
    )
    verdict = validate_scene(check(output, "storyboard", panels=2, prefix="watercolor"))
    assert verdict.valid, verdict.reasons
    assert verdict.scene == Storyboard.model_validate(
        {
            "panels": [
                {
                    "prompt": "watercolor, tavern door, rain, night, dripping cloak",
                    "caption": "Tam comes in from the storm. The door bangs.",
                },
                {
                    "prompt": "watercolor, behind the bar, mug of ale, fire, warm light",
                    "caption": "Mira pours him a drink.",
                },
            ]
        }
    )
    assert verdict.cleaned == rendered(verdict.scene)
    assert verdict.cleaned.splitlines()[0] == "1. Tam comes in from the storm. The door bangs."


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ('{"panels": [{"prompt": "tavern, rain, night", "caption": "In', "not_json"),
        (storyboard(("tavern, rain, night", "He comes in.")), "not_json"),  # fewer panels than asked
        (storyboard(("tavern, rain, night", "In."), ("tavern, rain, night", "Again.")), "repetitive"),
        (storyboard(("tavern, rain, night", "In."), ("fire, mug, bar", " ")), "empty"),
        (
            storyboard(
                ("tavern, rain, night", "In."), ("She walks over to him and she says hello to him kindly", "Hi")
            ),
            "prose",
        ),
    ],
)
def test_a_storyboard_that_is_not_one_is_rejected_with_its_reason(output: str, reason: str) -> None:
    verdict = validate_scene(check(output, "storyboard", panels=2))
    assert not verdict.valid and reason in verdict.reasons


def test_a_storyboard_with_an_unreadable_panel_cannot_be_returned_even_flagged() -> None:
    verdict = validate_scene(
        check(storyboard(("tavern, rain, night", "In."), ('"Mira"', "Her.")), "storyboard", panels=2)
    )
    assert verdict.scene is None and verdict.cleaned == ""


def test_a_caption_or_prompt_at_the_schemas_bound_loses_its_cut_word() -> None:
    caption = ("word " * 20)[: CAPTION_CHARS - 2] + "wo"
    prompt = ", ".join(f"keyword{i}" for i in range(30))[: PANEL_PROMPT_CHARS - 2] + "xy"
    assert len(prompt) == PANEL_PROMPT_CHARS
    board = storyboard((prompt, caption), ("fire, mug, bar", "ok"))
    verdict = validate_scene(check(board, "storyboard", panels=2))
    assert isinstance(verdict.scene, Storyboard)
    first = verdict.scene.panels[0]
    assert first.caption == "word " * 10 + "word…"
    assert first.prompt == prompt.rpartition(", ")[0]  # the cut keyword went


def test_each_mode_asks_for_its_subject_from_the_visible_profile_and_the_newest_messages() -> None:
    for mode in ("character", "face", "user", "last_message", "story", "background"):
        built = scene_prompt(
            scene_job(mode, user_description="A tired sailor in a wet cloak."), MIRA, budget=4000, count=estimate_tokens
        )
        system, user = built.messages
        assert system.role == "system" and "comma-separated" in system.content and "{{" not in system.content
        assert "Appearance: Dark hair tied back" in user.content and "Tam: A tired sailor" in user.content
        assert "loyal" not in user.content  # personality is not visible
        assert user.content.endswith("Only the comma-separated keywords.")
        assert built.json_schema is None and "\nMira:" in built.stop and "\nTam:" in built.stop
        assert built.prefix == ("" if mode in ("user", "background") else "watercolor, <lora:mira:0.7>")
    last = scene_prompt(scene_job("last_message"), MIRA, budget=4000, count=estimate_tokens).messages[1].content
    assert "The last message: Mira: *Mira slides a mug across the bar.*" in last


def test_a_storyboard_asks_for_its_panels_with_the_engines_json_schema() -> None:
    built = scene_prompt(scene_job("storyboard", panels=3), MIRA, budget=4000, count=estimate_tokens)
    assert built.json_schema == storyboard_schema(3)
    assert (
        built.json_schema["properties"]["panels"]["minItems"]
        == 3
        == built.json_schema["properties"]["panels"]["maxItems"]
    )
    assert "exactly 3 panels" in built.messages[1].content and built.stop == []


def test_the_newest_messages_that_fit_go_in_and_the_fixed_part_must_fit() -> None:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"line {i} " * 20} for i in range(30)]
    small = scene_prompt(scene_job("story", messages=messages), MIRA, budget=600, count=estimate_tokens)
    body = small.messages[1].content
    assert "line 29" in body and "line 10 " not in body and small.prompt_tokens <= 600
    with pytest.raises(ContextTooLarge):
        scene_prompt(scene_job("story"), MIRA, budget=50, count=estimate_tokens)


def test_a_storyboards_default_max_tokens_is_per_panel_and_a_jobs_own_wins() -> None:
    assert (
        scene_sampling(scene_job("storyboard", panels=3, sampling={}), seed=1).max_tokens
        == 3 * STORYBOARD_TOKENS_PER_PANEL
    )
    assert scene_sampling(scene_job("storyboard", sampling={"max_tokens": 99}), seed=1).max_tokens == 99
    assert scene_sampling(scene_job("face", sampling={}), seed=1).max_tokens == 160


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scene": None}, "job.scene"),
        ({"scene": {"mode": "portrait"}}, "job.scene.mode"),
        ({"scene": {"mode": "storyboard", "panels": 1}}, "job.scene.panels"),
        ({"scene": {"mode": "storyboard", "panels": 9}}, "job.scene.panels"),
        ({"scene": {"mode": "storyboard", "panels": "4"}}, "job.scene.panels"),
        ({"scene": {"mode": "face", "panels": 4}}, "job.scene.panels"),
        ({"scene": {"mode": "face", "style": "anime"}}, "job.scene.style"),
        ({"mode": "continue"}, "job.mode"),
        ({"job_type": "chat_roleplay", "messages": CHAT[:1]}, "job.scene"),
        ({"messages": [{"role": "system", "content": "Be brief."}]}, "job.messages"),
    ],
)
def test_bad_scene_options_fail_naming_the_field(change: dict, field: str) -> None:
    raw = {"job_id": "s", "job_type": "chat_scene", "scene": {"mode": "face"}, "messages": CHAT} | change
    with pytest.raises(ValidationError) as caught:
        ChatJob.model_validate(raw)
    assert describe_validation_error(caught.value, "job").startswith(f"{field}:"), caught.value


def test_any_role_may_come_last_in_a_scene_job() -> None:
    for last in ("user", "assistant", "system"):
        messages = [*CHAT, {"role": last, "content": "…"}]
        assert scene_job("story", messages=messages).messages[-1] == Message(role=last, content="…")


def test_the_result_and_the_schema_carry_the_scene() -> None:
    schema = json.dumps(ChatResult.model_json_schema())
    assert '"Storyboard"' in schema and '"ScenePrompt"' in schema
    assert "SceneSettings" in json.dumps(ChatJob.model_json_schema())
    result = ChatResult.model_validate(
        {
            "job_id": "s",
            "content": "x",
            "finish_reason": "stop",
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "attempts": 1,
            "returned_attempt": 1,
            "scene": {"panels": [{"prompt": "a, b, c", "caption": "c"}]},
        }
    )
    assert isinstance(result.scene, Storyboard)
    assert isinstance(ChatResult.model_validate(result.model_dump() | {"scene": {"prompt": "a"}}).scene, ScenePrompt)


def test_a_cards_extensions_carry_the_image_prompt_prefix() -> None:
    for card_format in ("v2-json", "v3-json"):
        data = export_card(MIRA, card_format)
        assert json.loads(data)["data"]["extensions"]["chat_worker"]["image_prompt_prefix"] == MIRA.image_prompt_prefix
        assert parse_card(data).character.image_prompt_prefix == MIRA.image_prompt_prefix
