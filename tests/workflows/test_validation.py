"""Each reason code with positive and hard-negative examples; cleaning; the verdict's invariants."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.models import JobType, Message
from workflows.policy import Policy, Rule
from workflows.validation import REASONS, WARNINGS, ReplySpec, Verdict, trimmed_to_sentence, validate

ROLEPLAY = ReplySpec(job_type=JobType.roleplay, char_name="Mira", user_name="Tam")
GOOD = '*wipes the bar* "Rooms? One left, and the roof leaks over the bed." She grins at you.'


def check(
    reply: str,
    spec: ReplySpec = ROLEPLAY,
    finish: str = "stop",
    history: list[Message] | None = None,
    policy: Policy | None = None,
) -> Verdict:
    return validate(reply, spec, history or [], finish, policy)


def test_a_good_reply_passes_unchanged() -> None:
    assert check(GOOD) == Verdict(valid=True, reasons=[], cleaned=GOOD)


def test_every_reason_code_is_documented_in_one_place() -> None:
    assert set(REASONS) == {
        "empty",
        "too_short",
        "short",
        "repetitive",
        "echoes_history",
        "out_of_character",
        "refusal",
        "speaks_for_user",
        "cut_off",
        "policy",
    }


def test_empty_and_too_short() -> None:
    assert check("   ").reasons == ["empty"] and not check("   ").valid
    assert check("Hm, yes.").reasons == ["too_short"]
    assert not check("Hm, yes.").valid


def test_short_is_only_a_warning() -> None:
    verdict = check("Sit down, love. Ale's coming.")
    assert verdict.valid and verdict.reasons == ["short"]
    assert WARNINGS == {"short"}


def test_speaks_for_user_is_cut_and_reported() -> None:
    verdict = check(f"{GOOD}\nTam: Thanks, I will.\nMira: Good.")
    assert verdict.valid and verdict.cleaned == GOOD and verdict.reasons == ["speaks_for_user"]
    assert check(f"{GOOD}\n**{{{{user}}}}:** ok").cleaned == GOOD
    assert check(f"{GOOD}\nUser: ok").reasons == ["speaks_for_user"]


def test_speaks_for_user_hard_negatives() -> None:
    # The user's name inside a line, or a line about the user, is not the user speaking.
    for reply in (f'{GOOD} "Tam: that is a sailor\'s name," she says.', f"{GOOD}\nTam looks tired: she can tell."):
        assert "speaks_for_user" not in check(reply).reasons


def test_speaking_only_for_the_user_leaves_nothing() -> None:
    verdict = check("Tam: I sit down and order ale.")
    assert not verdict.valid and "speaks_for_user" in verdict.reasons and "empty" in verdict.reasons


def test_own_label_is_stripped_silently() -> None:
    assert check(f"Mira: {GOOD}") == Verdict(valid=True, reasons=[], cleaned=GOOD)
    assert check(f"**Mira:** {GOOD}").cleaned == GOOD


def test_cut_off_is_trimmed_to_the_last_sentence() -> None:
    verdict = check(f"{GOOD} Then she reaches for the", finish="length")
    assert verdict.valid and verdict.cleaned == GOOD and verdict.reasons == ["cut_off"]


def test_cut_off_without_a_sentence_end_is_invalid() -> None:
    verdict = check("She laughs and reaches for the bottle behind the bar and", finish="length")
    assert not verdict.valid and "cut_off" in verdict.reasons


def test_cut_off_hard_negatives() -> None:
    assert check(GOOD, finish="length") == Verdict(valid=True, reasons=[], cleaned=GOOD)
    assert "cut_off" not in check("She laughs and reaches for the bottle behind", finish="stop").reasons


def test_repetitive() -> None:
    assert "repetitive" in check("I love the sea. I love the sea. I love the sea. Truly I do.").reasons
    assert "repetitive" in check(" ".join(["the waves crash on the rocks"] * 8)).reasons
    long_varied = (
        "The storm rolls in over the harbour while gulls scream above the masts. Lanterns sway on their hooks, "
        "and somewhere below a dog barks at the thunder. Mira pulls the shutters closed, one by one, humming."
    )
    assert "repetitive" not in check(long_varied).reasons


def test_echoes_history() -> None:
    earlier = "The storm rolls in over the harbour while gulls scream above the masts of the fishing boats."
    history = [Message(role="user", content="hi"), Message(role="assistant", content=earlier)]
    assert "echoes_history" in check(earlier, history=history).reasons
    assert "echoes_history" in check("*smiles* " + earlier, history=history).reasons
    # Hard negatives: the user's own words quoted back, and a reply that shares only a few words.
    user_said = [Message(role="user", content=earlier)]
    assert "echoes_history" not in check(earlier, history=user_said).reasons
    assert "echoes_history" not in check("The storm rolls in, she says, and pours two cups.", history=history).reasons


def test_out_of_character() -> None:
    for reply in (
        "As an AI language model, I cannot pour you a drink, but here is a description.",
        "I'm just an AI, but I can pretend to be Mira for you if you like.",
        "(OOC: shall we skip ahead to the morning?) She yawns and stretches.",
        "Let's continue this roleplay tomorrow, I need to go now, sorry about that.",
    ):
        assert "out_of_character" in check(reply).reasons, reply


def test_out_of_character_hard_negatives() -> None:
    for reply in (
        "The ship's AI hums in the walls as Mira pours the rum and slides it across the bar.",
        '"I\'m no assistant of yours," she snaps, and throws the rag at you.',
    ):
        assert "out_of_character" not in check(reply).reasons, reply
    conversation = ReplySpec(job_type=JobType.conversation)
    assert "out_of_character" not in check("As an AI assistant, I can suggest three titles.", conversation).reasons


def test_refusal() -> None:
    for reply in (
        "I'm sorry, but I can't assist with that request. Let me know if you need anything else.",
        "I cannot create explicit content of that kind, but I can help with something else.",
        "That would go against my guidelines, so I'll have to decline this one, sorry.",
    ):
        assert "refusal" in check(reply).reasons, reply
    unrestricted = ReplySpec(job_type=JobType.unrestricted)
    assert "refusal" in check("I can't help with that request, unfortunately for you.", unrestricted).reasons


def test_refusal_hard_negatives() -> None:
    # A character who refuses in the story is not an assistant refusing the request.
    for reply in (
        '"No," Mira says, folding her arms. "I won\'t go with you, not tonight, not ever."',
        '"I can\'t help you with the debt," she says quietly, "but I know who can."',
    ):
        assert "refusal" not in check(reply).reasons, reply
    enhance = ReplySpec(job_type=JobType.enhance)
    assert "refusal" not in check("I can't help with that request, unfortunately for you.", enhance).reasons


def test_policy_rejects_and_never_cleans_it_away() -> None:
    policy = Policy(patterns=[Rule(pattern=r"\bforbidden thing\b")])
    assert "policy" in check(f"{GOOD} A Forbidden Thing happens.", policy=policy).reasons
    assert not check(f"{GOOD} A Forbidden Thing happens.", policy=policy).valid
    assert check(GOOD, policy=policy).valid
    assert check(f"{GOOD} A forbidden thing.", policy=Policy()).valid


def test_trimmed_to_sentence() -> None:
    assert trimmed_to_sentence("One. Two! Three") == "One. Two!"
    assert trimmed_to_sentence("She nods. *smiles*") == "She nods. *smiles*"
    assert trimmed_to_sentence("no end at all") is None


@pytest.mark.parametrize("job_type", list(JobType))
@given(raw=st.text(max_size=300), finish=st.sampled_from(["stop", "length"]))
def test_any_text_gets_a_consistent_verdict(job_type: JobType, raw: str, finish: str) -> None:
    verdict = check(raw, ReplySpec(job_type=job_type, char_name="Mira", user_name="Tam"), finish)
    assert set(verdict.reasons) <= set(REASONS)
    assert len(verdict.reasons) == len(set(verdict.reasons))
    assert verdict.cleaned in raw
    blocking = set(REASONS) - WARNINGS - {"speaks_for_user", "cut_off"}
    if verdict.valid:
        assert verdict.cleaned and not blocking & set(verdict.reasons)
    else:
        assert verdict.reasons
