"""The character profile: the original worker's fields plus everything a Character Card (V1/V2/V3) carries.

Every field has a default, so `{"name": "Orrin"}` is a whole profile. Text is kept as written: macros such
as `{{char}}` are filled where a prompt is built (`characters.macros`), not here. A profile is plain JSON,
so a job can carry one inline."""

from __future__ import annotations

from pydantic import Field, JsonValue, field_validator

from characters.base import StrictModel
from characters.scenarios import SCENARIO_TYPES


class BookEntry(StrictModel):
    """One `character_book` entry (lorebook); optional spec fields stay None when the card leaves them out."""

    keys: list[str] = []
    content: str = ""
    extensions: dict[str, JsonValue] = {}
    enabled: bool = True
    insertion_order: int | float = 100
    case_sensitive: bool | None = None
    use_regex: bool = False
    constant: bool = False
    selective: bool = False
    secondary_keys: list[str] = []
    position: str = "before_char"
    name: str | None = None
    priority: int | float | None = None
    id: int | str | None = None
    comment: str | None = None


class CharacterBook(StrictModel):
    name: str | None = None
    description: str | None = None
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive_scanning: bool | None = None
    extensions: dict[str, JsonValue] = {}
    entries: list[BookEntry] = []


# The original worker's own fields; no card has them, so a card export carries them in this extension.
OWN_FIELDS = ("appearance", "background", "speaking_style", "scenarios", "voice", "image_prompt_prefix")
OWN_EXTENSION = "chat_worker"


class Character(StrictModel):
    """Fields marked "worker" are the original worker's profile, V3 ones come from Character Card V3, the rest
    from Character Card V2 (`personality` and `scenario` are in both the worker's profile and the cards)."""

    name: str = Field(min_length=1, max_length=100)
    nickname: str = ""  # V3: fills {{char}} in place of the name when set
    description: str = ""
    personality: str = ""
    appearance: str = ""  # worker
    background: str = ""  # worker
    speaking_style: str = ""  # worker
    scenario: str = ""  # the character's own setting: the scene when a job names none
    scenarios: list[str] = []  # worker: the scenario types this character is written for
    # worker: comma-separated keywords put first in every chat_scene prompt that shows the character (a style, a
    # LoRA trigger word), kept as written.
    image_prompt_prefix: str = Field(default="", max_length=500)
    first_mes: str = ""
    alternate_greetings: list[str] = []
    group_only_greetings: list[str] = []  # V3: greetings for group chats only
    # Group chats (SillyTavern's): how likely the character speaks unmentioned, 0 only when mentioned. Cards
    # carry it in `extensions.talkativeness`.
    talkativeness: float = Field(default=0.5, ge=0, le=1)
    # worker: the voice the platform's voice worker speaks the character's replies in (its own voice id; "": its
    # default). No card spec has one (SillyTavern keeps its voice map in its TTS settings, by character name).
    voice: str = Field(default="", max_length=200)
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    character_book: CharacterBook | None = None
    creator_notes: str = ""  # for people choosing a character; never in a prompt
    creator_notes_multilingual: dict[str, str] | None = None  # V3
    tags: list[str] = []
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, JsonValue] = {}
    # V3, kept so that an export gives them back.
    assets: list[dict[str, JsonValue]] | None = None
    source: list[str] | None = None
    creation_date: int | float | None = None
    modification_date: int | float | None = None

    @field_validator("name")
    @classmethod
    def _name_is_trimmed(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be blank")
        return name.strip()

    @field_validator("scenarios")
    @classmethod
    def _scenarios_are_known_types(cls, scenarios: list[str]) -> list[str]:
        names = [s.strip().lower() for s in scenarios]
        unknown = [s for s in names if s not in SCENARIO_TYPES]
        if unknown:
            raise ValueError(f"unknown scenario type {unknown[0]!r}; known: {', '.join(SCENARIO_TYPES)}")
        return names

    @property
    def char_name(self) -> str:
        """What `{{char}}` stands for: the nickname when there is one, else the name."""
        return self.nickname.strip() or self.name
