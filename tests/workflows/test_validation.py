from hypothesis import given
from hypothesis import strategies as st

from workflows.validation import MIN_CHARS, is_repetitive, trimmed_to_sentence, validate_reply


def check(raw: str, finish: str = "stop", roleplay: bool = True):  # type: ignore[no-untyped-def]
    return validate_reply(raw, finish, user_name="Tam", char_name="Mira", roleplay=roleplay)


def test_a_good_reply_passes_unchanged() -> None:
    reply = '*wipes the bar* "Rooms? One left, and it leaks." She grins.'
    verdict = check(reply)
    assert verdict.ok and verdict.content == reply


def test_too_short() -> None:
    assert check("Hm.").reasons == ["too_short"]
    assert check("   ").reasons == ["too_short"]


def test_own_speaker_label_is_stripped() -> None:
    assert check("Mira: Welcome in, stranger, and shut that door.").content.startswith("Welcome in")
    assert check("**Mira:** Welcome in, stranger.").content == "Welcome in, stranger."


def test_reply_is_cut_where_it_starts_speaking_for_the_user() -> None:
    verdict = check("Sit by the fire, love.\nTam: Thanks, I will.\nMira: Good.")
    assert verdict.ok and verdict.content == "Sit by the fire, love."
    assert check("Sit by the fire, you look frozen.\nUser: ok").content == "Sit by the fire, you look frozen."


def test_speaking_only_for_the_user_leaves_nothing() -> None:
    assert check("Tam: I sit down and order ale.").reasons == ["too_short"]


def test_cut_off_reply_is_trimmed_to_its_last_sentence() -> None:
    verdict = check('She laughs. "You again?" Then she reaches for the', finish="length")
    assert verdict.ok and verdict.content == 'She laughs. "You again?"'


def test_cut_off_reply_without_a_sentence_end_is_rejected() -> None:
    assert "cut_off" in check("She laughs and reaches for the bottle behind", finish="length").reasons


def test_repetitive() -> None:
    assert "repetitive" in check("I love the sea. I love the sea. I love the sea. Truly.").reasons
    assert "repetitive" in check(" ".join(["the waves crash on the rocks"] * 8)).reasons
    assert not is_repetitive("The storm rolls in over the harbour while gulls scream and the lanterns sway.")


def test_out_of_character_only_matters_in_roleplay() -> None:
    text = "As an AI language model, I cannot pour you a drink."
    assert "out_of_character" in check(text).reasons
    assert "out_of_character" not in check(text, roleplay=False).reasons


def test_trimmed_to_sentence() -> None:
    assert trimmed_to_sentence("One. Two! Three") == "One. Two!"
    assert trimmed_to_sentence("no end at all") is None


@given(st.text(max_size=300), st.sampled_from(["stop", "length"]))
def test_any_text_gets_a_verdict_whose_content_comes_from_it(raw: str, finish: str) -> None:
    verdict = check(raw, finish)
    assert verdict.content in raw or verdict.content in raw.strip()
    assert set(verdict.reasons) <= {"too_short", "cut_off", "repetitive", "out_of_character"}
    if len(verdict.content) < MIN_CHARS:
        assert "too_short" in verdict.reasons
