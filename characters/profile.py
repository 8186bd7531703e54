"""The character profile model. Minimal for now; the characters issue grows it to the card fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    personality: str = ""
    scenario: str = ""
