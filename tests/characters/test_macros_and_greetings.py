"""The macro function the pipeline calls, and greetings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from characters import Character, NoSuchGreeting, fill_macros, greeting

SERA = Character(
    name="Seraphina",
    nickname="Sera",
    first_mes="*{{char}} smiles at {{user}}.*",
    alternate_greetings=["<BOT> waves to <USER>.", "{{Char}} and {{USER}}, at dawn."],
)


def test_macros_are_filled_in_any_case_old_and_new_forms() -> None:
    text = "{{char}} greets {{User}}. <BOT> winks at <user>. {{CHAR}} <Char> <bot> {{uSeR}}"
    assert fill_macros(text, char="Mira", user="Tam") == "Mira greets Tam. Mira winks at Tam. Mira Mira Mira Tam"


def test_char_is_the_nickname_when_there_is_one_else_the_name() -> None:
    assert fill_macros("{{char}} / <BOT>", char=SERA, user="Tam") == "Sera / Sera"
    assert fill_macros("{{char}}", char=Character(name="Seraphina"), user="Tam") == "Seraphina"
    assert fill_macros("{{char}}", char=Character(name="Seraphina", nickname="  "), user="Tam") == "Seraphina"


def test_names_go_in_literally_and_are_not_filled_again() -> None:
    assert fill_macros("{{user}}", char="x", user=r"A\1 \g<0>") == r"A\1 \g<0>"
    assert fill_macros("{{char}} and {{user}}", char="{{user}}", user="<BOT>") == "{{user}} and <BOT>"


def test_what_is_not_a_macro_is_left_alone() -> None:
    text = "{{original}} <CHR> {{random:a,b}} <START> {char} {{ char }}"
    assert fill_macros(text, char="Mira", user="Tam") == text


_names = st.text(st.characters(blacklist_characters="{}<>"), min_size=1, max_size=20)
_MACRO = re.compile(r"\{\{(char|user)\}\}|<(bot|char|user)>", re.IGNORECASE)


@given(
    st.lists(st.sampled_from(["{{char}}", "{{USER}}", "<Bot>", "<user>", "<CHAR>", "plain ", "{", ">"])), _names, _names
)
def test_no_macro_is_left_and_filling_twice_changes_nothing(parts: list[str], char: str, user: str) -> None:
    filled = fill_macros("".join(parts), char=char, user=user)
    assert not _MACRO.search(filled)
    assert fill_macros(filled, char=char, user=user) == filled
    assert filled.count(char) >= sum(p.lower() in ("{{char}}", "<bot>", "<char>") for p in parts)


def test_the_greeting_is_first_mes_with_macros_filled() -> None:
    assert greeting(SERA, "Tam") == "*Sera smiles at Tam.*"
    assert greeting(Character(name="Quiet"), "Tam") == ""


def test_alternate_greetings_by_index() -> None:
    assert greeting(SERA, "Tam", 0) == "Sera waves to Tam."
    assert greeting(SERA, "Tam", 1) == "Sera and Tam, at dawn."


@pytest.mark.parametrize("index", [2, -1, 99])
def test_an_out_of_range_greeting_says_which_exist(index: int) -> None:
    with pytest.raises(
        NoSuchGreeting, match=rf"Seraphina has no alternate greeting {index}; it has alternate greetings 0-1"
    ):
        greeting(SERA, "Tam", index)


def test_a_character_without_alternates_says_so() -> None:
    with pytest.raises(NoSuchGreeting, match="it has no alternate greetings"):
        greeting(Character(name="Quiet", first_mes="Hi"), "Tam", 0)
