"""The character profile model. Minimal for now; the characters issue grows it to the card fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoreEntry(BaseModel):
    keys: list[str] = []
    content: str = ""
    enabled: bool = True
    insertion_order: int = 0
    case_sensitive: bool | None = None
    name: str = ""
    priority: int | None = None
    id: int | str | None = None
    comment: str = ""
    selective: bool = False
    secondary_keys: list[str] = []
    constant: bool = False
    position: Literal["before_char", "after_char"] | str = "before_char"


class CharacterBook(BaseModel):
    name: str = ""
    scan_depth: int | None = None
    token_budget: int | None = None
    entries: list[LoreEntry] = []


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    nickname: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    character_book: CharacterBook | None = None
