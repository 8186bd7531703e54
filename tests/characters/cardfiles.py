"""Small cards made on the spot (the project commits no binaries), and the real ones beside the checkout."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.helpers import SHARED

REAL_CARDS = SHARED / "cards"  # <checkout>/../shared/cards: read in place, never copied into the repo


def b64_json(card: object) -> str:
    return base64.b64encode(json.dumps(card).encode("utf-8")).decode("ascii")


def png(text_chunks: dict[str, str], size: tuple[int, int] = (4, 6), color: str = "teal") -> bytes:
    """A PNG with these tEXt chunks, values written as given (so a test can write a broken one)."""
    info = PngInfo()
    for key, value in text_chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def png_card(**cards: object) -> bytes:
    """A PNG card: png_card(chara=<card object>, ccv3=<card object>)."""
    return png({key: b64_json(card) for key, card in cards.items()})


def json_card(card: object) -> bytes:
    return json.dumps(card).encode("utf-8")


def v1(name: str = "Orrin", **fields: str) -> dict[str, Any]:
    card = dict.fromkeys(("description", "personality", "scenario", "first_mes", "mes_example"), "")
    return {"name": name, **card, **fields}


def v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def v3(data: dict[str, Any]) -> dict[str, Any]:
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def full_v2_data(name: str = "Orrin") -> dict[str, Any]:
    """Every V2 field, a book with one entry, and extensions nobody here knows."""
    return {
        "name": name,
        "description": "{{char}} keeps the lighthouse.\n<START>\n{{user}}: Hi\n{{char}}: Evening.",
        "personality": "patient, dry",
        "scenario": "A gale; {{user}} knocks.",
        "first_mes": "*{{char}} opens the door.* Come in, {{user}}.",
        "mes_example": "<START>\n{{user}}: Lamp?\n{{char}}: Lit.",
        "creator_notes": "For storms.",
        "system_prompt": "{{original}} Keep it short.",
        "post_history_instructions": "Stay as <BOT>.",
        "alternate_greetings": ["Back again, {{user}}?", "*silence*"],
        "character_book": {
            "name": "Coast",
            "scan_depth": 3,
            "token_budget": 200,
            "recursive_scanning": False,
            "extensions": {"sillytavern": {"x": 1}},
            "entries": [
                {
                    "keys": ["lamp", "light"],
                    "content": "The lamp is older than the tower.",
                    "extensions": {"position": 0, "probability": None},
                    "enabled": True,
                    "insertion_order": 5,
                    "case_sensitive": False,
                    "constant": True,
                    "selective": True,
                    "secondary_keys": ["oil"],
                    "position": "after_char",
                    "id": 7,
                    "comment": "lore",
                    "priority": 2,
                    "name": "lamp",
                }
            ],
        },
        "tags": ["sea", "calm"],
        "creator": "tests",
        "character_version": "2.1",
        "extensions": {"depth_prompt": {"prompt": "Salt.", "depth": 4, "role": "system"}, "someapp": {"a": [1, None]}},
    }
