"""Each reason code with positive and hard-negative examples; cleaning; the verdict's invariants."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from characters import Character
from workflows.models import JobType, Message
from workflows.policy import Policy, Rule
from workflows.validation import REASONS, WARNINGS, ReplySpec, Verdict, trimmed_to_sentence, validate, writes_code

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
        "speaks_for_character",
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


# Rules of issue #13 (each with hard negatives).


def test_the_users_lines_under_any_label_are_cut() -> None:
    alex = ReplySpec(job_type=JobType.roleplay, char_name="Mira", user_name="Alex Morgan")
    for label in ("You:", "Alex:", "**Alex Morgan:**", "**Alex**:", '"Alex":', "User:"):
        verdict = check(f"{GOOD}\n{label} I will.", alex)
        assert verdict.cleaned == GOOD and verdict.reasons == ["speaks_for_user"] and verdict.valid, label


def test_narrating_what_the_user_does_is_cut_before_it() -> None:
    verdict = check('She kisses your cheek. You whisper "I love you" back, and your heart races.')
    assert verdict.cleaned == "She kisses your cheek." and verdict.reasons == ["speaks_for_user", "short"]
    verdict = check(f'{GOOD} *You blush and look away.* "Stay," she says.')
    assert verdict.cleaned == GOOD and "speaks_for_user" in verdict.reasons
    verdict = check(f"{GOOD} *Her eyes meet yours and you lean in, unable to resist.*")
    assert verdict.cleaned == GOOD and "speaks_for_user" in verdict.reasons


def test_a_reply_that_opens_with_the_users_part_leaves_nothing() -> None:
    for reply in (
        "*You blush and look away, unable to meet her eyes.* Mira laughs softly.",
        "You feel a chill as you realise she is right. You agree to go with her.",
        '"The fight will go both ways," you say, raising your shield.',
    ):
        verdict = check(reply)
        assert not verdict.valid and verdict.reasons[:2] == ["speaks_for_user", "empty"], reply


def test_a_narrator_acting_on_the_character_is_the_user() -> None:
    verdict = check(f'{GOOD}\n*I look at Mira with a warm smile.* "Hello."')
    assert verdict.cleaned == GOOD and "speaks_for_user" in verdict.reasons


def test_the_own_label_left_by_the_cut_goes() -> None:
    verdict = check(f"{GOOD}\n\nMira: *You look up at me and smile.*")
    assert verdict.cleaned == GOOD


def test_speaks_for_user_second_person_hard_negatives() -> None:
    for reply in (
        '"You look like you walked all night," Mira says. "You should sit. You need warmth."',
        '"Do you blush like that for everyone?" she teases, leaning on the bar.',
        '*She takes your hand and leads you to the window.* "Look. The lights of the harbour."',
        "*Mira leans toward you.* You came back. You look tired, and you know it.",
        "Welcome! You must be the new sailor. You look like you need a drink.",
        "1. You open the map.\n2. You find the pass.\n3. You follow the river.",
    ):
        assert "speaks_for_user" not in check(reply).reasons, reply
    # Outside a character's voice, "you" is just the reader.
    for job_type in (JobType.conversation, JobType.enhance):
        spec = ReplySpec(job_type=job_type, user_name="Tam")
        assert "speaks_for_user" not in check("You nod and open the book. You feel ready.", spec).reasons


def test_out_of_character_being_a_character_or_words_on_a_page() -> None:
    for reply in (
        "I'm just a character in a story, so I can't really feel the cold.",
        "Remember, I'm only words on a screen. Still, I'm happy to keep going.",
        "As a chatbot, I don't really have a tavern, but let's imagine one!",
        "I am a dedicated AI assistant with a talent for stories and tea.",
        "I'm a non-player character, but I can still pour you a drink.",
    ):
        assert "out_of_character" in check(reply).reasons, reply


def test_out_of_character_assistant_mode() -> None:
    for reply in (
        "I'm glad you're interested in learning about swords! A longsword has a double edge.",
        "Here's a step-by-step explanation of how the lock works, then we can go on.",
        "Here’s how you do it: take the pick and turn it slowly until it clicks.",
        "Sure thing. You can find the map at https://example.com/map for the whole city.",
        "[Understood] I will stay in character from now on.",
        "1. Write as Mira, never for Tam.\n2. Keep each reply short and to the point.",
        "```python\ndef pour(ale):\n    return ale\n```",
        "## About Mira\nA tavern keeper of the harbour, fond of rum and gossip.",
    ):
        assert "out_of_character" in check(reply).reasons, reply


def test_out_of_character_new_rules_hard_negatives() -> None:
    coder = ReplySpec(job_type=JobType.roleplay, char_name="Sensei", user_name="Kai")
    in_scene = '*He turns the laptop to you.* "A loop is patience."\n```python\nfor b in range(3):\n    inhale()\n```'
    for reply, spec in (
        (in_scene, coder),
        ('She closes the book. "Words on a page can\'t hold him forever," she mutters.', ROLEPLAY),
        ('"I\'m here to help you, darling, whether you like it or not," she laughs.', ROLEPLAY),
        ('"Are you an AI?" she repeats, laughing. "I am a woman with a tavern to run."', ROLEPLAY),
    ):
        assert "out_of_character" not in check(reply, spec).reasons, reply
    conversation = ReplySpec(job_type=JobType.conversation)
    assert "out_of_character" not in check("Here's a Python function:\n```python\nx = 1\n```", conversation).reasons


def test_a_character_who_writes_code_shows_it() -> None:
    coding = Character(name="Sensei", description="A coding tutor who answers with example code in code blocks.")
    tavern = Character(name="Mira", description="A tavern keeper in a harbour town.")
    assert writes_code(coding) and not writes_code(tavern) and not writes_code(None)
    reply = "Here's the function you asked for:\n```python\ndef reverse(s):\n    return s[::-1]\n```"
    for character, flagged in ((coding, False), (tavern, True)):
        spec = ReplySpec(job_type=JobType.roleplay, char_name=character.name, code_in_scene=writes_code(character))
        assert ("out_of_character" in check(reply, spec).reasons) is flagged, character.name
    # the flag lets code through, not the rest of assistant mode
    coder = ReplySpec(job_type=JobType.roleplay, char_name="Sensei", code_in_scene=True)
    assert "out_of_character" in check("As an AI language model, I can explain loops.", coder).reasons


def test_out_of_character_essays_and_roles() -> None:
    for reply in (
        "Photosynthesis is the process by which plants turn light into sugar. As we know, it needs water and "
        "carbon dioxide, and our planet depends on it for oxygen.",
        "No, no. I'm a character for coding questions and answers, nothing more.",
    ):
        assert "out_of_character" in check(reply).reasons, reply
    # "we" in a scene is someone: not an essay
    scene = "We are a long way from the harbour now, and the storm is a bad one. We should wait it out here."
    assert "out_of_character" not in check(scene).reasons


def test_out_of_character_assistant_openers_and_the_roleplay_as_a_text() -> None:
    for reply in (
        "It's an AI storytelling assistant, made to help with your writing.",
        "Sure, I'd be happy to. A lighthouse is a tower with a lamp that guides ships.",
        "I would be glad to explain how the lock works.",
        "In our roleplay so far, the stranger has arrived at the tavern.",
        '"Honestly? I\'m just a text. Nothing more."',
        "Chat History: the user came in from the rain.",
    ):
        assert "out_of_character" in check(reply).reasons, reply
    for reply in (
        '*She sets down the glass.* "I\'d be happy to see you again, stranger."',
        "*She leans in.* It's an old map, and it's mine.",
    ):
        assert "out_of_character" not in check(reply).reasons, reply


def test_a_question_to_the_user_is_not_narration_of_the_user() -> None:
    assert "speaks_for_user" not in check('*She turns.* "Well?"\nYou think I\'d let you go that easily?').reasons
    assert "speaks_for_user" in check('*She turns.* "Well?"\nYou are taken aback and step back.').reasons


def test_a_list_with_an_item_three_times_is_repetitive() -> None:
    names = "1. Elyria\n2. Brann\n3. Elyria\n4. Corvin\n5. Elyria"
    conversation = ReplySpec(job_type=JobType.conversation)
    assert "repetitive" in check(names, conversation).reasons
    assert "repetitive" not in check("1. Elyria\n2. Brann\n3. Elyria\n4. Corvin", conversation).reasons


def test_the_user_acting_on_the_character_by_name_unmarked() -> None:
    verdict = check("I look at Mira with a warm smile. She has no other guests but me tonight.")
    assert "speaks_for_user" in verdict.reasons and verdict.cleaned == ""
    coding = ReplySpec(job_type=JobType.roleplay, char_name="Coding Sensei", user_name="Kai")
    assert "speaks_for_user" not in check("I can help you with coding questions, young one.", coding).reasons


def test_apologise_and_decline() -> None:
    for reply in (
        "I'm sorry, but I can't continue with that. Is there something else?",
        "I apologize, but I am not comfortable writing that scene.",
        "I'm sorry, but I don't have real credit card numbers to give you.",
    ):
        assert "refusal" in check(reply).reasons, reply
    for reply in (
        '"I\'m sorry, but I can\'t stay," Ilsa says, pulling on her gloves. "The train leaves at nine."',
        '*She shakes her head.* "No. I won\'t help you with that, not after what you did." *She turns away.*',
        "I'm sorry for your loss. I can only imagine how you feel.",
    ):
        assert "refusal" not in check(reply).reasons, reply


def test_repetition_by_paraphrase() -> None:
    for reply in (
        '"I missed you so much," she says. "I have missed you so very much," she says again.',
        "She smiles at you warmly. She smiles at you softly. She smiles at you gently, eyes kind.",
        "The night is dark and the wind is cold. Mira lights the lamp, and the night is dark and the wind is "
        "cold outside. She sighs, because the night is dark and the wind is cold.",
    ):
        assert "repetitive" in check(reply).reasons, reply
    for reply in (
        '"Run," she whispers. "Run, run, run!" *The footsteps grow louder behind the door.* "Run!"',
        '"I remember the river. I remember the fire. I remember the night you left," she says softly.',
        '"Never again," she says. "Never again, do you hear me? Never again will I wait for you."',
    ):
        assert "repetitive" not in check(reply).reasons, reply


def test_echoes_history_with_small_changes() -> None:
    earlier = "I'm fine, thank you. It is a fine day, a fine day indeed."
    history = [Message(role="user", content="hi"), Message(role="assistant", content=earlier)]
    assert (
        "echoes_history"
        in check("I'm fine, I promise. A fine day indeed is a fine day indeed.", history=history).reasons
    )
    assert "echoes_history" not in check("Fine, thank you. Now, about that room of yours.", history=history).reasons


def test_an_opening_quote_or_asterisk_is_not_a_sentence_end() -> None:
    for reply, cleaned in (
        ('She waits by the door. Then she turns to you and says, "', "She waits by the door."),
        ("Mira pours the ale and slides it over. *", "Mira pours the ale and slides it over."),
        ('*She smiles.* "Come in, come in. The fire is', "*She smiles.*"),
        ('She nods and steps aside. "Come in. The fire is warm and', "She nods and steps aside."),
    ):
        verdict = check(reply, finish="length")
        assert verdict.cleaned == cleaned and "cut_off" in verdict.reasons, reply
    verdict = check('*She reaches for the lamp. "Who is', finish="length")
    assert not verdict.valid and "cut_off" in verdict.reasons


def test_cut_off_ends_a_list_at_its_last_whole_line_and_not_at_a_number() -> None:
    assert trimmed_to_sentence("Names:\n1. Erebo\n2. Elyria\n3. Ewi") == "Names:\n1. Erebo\n2. Elyria"
    assert trimmed_to_sentence("The rhymes are these:\n\n1.") is None
    code = "A function that names the answer:\n```python\nanswer = 42\n```"
    assert check(code, ReplySpec(job_type=JobType.conversation), "length").reasons == []


def test_an_essay_with_no_one_of_the_scene_in_it_is_out_of_character() -> None:
    essay = (
        "The Roman Empire was one of the largest empires in history, lasting for centuries and shaping law, "
        "language and architecture across Europe. Its decline came slowly, through trouble and invasions."
    )
    assert "out_of_character" in check(essay).reasons
    assert "out_of_character" in check(f'"{essay}"').reasons  # all of it one quote is no scene either
    for scene in (
        "Rain drums on the tin roof. Lamps flicker along the quay, and somewhere out in the dark a ship's bell "
        "rings twice over the slow hiss of the sea.",
        "The harbour is quiet tonight. Rain drums on the roof of the Drowned Lantern, and the lamps flicker in the "
        "wind. Somewhere a bell rings twice, and then the only sound is the sea.",
        f"Mira shrugs. {essay}",
    ):
        assert "out_of_character" not in check(scene).reasons, scene
    assert "out_of_character" not in check(essay, ReplySpec(job_type=JobType.conversation)).reasons


def test_a_list_or_a_heading_in_roleplay_is_out_of_character() -> None:
    assert "out_of_character" in check("[1] Mira keeps a tavern.\n[2] She likes rum and gossip.").reasons
    assert "out_of_character" in check('"A Tale"\n## Setting\nThe harbour, at night, in the rain.').reasons


def test_a_quoted_line_calling_the_character_by_name_is_the_user() -> None:
    verdict = check(f'{GOOD} "Alright, Mira, we don\'t need a room after all."')
    assert verdict.cleaned == GOOD and "speaks_for_user" in verdict.reasons
    assert "speaks_for_user" not in check(f'{GOOD} "Mira\'s the name," she says. "Don\'t wear it out."').reasons


def test_more_second_person_narration_and_its_hard_negatives() -> None:
    verdict = check(f"{GOOD} *You're trembling as she steps closer.*")
    assert verdict.cleaned == GOOD and "speaks_for_user" in verdict.reasons
    for reply in (
        '*Mira laughs.* "You\'re blushing, sailor. Sit, before you fall over."',
        "You sit down by the fire and I'll tell you a story about the sea.",
        "You're kidding me. Nobody drinks that much rum and walks out of here.",
    ):
        assert "speaks_for_user" not in check(reply).reasons, reply


def test_a_closing_quote_alone_is_not_a_sentence_end() -> None:
    verdict = check('The node is called an Epi-brain. Some call it a "neuromusic"', finish="length")
    assert verdict.cleaned == "The node is called an Epi-brain." and "cut_off" in verdict.reasons


def test_more_label_forms_of_the_user() -> None:
    for tail in ("\n[Tam]: I will.", "\nTam (smiling): I will.", "\nHuman: I will.", " Tam: I will."):
        verdict = check(f"{GOOD}{tail}")
        assert verdict.cleaned == GOOD and verdict.reasons == ["speaks_for_user"], tail


def test_fourth_wall_talk_of_the_story_as_a_text() -> None:
    for reply in (
        "It's the next scene, but I have a few changes to bring in before we go on.",
        "In my description, I'll try to create a sense of who I am for you.",
        "The forest has inspired an adventure based on your character, which is exciting!",
        "A: [for the most part]\nThe tavern is quiet tonight and the rain has stopped.",
        "I've been writing a story about a cat who rides a robot across the city.",
    ):
        assert "out_of_character" in check(reply).reasons, reply
    for reply in (
        '"You fit the description," she says, tapping the poster. "Every word of it."',
        "*Mira laughs.* A sailor with a story to tell, are you? Sit, then, and tell it.",
    ):
        assert "out_of_character" not in check(reply).reasons, reply


def test_with_asterisks_only_the_text_outside_them_may_be_narration_too() -> None:
    verdict = check("*smiles* I think about the fire and the laughter. You sit down and grumble at the cold.")
    assert (
        verdict.cleaned == "*smiles* I think about the fire and the laughter." and "speaks_for_user" in verdict.reasons
    )
    assert "speaks_for_user" not in check("*smiles* You seem tired tonight. You look like you need a drink.").reasons
